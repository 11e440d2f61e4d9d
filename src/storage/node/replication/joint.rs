//! Which quorums a conditional op's Paxos rounds count, across ring changes:
//! joint majorities while a move is pending, and the acceptor's fence
//! against proposers whose ring is stale.
//!
//! A proposer's [`View`] of a key is its ring's epoch and the key's serving
//! list `S` and settled list `T` by that ring (`T` differs from `S` only while
//! a move adds or removes a node of the key). A prepare or accept round is
//! done only with a majority of `S` *and* a majority of `T` (and R or W of
//! `S`, see [`verdict`]); it asks every reachable node of both lists, and an
//! unreachable one counts as missing. Every prepare and accept carries the
//! view, and an acceptor whose ring is newer than the view's epoch and gives
//! the key other lists refuses it (`REFUSED stale-ring EPOCH`, see
//! [`StorageNode::fence`]). With the manager's rule that a move flips only
//! once a majority of each moving range's serving list has installed the
//! ring that started it (they reported its handoff done), no two proposers
//! on different rings count majorities that need not meet; the argument is
//! in docs/architecture.md, section 6 ("Joint majorities").

use super::*;
use crate::protocol::cluster::{lists_mark, Fence, Refusal, View};

/// What a Paxos round's votes so far add up to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A majority of each list (and the serving list's R or W) voted.
    Done,
    /// Not yet, but the nodes still waited for can make it.
    Waiting,
    /// Even if every node waited for votes, some list lacks its majority.
    Failed,
}

/// A majority of `list` (none of an empty list).
fn majority(list: &[u32]) -> usize {
    if list.is_empty() {
        0
    } else {
        list.len() / 2 + 1
    }
}

/// Whether `voters` (nodes that promised or accepted), with `waiting`
/// (asked, not answered yet), make or can still make a majority of each of
/// `view`'s lists, and `serving_need` (R or W) of its serving list.
pub fn verdict(view: &View, serving_need: usize, voters: &[u32], waiting: &[u32]) -> Verdict {
    let needs = [
        serving_need.max(majority(&view.serving)),
        majority(&view.settled),
    ];
    verdict_of(view, needs, voters, waiting)
}

/// Whether `voters` (with `waiting`) make or can still make `needs[0]` of
/// `view`'s serving list and `needs[1]` of its settled list.
pub fn verdict_of(view: &View, needs: [usize; 2], voters: &[u32], waiting: &[u32]) -> Verdict {
    let lists = [&view.serving, &view.settled];
    let mut done = true;
    for (list, need) in lists.into_iter().zip(needs) {
        let count = |set: &[u32]| set.iter().filter(|n| list.contains(n)).count();
        let have = count(voters);
        if have + count(waiting) < need {
            return Verdict::Failed;
        }
        done &= have >= need;
    }
    if done {
        Verdict::Done
    } else {
        Verdict::Waiting
    }
}

/// Every node of `view`'s two lists but `me`, once each.
pub fn members_but(view: &View, me: u32) -> Vec<u32> {
    let mut all: Vec<u32> = view.serving.clone();
    for &n in &view.settled {
        if !all.contains(&n) {
            all.push(n);
        }
    }
    all.retain(|&n| n != me);
    all
}

impl StorageNode {
    /// This node's view of the key with ring hash `hash`.
    pub(super) fn view_of(&self, hash: u64) -> View {
        View {
            epoch: self.ring.epoch,
            serving: self.serving_pref.get(hash).to_vec(),
            settled: self.settled_pref.get(hash).to_vec(),
        }
    }

    /// This node's [`Fence`] for the key with ring hash `hash`: its ring's
    /// epoch and the mark of the key's lists by it.
    pub(in crate::storage::node) fn fence_of(&self, hash: u64) -> Fence {
        self.fence_in(self.serving_pref.get(hash), self.settled_pref.get(hash))
    }

    /// This node's [`Fence`] for a key whose lists by its ring are `serving`
    /// and `settled` (already looked up).
    pub(super) fn fence_in(&self, serving: &[u32], settled: &[u32]) -> Fence {
        Fence {
            epoch: self.ring.epoch,
            mark: lists_mark(serving, settled),
        }
    }

    /// The acceptor's fence: refuses a proposer's `PREPARE` or `ACCEPT` whose
    /// view is of an older ring than this node's and gives the key other lists
    /// (its majorities need not meet the current ones). A proposer with a
    /// newer ring, or an older one that lists the key alike, is served: the
    /// lists it counts are the ones this node would count, or newer.
    pub(in crate::storage::node) fn fence(&self, hash: u64, view: &View) -> Result<(), Refusal> {
        let stale = view.epoch < self.ring.epoch
            && (view.serving[..] != *self.serving_pref.get(hash)
                || view.settled[..] != *self.settled_pref.get(hash));
        if stale {
            return Err(Refusal::StaleRing {
                epoch: self.ring.epoch,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(serving: &[u32], settled: &[u32]) -> View {
        View {
            epoch: 1,
            serving: serving.to_vec(),
            settled: settled.to_vec(),
        }
    }

    #[test]
    fn a_round_needs_a_majority_of_both_lists() {
        // Node 4 joins and takes node 3's place on the key's list.
        let v = view(&[1, 2, 3], &[1, 2, 4]);
        assert_eq!(members_but(&v, 1), vec![2, 3, 4]);
        // 1 and 3: a majority of the old list, one of the new.
        assert_eq!(verdict(&v, 2, &[1, 3], &[2, 4]), Verdict::Waiting);
        assert_eq!(verdict(&v, 2, &[1, 3], &[]), Verdict::Failed);
        assert_eq!(verdict(&v, 2, &[1, 3, 4], &[]), Verdict::Done);
        assert_eq!(verdict(&v, 2, &[1, 2], &[3, 4]), Verdict::Done);
        // An unreachable newcomer (never asked) counts as missing.
        assert_eq!(verdict(&v, 2, &[1], &[3]), Verdict::Failed);
        // No move: one list, a majority and R.
        let v = view(&[1, 2, 3], &[1, 2, 3]);
        assert_eq!(verdict(&v, 3, &[1, 2], &[3]), Verdict::Waiting);
        assert_eq!(verdict(&v, 3, &[1, 2], &[]), Verdict::Failed);
        assert_eq!(verdict(&view(&[1], &[1]), 1, &[1], &[]), Verdict::Done);
    }
}
