//! The search's memoisation: the set of linearized operations as a compact bitset whose key,
//! with the model state, identifies a configuration already explored, and the fast hasher for
//! those keys. Kept apart from the search so its loop reads as the algorithm.

use std::hash::Hasher;

/// The set of linearized operations. Completed operations take bits `0..required` in call
/// order and indeterminate ones the words after, so the memo key stays short: the completed
/// part is stored from its first word that is not full (everything before the search frontier
/// is linearized), the indeterminate part up to its last set bit.
pub(super) struct Linearized {
    pub(super) words: Vec<u64>,
    required_words: usize,
}

impl Linearized {
    pub(super) fn new(required: usize, optional: usize) -> Self {
        let required_words = required.div_ceil(64);
        Linearized {
            words: vec![0; required_words + optional.div_ceil(64)],
            required_words,
        }
    }

    pub(super) fn bit(&self, op: usize, required: usize) -> (usize, u64) {
        // `op` indexes sub-ops: completed ones first, then the indeterminate ones.
        if op < required {
            (op / 64, 1 << (op % 64))
        } else {
            let optional = op - required;
            (self.required_words + optional / 64, 1 << (optional % 64))
        }
    }

    pub(super) fn key(&self) -> Box<[u64]> {
        let (required, optional) = self.words.split_at(self.required_words);
        let full = required.iter().take_while(|w| **w == u64::MAX).count();
        let required_end = required
            .iter()
            .rposition(|w| *w != 0)
            .map_or(full, |i| i + 1);
        let optional_end = optional.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
        let mut key = Vec::with_capacity(2 + required_end - full.min(required_end) + optional_end);
        key.push(full as u64);
        key.push(required_end.saturating_sub(full) as u64);
        key.extend_from_slice(&required[full.min(required_end)..required_end]);
        key.extend_from_slice(&optional[..optional_end]);
        key.into_boxed_slice()
    }
}

/// FxHash (rustc's): the memo's keys are machine words from this process, not adversarial
/// input, and SipHash would dominate the search.
#[derive(Default)]
pub(super) struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.hash = (self.hash.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}
