//! The linearizability search of one account (Wing & Gong with Lowe's memoisation, and the
//! refinements the module docs describe): a quick search that allows one indeterminate
//! operation between two completed ones, then the complete search. Its state lives in
//! `Search`, so that building a level, taking a candidate and backtracking are each a function
//! of their own.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use super::event_list::{EventList, NIL};
use super::memo::{FxHasher, Linearized};
use super::model::{Model, SubOp};

/// The deepest point the search reached before it had to backtrack: `blocked` could not be
/// linearized after the `depth` operations placed before it, the last of which was `last`.
#[derive(Debug)]
pub(super) struct Deepest {
    pub(super) depth: usize,
    pub(super) blocked: usize,
    pub(super) last: Option<usize>,
    pub(super) state: Model,
}

/// Why no linearization was found: refuted, or the search gave up.
#[derive(Debug)]
pub(super) enum Unexplained {
    Refuted(Deepest),
    Inconclusive { steps: u64 },
}

/// Searches for a linearization of one account's sub-operations (see the module docs);
/// returns the steps taken.
pub(super) fn linearize(initial: Model, ops: &[SubOp], steps_max: u64) -> Result<u64, Unexplained> {
    // A quick search first, taking at most one indeterminate operation between two completed
    // ones: any linearization it finds is a proof, and it does not drown in the subsets of
    // indeterminate operations that never happened. Only if it finds none does the complete
    // search run, to refute or give up.
    let quick_steps_max = steps_max / 4;
    match search(initial, ops, quick_steps_max, Some(1)) {
        Ok(steps) => Ok(steps),
        Err(Unexplained::Refuted(_)) | Err(Unexplained::Inconclusive { .. }) => {
            let steps_left = steps_max - quick_steps_max;
            match search(initial, ops, steps_left, None) {
                Ok(steps) => Ok(steps + quick_steps_max),
                Err(Unexplained::Inconclusive { .. }) => {
                    Err(Unexplained::Inconclusive { steps: steps_max })
                }
                Err(refuted) => Err(refuted),
            }
        }
    }
}

/// One level of the search: the operations that may be linearized next, in the order tried.
struct Level {
    /// Completed operations whose call precedes the first pending return, most urgent (earliest
    /// return) first, then the indeterminate operations invoked before that return.
    candidates: Vec<usize>,
    tried: usize,
    /// The completed operation with the first pending return: it must be linearized by then.
    blocking: usize,
    /// The state and the operation this level was reached by (`None` at the root).
    state: Model,
    reached_by: Option<usize>,
}

/// One search; `in_a_row_max` bounds the indeterminate operations taken in a row (`None`: the
/// complete search).
///
/// A level's candidates are tried by urgency rather than in call order as in Lowe's
/// formulation: it is the same search tree in another order, and it finds real histories'
/// linearizations with far less backtracking (with many processes, a write often fits the
/// current balance by coincidence, and trying it first leads the search astray).
fn search(
    initial: Model,
    ops: &[SubOp],
    steps_max: u64,
    in_a_row_max: Option<usize>,
) -> Result<u64, Unexplained> {
    // Completed operations first, then indeterminate ones, each in call order.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].return_us.is_none(), ops[i].call_us, i));
    let ops: Vec<SubOp> = order.iter().map(|&i| ops[i]).collect();
    let required = ops.iter().filter(|op| op.return_us.is_some()).count();
    if required == 0 {
        return Ok(0);
    }
    Search::new(initial, ops, order, required, in_a_row_max).run(steps_max)
}

/// The memo: (linearized operations, model state) pairs already explored.
type Memo = HashSet<(Box<[u64]>, Model), BuildHasherDefault<FxHasher>>;

/// The state of one search, over sub-operations sorted as [`search`] sorts them.
struct Search {
    /// Completed operations (`0..required`) first, then indeterminate ones, each in call order.
    ops: Vec<SubOp>,
    /// The index in the caller's slice of each operation in `ops`.
    order: Vec<usize>,
    required: usize,
    in_a_row_max: Option<usize>,
    completed: EventList,
    /// Indexed from 0: operation `required + i` is node `indeterminate.call_node[i]`.
    indeterminate: EventList,
    linearized: Linearized,
    memo: Memo,
    required_left: usize,
    deepest: Option<Deepest>,
    levels: Vec<Level>,
    /// Indeterminate operations taken in a row at the top of the stack.
    in_a_row: usize,
}

impl Search {
    /// A search at its root level. `ops` must hold at least one completed operation.
    fn new(
        initial: Model,
        ops: Vec<SubOp>,
        order: Vec<usize>,
        required: usize,
        in_a_row_max: Option<usize>,
    ) -> Self {
        let completed = EventList::new(&ops[..required]);
        let indeterminate = EventList::new(&ops[required..]);
        let linearized = Linearized::new(required, ops.len() - required);
        let mut search = Search {
            ops,
            order,
            required,
            in_a_row_max,
            completed,
            indeterminate,
            linearized,
            memo: HashSet::default(),
            required_left: required,
            deepest: None,
            levels: Vec::new(),
            in_a_row: 0,
        };
        let root = search.level(initial, None, 0);
        search.levels.push(root);
        search
    }

    /// The operation's index in the caller's slice.
    fn original(&self, op: usize) -> usize {
        self.order[op]
    }

    /// Runs until every completed operation is linearized (returns the steps taken), the root
    /// level runs out of candidates (refuted) or `steps_max` is reached (inconclusive).
    fn run(mut self, steps_max: u64) -> Result<u64, Unexplained> {
        let mut steps = 0u64;
        while self.required_left > 0 {
            steps += 1;
            if steps > steps_max {
                return Err(Unexplained::Inconclusive { steps: steps_max });
            }
            let Some(top) = self.levels.last_mut() else {
                // The root level is never popped without returning.
                unreachable!("the search stack is empty");
            };
            if let Some(&op) = top.candidates.get(top.tried) {
                top.tried += 1;
                let state = top.state;
                self.take(op, state);
                continue;
            }
            // Every candidate failed: the blocking operation cannot be linearized after this
            // prefix. Undo the choice that led here.
            let (blocking, reached_by, state) = (top.blocking, top.reached_by, top.state);
            self.backtrack(blocking, reached_by, state)?;
        }
        Ok(steps)
    }

    /// Tries to linearize `op` in `state`: if the model accepts it and the resulting
    /// configuration is new, lifts it out and pushes the next level.
    fn take(&mut self, op: usize, state: Model) {
        let required = self.required;
        let Some(next_state) = self.ops[op].step.apply(state) else {
            return;
        };
        let (word, mask) = self.linearized.bit(op, required);
        self.linearized.words[word] |= mask;
        if !self.memo.insert((self.linearized.key(), next_state)) {
            self.linearized.words[word] &= !mask;
            return;
        }
        if op < required {
            self.required_left -= 1;
            self.completed.lift(op);
            self.in_a_row = 0;
        } else {
            self.indeterminate.lift(op - required);
            self.in_a_row += 1;
        }
        if self.required_left > 0 {
            let next = self.level(next_state, Some(op), self.in_a_row);
            self.levels.push(next);
        }
    }

    /// Pops the top level, whose candidates all failed, recording it if it is the deepest yet,
    /// and puts back the choice that led to it; at the root the history is refuted.
    fn backtrack(
        &mut self,
        blocking: usize,
        reached_by: Option<usize>,
        state: Model,
    ) -> Result<(), Unexplained> {
        let required = self.required;
        let depth = self.levels.len() - 1;
        if self.deepest.as_ref().is_none_or(|d| depth > d.depth) {
            self.deepest = Some(Deepest {
                depth,
                blocked: self.original(blocking),
                last: reached_by.map(|op| self.original(op)),
                state,
            });
        }
        self.levels.pop();
        let blocked = self.original(blocking);
        let (Some(op), Some(parent)) = (reached_by, self.levels.last_mut()) else {
            let fallback = Deepest {
                depth: 0,
                blocked,
                last: None,
                state,
            };
            return Err(Unexplained::Refuted(
                self.deepest.take().unwrap_or(fallback),
            ));
        };
        // A choice that left the state as it was (a read, a refusal) fitted where it was
        // taken, so any way on that takes it later could take it there instead, and that
        // failed: the parent's other candidates need not be tried.
        if parent.state == state {
            parent.tried = parent.candidates.len();
        }
        let (word, mask) = self.linearized.bit(op, required);
        self.linearized.words[word] &= !mask;
        if op < required {
            self.required_left += 1;
            self.completed.unlift(op);
        } else {
            self.indeterminate.unlift(op - required);
        }
        self.in_a_row = self
            .levels
            .iter()
            .rev()
            .take_while(|l| l.reached_by.is_some_and(|op| op >= required))
            .count();
        Ok(())
    }

    /// The level reached in `state` by `reached_by`, after `in_a_row` indeterminate operations
    /// in a row: the completed operations called before the first pending return, then the
    /// indeterminate ones worth trying.
    fn level(&self, state: Model, reached_by: Option<usize>, in_a_row: usize) -> Level {
        let completed = &self.completed;
        let mut candidates = Vec::new();
        let mut node = completed.nodes[0].next;
        // A completed operation is still in the list, so a return ends the walk.
        while completed.nodes[node].is_call {
            candidates.push(completed.nodes[node].op);
            node = completed.nodes[node].next;
            assert_ne!(node, NIL, "a pending operation has no return event");
        }
        let blocking = completed.nodes[node].op;
        // Lowe's order: by call time (tried: by return, by midpoint; both far slower).
        if self.in_a_row_max.is_none_or(|max| in_a_row < max) {
            self.push_indeterminate(&mut candidates, blocking, state, in_a_row);
        }
        Level {
            candidates,
            tried: 0,
            blocking,
            state,
            reached_by,
        }
    }

    /// Appends to `candidates` the indeterminate operations invoked by the return of
    /// `blocking` that are worth taking in `state`.
    fn push_indeterminate(
        &self,
        candidates: &mut Vec<usize>,
        blocking: usize,
        state: Model,
        in_a_row: usize,
    ) {
        let (ops, required, indeterminate) = (&self.ops, self.required, &self.indeterminate);
        // The last indeterminate operation allowed in a row is only worth taking if it
        // leaves a balance that some completed candidate needs.
        let last_allowed = self.in_a_row_max.is_some_and(|max| in_a_row + 1 == max);
        let mut needs: HashSet<Option<i64>, BuildHasherDefault<FxHasher>> = HashSet::default();
        let mut needs_any = !last_allowed;
        for &op in candidates.iter() {
            match ops[op].step.need() {
                Some(balance) => {
                    needs.insert(balance);
                }
                None => needs_any = true,
            }
        }
        let blocking_us = ops[blocking].return_us.unwrap_or(u64::MAX);
        let mut node = indeterminate.nodes[0].next;
        while node != NIL && ops[required + indeterminate.nodes[node].op].call_us <= blocking_us {
            let op = required + indeterminate.nodes[node].op;
            let useful = needs_any
                || ops[op]
                    .step
                    .apply(state)
                    .is_some_and(|after| needs.contains(&after.map(|a| a.balance)));
            if useful {
                candidates.push(op);
            }
            node = indeterminate.nodes[node].next;
        }
    }
}
