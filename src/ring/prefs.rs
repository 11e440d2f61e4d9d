//! Preference lists: the nodes that hold a key, walking clockwise from its token,
//! one at a time or precomputed for every range of a ring.

use super::{NodeState, Ring, Token};

/// The preference lists of a ring, precomputed per token range (see
/// [`Ring::pref_table`]).
#[derive(Clone, Debug, Default)]
pub struct PrefTable {
    tokens: Vec<Token>,
    lists: Vec<Vec<u32>>,
}

impl PrefTable {
    /// The preference list of `hash` (empty for an empty ring).
    pub fn get(&self, hash: u64) -> &[u32] {
        if self.tokens.is_empty() {
            return &[];
        }
        let i = self.tokens.partition_point(|&t| t < hash);
        &self.lists[if i == self.tokens.len() { 0 } else { i }]
    }

    /// The tokens that end its ranges, ascending: every hash of a range has the
    /// list of the range's last hash, the token itself.
    pub fn bounds(&self) -> &[Token] {
        &self.tokens
    }
}

impl Ring {
    /// First `n` distinct node ids clockwise from the hash's token, the owner first
    /// (all states included; callers filter). Shorter than `n` when fewer nodes hold
    /// tokens.
    pub fn preference_list(&self, hash: u64, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let Some(start) = self.point_index(hash) else {
            return out;
        };
        let len = self.points.len();
        for step in 0..len {
            if out.len() == n {
                break;
            }
            let owner = self.points[(start + step) % len].1;
            if !out.contains(&owner) {
                out.push(owner);
            }
        }
        out
    }

    /// Every preference list of `n` nodes this ring has, one per token range,
    /// for looking many keys up without walking the ring for each.
    pub fn pref_table(&self, n: usize) -> PrefTable {
        let lists = (0..self.points.len())
            .map(|i| self.preference_list(self.points[i].0, n))
            .collect();
        PrefTable {
            tokens: self.points.iter().map(|p| p.0).collect(),
            lists,
        }
    }

    /// The key's coordinator: the first node of its preference list (of
    /// `replicas` nodes) that is not down. `None` when all of them are down or
    /// the ring is empty.
    pub fn coordinator(&self, hash: u64) -> Option<u32> {
        self.preference_list(hash, self.replicas.max(1) as usize)
            .into_iter()
            .find(|&id| self.node(id).is_some_and(|n| n.state != NodeState::Down))
    }
}
