//! The search's doubly linked list of call and return events (dancing links): an operation's
//! events are lifted out when it is linearized and put back, in O(1), when the search
//! backtracks. Pure bookkeeping, kept apart from the search's decisions.

use super::model::SubOp;

/// No node: the end of the list (and the head's `op`).
pub(super) const NIL: usize = usize::MAX;

/// A call or return event in the search's doubly linked list. Node 0 is the head.
#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    pub(super) op: usize,
    pub(super) is_call: bool,
    prev: usize,
    pub(super) next: usize,
}

/// The events of one account's sub-operations in time order, as a doubly linked list from
/// which an operation's call and return are lifted when it is linearized and put back when
/// the search backtracks (dancing links).
pub(super) struct EventList {
    pub(super) nodes: Vec<Node>,
    call_node: Vec<usize>,
    return_node: Vec<Option<usize>>,
}

impl EventList {
    pub(super) fn new(ops: &[SubOp]) -> Self {
        // Calls before returns at the same time: such operations are concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            events.push((op.call_us, false, index));
            if let Some(time) = op.return_us {
                events.push((time, true, index));
            }
        }
        events.sort_unstable();
        let mut list = EventList {
            nodes: Vec::with_capacity(events.len() + 1),
            call_node: vec![NIL; ops.len()],
            return_node: vec![None; ops.len()],
        };
        list.nodes.push(Node {
            op: NIL,
            is_call: false,
            prev: NIL,
            next: NIL,
        });
        for (position, (_, is_return, op)) in events.into_iter().enumerate() {
            let node = position + 1;
            list.nodes[node - 1].next = node;
            list.nodes.push(Node {
                op,
                is_call: !is_return,
                prev: node - 1,
                next: NIL,
            });
            if is_return {
                list.return_node[op] = Some(node);
            } else {
                list.call_node[op] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    pub(super) fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(node) = self.return_node[op] {
            self.unlink(node);
        }
    }

    /// Undoes the last `lift`, which must have been of `op`.
    pub(super) fn unlift(&mut self, op: usize) {
        if let Some(node) = self.return_node[op] {
            self.relink(node);
        }
        self.relink(self.call_node[op]);
    }
}
