//! Every open account, kept compact: about 18 bytes per account where a `BTreeMap<AccountId,
//! Account>` took 64 (measured with a million accounts: 63.6 MB of B-tree nodes, the largest
//! part of a branch's memory).
//!
//! Accounts are held in id order in *chunks* of at most [`CHUNK_ACCOUNTS_MAX`], each a column
//! per field: ids (`u64`), balances (`i64`) and, for the limits, a one-byte index into the
//! chunk's own *palette* of the distinct `(balance_min, balance_max)` pairs it holds. Accounts
//! nearly always share their limits (every account a customer opens without options has the
//! same), so the limits cost one byte, not sixteen; a chunk of accounts with all-different
//! limits still works, its palette simply as long as the chunk. A chunk holds at most 256
//! accounts and every palette entry is used by one of them, so a palette index always fits in
//! a `u8`. The chunks are in a `BTreeMap` keyed by their first id.
//!
//! An account opened after every other (ids counting up, as `bank bench` and most callers
//! open them) starts a new chunk when the last is full, so such chunks are full (likewise an
//! account opened before every other); one opened in the middle of a full chunk splits it in
//! halves. Lookups and opens take O(log n): a B-tree
//! step to the chunk, a binary search within it, and for an open a shift of at most 256
//! entries.
//!
//! Determinism: iteration is in id order, and equality compares the accounts, never the
//! layout (two ledgers with the same accounts are equal however their chunks were cut).

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{Account, AccountId};

/// At most this many accounts in one chunk: a palette index (`u8`) addresses them all.
pub const CHUNK_ACCOUNTS_MAX: usize = 256;

/// An account's limits, shared through a chunk's palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    balance_min_minor_units: i64,
    balance_max_minor_units: i64,
}

/// Up to [`CHUNK_ACCOUNTS_MAX`] accounts with consecutive positions in id order. The three
/// columns have one entry per account; `limits[i]` indexes `palette`, and every palette entry
/// is used by at least one account.
#[derive(Debug, Clone, Default)]
struct Chunk {
    ids: Vec<AccountId>,
    balances: Vec<i64>,
    limits: Vec<u8>,
    palette: Vec<Limits>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn first_id(&self) -> Option<AccountId> {
        self.ids.first().copied()
    }

    fn account(&self, at: usize) -> Account {
        let limits = self.palette[usize::from(self.limits[at])];
        Account {
            balance_minor_units: self.balances[at],
            balance_min_minor_units: limits.balance_min_minor_units,
            balance_max_minor_units: limits.balance_max_minor_units,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (AccountId, Account)> + '_ {
        (0..self.len()).map(|at| (self.ids[at], self.account(at)))
    }

    /// Inserts `id` at `at`, its sorted position; the chunk must not be full.
    fn insert_at(&mut self, at: usize, id: AccountId, account: &Account) {
        assert!(
            self.len() < CHUNK_ACCOUNTS_MAX,
            "inserting into a full chunk"
        );
        let limits = Limits {
            balance_min_minor_units: account.balance_min_minor_units,
            balance_max_minor_units: account.balance_max_minor_units,
        };
        let index = match self.palette.iter().position(|known| *known == limits) {
            Some(index) => index,
            None => {
                self.palette.push(limits);
                self.palette.len() - 1
            }
        };
        // Every palette entry is used and the chunk held fewer than 256 accounts, so the
        // palette holds at most 256 entries now: the index fits.
        let Ok(index) = u8::try_from(index) else {
            unreachable!(
                "a palette of {} entries in a chunk of {}",
                index + 1,
                self.len()
            );
        };
        self.ids.insert(at, id);
        self.balances.insert(at, account.balance_minor_units);
        self.limits.insert(at, index);
    }

    /// The accounts from `at` on, moved to a new chunk; both palettes keep only what they use.
    fn split_off(&mut self, at: usize) -> Chunk {
        let mut right = Chunk {
            ids: self.ids.split_off(at),
            balances: self.balances.split_off(at),
            limits: self.limits.split_off(at),
            palette: self.palette.clone(),
        };
        self.compact_palette();
        right.compact_palette();
        right
    }

    /// Drops the palette entries no account uses, renumbering the indexes.
    fn compact_palette(&mut self) {
        let mut used: Vec<Limits> = Vec::new();
        let mut renumbered = vec![u8::MAX; self.palette.len()];
        for index in &mut self.limits {
            let old = usize::from(*index);
            if renumbered[old] == u8::MAX {
                used.push(self.palette[old]);
                let Ok(new) = u8::try_from(used.len() - 1) else {
                    unreachable!("more palette entries than accounts in a chunk");
                };
                renumbered[old] = new;
            }
            *index = renumbered[old];
        }
        used.shrink_to_fit();
        self.palette = used;
    }

    /// Whether the columns agree, ids strictly increase and the palette is as documented.
    fn is_well_formed(&self) -> bool {
        let len = self.len();
        let mut used = [false; CHUNK_ACCOUNTS_MAX];
        let used = used.get_mut(..self.palette.len()).unwrap_or_default();
        let indexes_valid = self.limits.iter().all(|&index| {
            used.get_mut(usize::from(index))
                .map(|slot| *slot = true)
                .is_some()
        });
        (1..=CHUNK_ACCOUNTS_MAX).contains(&len)
            && self.palette.len() <= len
            && self.balances.len() == len
            && self.limits.len() == len
            && self.ids.windows(2).all(|pair| pair[0] < pair[1])
            && indexes_valid
            && used.iter().all(|&used| used)
    }
}

/// Every open account, in id order (see the module docs for the layout).
#[derive(Clone, Default)]
pub struct Accounts {
    /// First id of the chunk -> the chunk. No chunk is empty.
    chunks: BTreeMap<AccountId, Chunk>,
    len: usize,
}

impl Accounts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `id` if any account does, with its position there.
    fn locate(&self, id: AccountId) -> Option<(&Chunk, usize)> {
        let (_, chunk) = self.chunks.range(..=id).next_back()?;
        let at = chunk.ids.binary_search(&id).ok()?;
        Some((chunk, at))
    }

    pub fn get(&self, id: AccountId) -> Option<Account> {
        self.locate(id).map(|(chunk, at)| chunk.account(at))
    }

    pub fn contains(&self, id: AccountId) -> bool {
        self.locate(id).is_some()
    }

    /// Sets an open account's balance, unchecked (the ledger checks limits before); whether
    /// the account is open.
    pub(super) fn set_balance(&mut self, id: AccountId, balance_minor_units: i64) -> bool {
        let Some((_, chunk)) = self.chunks.range_mut(..=id).next_back() else {
            return false;
        };
        match chunk.ids.binary_search(&id) {
            Ok(at) => {
                chunk.balances[at] = balance_minor_units;
                true
            }
            Err(_) => false,
        }
    }

    /// Adds an account that is not open yet; `false` (and nothing changes) if `id` is open.
    pub(super) fn insert_new(&mut self, id: AccountId, account: &Account) -> bool {
        // The chunk `id` belongs in: the last whose first id is at most `id`, else the first.
        let key = match self.chunks.range(..=id).next_back() {
            Some((&key, _)) => key,
            None => match self.chunks.keys().next() {
                Some(&key) => key,
                None => {
                    let mut chunk = Chunk::default();
                    chunk.insert_at(0, id, account);
                    self.chunks.insert(id, chunk);
                    self.len += 1;
                    return true;
                }
            },
        };
        let is_first = self.chunks.keys().next() == Some(&key);
        let is_last = self.chunks.keys().next_back() == Some(&key);
        let Some(mut chunk) = self.chunks.remove(&key) else {
            unreachable!("chunk {key} was found above");
        };
        let at = match chunk.ids.binary_search(&id) {
            Ok(_) => {
                self.chunks.insert(key, chunk);
                return false;
            }
            Err(at) => at,
        };
        if chunk.len() < CHUNK_ACCOUNTS_MAX {
            chunk.insert_at(at, id, account);
        } else if is_last && at == chunk.len() {
            // Ids counting up: keep the full chunk full and start the next.
            let mut next = Chunk::default();
            next.insert_at(0, id, account);
            self.chunks.insert(id, next);
        } else if is_first && at == 0 {
            // Ids counting down: likewise, the other way.
            let mut previous = Chunk::default();
            previous.insert_at(0, id, account);
            self.chunks.insert(id, previous);
        } else {
            let half = chunk.len() / 2;
            let mut right = chunk.split_off(half);
            if at < half {
                chunk.insert_at(at, id, account);
            } else {
                right.insert_at(at - half, id, account);
            }
            if let Some(right_key) = right.first_id() {
                self.chunks.insert(right_key, right);
            }
        }
        if let Some(first) = chunk.first_id() {
            self.chunks.insert(first, chunk);
        }
        self.len += 1;
        true
    }

    /// Every account in id order.
    pub fn iter(&self) -> impl Iterator<Item = (AccountId, Account)> + '_ {
        self.chunks.values().flat_map(Chunk::iter)
    }

    /// Every open id in order.
    pub fn keys(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.chunks
            .values()
            .flat_map(|chunk| chunk.ids.iter().copied())
    }

    /// The accounts after `from` (a bound on ids), in id order.
    pub fn range_from(
        &self,
        from: Bound<AccountId>,
    ) -> impl Iterator<Item = (AccountId, Account)> + '_ {
        let start = match from {
            Bound::Included(id) | Bound::Excluded(id) => self
                .chunks
                .range(..=id)
                .next_back()
                .map_or(Bound::Unbounded, |(&key, _)| Bound::Included(key)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.chunks
            .range((start, Bound::Unbounded))
            .flat_map(|(_, chunk)| chunk.iter())
            .skip_while(move |(id, _)| match from {
                Bound::Included(from) => *id < from,
                Bound::Excluded(from) => *id <= from,
                Bound::Unbounded => false,
            })
    }

    /// Whether the layout is as documented: chunks non-empty and well formed, keyed by their
    /// first id, in order without overlap, and `len` their total.
    pub(super) fn is_well_formed(&self) -> bool {
        let mut total = 0;
        let mut previous_last: Option<AccountId> = None;
        for (&key, chunk) in &self.chunks {
            if !chunk.is_well_formed() || chunk.first_id() != Some(key) {
                return false;
            }
            if previous_last.is_some_and(|last| last >= key) {
                return false;
            }
            previous_last = chunk.ids.last().copied();
            total += chunk.len();
        }
        total == self.len
    }

    /// Heap bytes the accounts take (their columns and palettes, not the allocator's own
    /// overhead or the map of chunks), for measuring.
    pub fn heap_bytes(&self) -> usize {
        self.chunks
            .values()
            .map(|chunk| {
                chunk.ids.capacity() * size_of::<AccountId>()
                    + chunk.balances.capacity() * size_of::<i64>()
                    + chunk.limits.capacity()
                    + chunk.palette.capacity() * size_of::<Limits>()
            })
            .sum()
    }
}

impl PartialEq for Accounts {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Accounts {}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(AccountId, Account)> for Accounts {
    /// Later duplicates of an id are ignored.
    fn from_iter<I: IntoIterator<Item = (AccountId, Account)>>(accounts: I) -> Self {
        let mut all = Accounts::new();
        for (id, account) in accounts {
            all.insert_new(id, &account);
        }
        all
    }
}

/// As a map of id to account, as the `BTreeMap` it replaces was (the ledger's JSON form).
impl Serialize for Accounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Accounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<AccountId, Account>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn account(balance: i64, limits: u8) -> Account {
        Account {
            balance_minor_units: balance,
            balance_min_minor_units: -i64::from(limits % 3),
            balance_max_minor_units: i64::MAX - i64::from(limits),
        }
    }

    #[test]
    fn ids_counting_up_fill_their_chunks() {
        let accounts: Accounts = (0..10_000u64)
            .map(|id| (id, account(id as i64, 0)))
            .collect();
        assert!(accounts.is_well_formed());
        assert_eq!(
            accounts.chunks.len(),
            10_000usize.div_ceil(CHUNK_ACCOUNTS_MAX)
        );
        assert!(accounts
            .chunks
            .values()
            .rev()
            .skip(1)
            .all(|chunk| chunk.len() == CHUNK_ACCOUNTS_MAX));
        // Ids, balances, one limits byte and a palette of one: 17 bytes and a little.
        assert!(
            accounts.heap_bytes() <= 10_000 * 18,
            "{}",
            accounts.heap_bytes()
        );
    }

    #[test]
    fn a_chunk_of_all_different_limits_splits_and_stays_addressable() {
        // Ids counting down: every open goes in front of the first chunk.
        let mut accounts = Accounts::new();
        for id in (0..2_000u64).rev() {
            assert!(accounts.insert_new(id, &account(1, (id % 251) as u8)));
            assert!(!accounts.insert_new(id, &account(2, 0)), "already open");
        }
        assert!(accounts.is_well_formed());
        for id in 0..2_000u64 {
            assert_eq!(accounts.get(id), Some(account(1, (id % 251) as u8)));
        }
        let limits = |id: u64| Account {
            balance_minor_units: 0,
            ..account(0, (id * 7 % 256) as u8)
        };
        // 256 accounts with 256 different limits, then one more in their middle.
        let mut full: Accounts = (0..256u64).map(|id| (id * 2, limits(id))).collect();
        assert!(full.insert_new(101, &limits(3)));
        assert!(full.is_well_formed());
        assert_eq!(full.get(101), Some(limits(3)));
        assert_eq!(full.get(100), Some(limits(50)));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Open(u64, u8),
        SetBalance(u64, i64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        // Few distinct ids, so opens collide and balances hit open accounts.
        let id = prop_oneof![0..600u64, Just(u64::MAX), Just(0)];
        proptest::collection::vec(
            prop_oneof![
                3 => (id.clone(), any::<u8>()).prop_map(|(id, l)| Step::Open(id, l)),
                1 => (id, any::<i64>()).prop_map(|(id, b)| Step::SetBalance(id, b)),
            ],
            0..1_500,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Against a `BTreeMap`: the same answers to every lookup, open and balance change,
        /// the same iteration, and a well-formed layout after every step.
        #[test]
        fn behaves_as_a_btree_map(steps in steps(), from in 0..700u64) {
            let mut accounts = Accounts::new();
            let mut model = BTreeMap::new();
            for step in &steps {
                match *step {
                    Step::Open(id, limits) => {
                        let new = !model.contains_key(&id);
                        prop_assert_eq!(accounts.insert_new(id, &account(0, limits)), new);
                        model.entry(id).or_insert_with(|| account(0, limits));
                    }
                    Step::SetBalance(id, balance) => {
                        let open = model.get_mut(&id).map(|a| a.balance_minor_units = balance);
                        prop_assert_eq!(accounts.set_balance(id, balance), open.is_some());
                    }
                }
            }
            prop_assert!(accounts.is_well_formed());
            prop_assert_eq!(accounts.len(), model.len());
            prop_assert!(accounts.iter().eq(model.iter().map(|(&id, a)| (id, *a))));
            for id in 0..700u64 {
                prop_assert_eq!(accounts.get(id), model.get(&id).copied());
            }
            for bound in [Bound::Included(from), Bound::Excluded(from), Bound::Unbounded] {
                prop_assert!(accounts
                    .range_from(bound)
                    .eq(model.range((bound, Bound::Unbounded)).map(|(&id, a)| (id, *a))));
            }
            let rebuilt: Accounts = model.iter().rev().map(|(&id, a)| (id, *a)).collect();
            prop_assert_eq!(&rebuilt, &accounts);
            let json = serde_json::to_string(&accounts).expect("serialises");
            prop_assert_eq!(&json, &serde_json::to_string(&model).expect("serialises"));
            let decoded: Accounts = serde_json::from_str(&json).expect("deserialises");
            prop_assert_eq!(decoded, accounts);
        }
    }
}
