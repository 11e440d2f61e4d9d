//! Consistent hashing: where every key lives. Pure data and functions, no I/O and
//! no clocks; the manager, the storage nodes and the clients all use this module and
//! must reach the same answers from the same [`Ring`].
//!
//! # Hashing
//!
//! Keys, and everything else placed on the ring, are hashed with [`hash64`]: XXH3-64
//! with seed 0. The hash is part of the cluster's contract (two processes that
//! disagree on it disagree on where every key lives), so it is fixed forever and
//! pinned by test vectors computed with an independent implementation.
//!
//! # Tokens and ranges
//!
//! The hash space is the circle of all `u64` values. Each storage node holds a set of
//! *tokens* (points on the circle; Dynamo's "virtual nodes"). A token owns the hashes
//! in the half-open range `(previous token, token]`, where "previous" is the next
//! smaller token on the whole ring; the smallest token's range wraps around and also
//! takes every hash above the largest token. A ring with a single token gives it the
//! whole circle. [`Ring::token_for`] finds the owning token of a hash by binary search
//! over the sorted token list, and [`in_range`] tests a hash against a range with the
//! same wrap-around rule (a storage node keeps one sector per token it holds).
//!
//! Many small tokens per node, instead of one large range, do two things: a node's
//! share of the circle is the sum of many ranges, so it can be tuned finely; and when
//! a node joins or leaves, the keys that move come from (or go to) many different
//! nodes instead of a single neighbour.
//!
//! # Preference lists
//!
//! The *preference list* of a hash ([`Ring::preference_list`]) is the first `n`
//! distinct node ids met walking clockwise from the hash's token: the owner first,
//! then the owners of the following tokens, skipping nodes already listed. The first
//! `N` (the replication factor) are the key's replicas. The list includes nodes in
//! every [`NodeState`]: callers skip the ones they cannot use (the first live node is
//! the key's coordinator).
//!
//! # Epochs and the text form
//!
//! The manager owns the ring. Every change (a node joins, leaves, changes state, or
//! tokens move) gives a new ring with a larger `epoch`, so two rings can be ordered
//! and a node or client holding an older one can tell it is stale. The ring also
//! carries the replication factor `N` and the read and write quorums `R` and `W`.
//!
//! On the wire (the payload of the `RING_REPLY` frame, and the tail of `JOINED`) a
//! ring is ASCII text, every line ending with LF:
//!
//! ```text
//! epoch E
//! replicas N R W
//! node ID HOST:PORT STATE T1,T2,...
//! ```
//!
//! with one `node` line per node. `E` is a decimal `u64`; `N`, `R`, `W` and `ID` are
//! decimal `u32`; `STATE` is one of `up`, `down`, `joining`, `leaving`; the tokens are
//! decimal `u64` separated by commas with no spaces, and an empty token list is
//! written `-`. Fields are separated by exactly one space. The form is canonical:
//! numbers have no sign and no leading zeros, nodes appear in increasing id order and
//! each node's tokens in increasing order, so one ring has exactly one text.
//! [`Ring::decode`] is strict: it also checks that ids and tokens are unique, that
//! `1 <= R <= N` and `1 <= W <= N`, and that every address is `HOST:PORT` with a
//! non-empty host and a decimal port. It never panics, whatever the input.
//!
//! ```text
//! epoch 7
//! replicas 3 2 2
//! node 1 10.0.0.1:7000 up 1537228672809129301,9223372036854775807
//! node 2 10.0.0.2:7000 joining -
//! ```
//!
//! # Assigning tokens
//!
//! The manager gives a joining node its tokens with [`plan_tokens`], which cuts
//! them out of the others' ranges so that every node owns its fair share, and
//! hands a leaving node's tokens over with [`plan_handoff`]; `plan.rs` explains
//! the algorithm. Tokens are only ever added on a join, so a join moves only the
//! keys the newcomer takes, and a leave moves only the leaving node's keys.
//!
//! # Caveats
//!
//! - Ownership is balanced, not load: a hot key or a skewed key set still lands on
//!   one preference list, and key counts vary around the ownership by chance
//!   (about ±1% for 100,000 keys on 8 nodes).
//! - Replica placement ignores racks, zones and hosts: two nodes on one machine can
//!   hold all the replicas of a key.
//! - Joins keep existing token positions, so ranges only ever get smaller, and token
//!   counts grow through handoffs; nothing here merges small ranges back together.
//! - A joiner with fewer tokens than there are nodes to take from cannot reach the
//!   fair share (each token takes from one node), and one with fewer tokens than its
//!   peers may need pieces larger than the ranges it can cut: it then takes ranges
//!   almost whole, leaving slivers of a few hashes, and still ends below its share.
//!   Use [`join_token_count`] and at least as many tokens as nodes.
//! - [`Ring::new`] does not validate: a second node with an id already seen is
//!   dropped, and a token claimed by two nodes goes to the lower id. Use
//!   [`Ring::try_new`] (as [`Ring::decode`] does) to reject such rings instead.
//! - The epoch orders rings issued by one manager; nothing here resolves two managers
//!   issuing rings with the same epoch.

mod codec;
mod plan;
mod prefs;

pub use plan::{join_token_count, plan_handoff, plan_tokens};
pub use prefs::PrefTable;

use crate::protocol::{Error, ErrorCode};
use std::fmt;
use std::str::FromStr;

/// The size of the hash space, 2^64, for arithmetic on range lengths.
pub const HASH_SPACE: u128 = 1 << 64;

/// Stable 64-bit hash for keys and everything on the ring: XXH3-64, seed 0. Fixed
/// forever: every node and client must agree on it.
pub fn hash64(data: &[u8]) -> u64 {
    #[cfg(test)]
    HASHES.with(|n| n.set(n.get() + 1));
    xxhash_rust::xxh3::xxh3_64(data)
}

#[cfg(test)]
thread_local! {
    /// Keys hashed on this thread (test builds only: the storage node's hot-path
    /// tests count them per request).
    pub(crate) static HASHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A point on the ring. A token owns the hashes in `(previous token, token]`.
pub type Token = u64;

/// Whether `hash` falls in the token range `(start, end]`, wrapping around the top of
/// the hash space when `start >= end`. `start == end` is the whole circle (the range
/// of the only token on a ring).
pub fn in_range(hash: u64, start: Token, end: Token) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Less => start < hash && hash <= end,
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Greater => hash > start || hash <= end,
    }
}

/// The membership state of a node, as the manager sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Serving normally.
    Up,
    /// Not responding; its ranges are still its own, replicas stand in for it.
    Down,
    /// Received its tokens and is taking in data for them.
    Joining,
    /// Handing its data over before it goes away.
    Leaving,
}

impl NodeState {
    /// All states, for parsing and tests.
    pub const ALL: [NodeState; 4] = [
        NodeState::Up,
        NodeState::Down,
        NodeState::Joining,
        NodeState::Leaving,
    ];

    /// The lower-case word used in the ring text: `up`, `down`, `joining`, `leaving`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Joining => "joining",
            NodeState::Leaving => "leaving",
        }
    }

    /// Parses the word written by [`NodeState::as_str`]; anything else gives `None`.
    pub fn from_word(word: &[u8]) -> Option<NodeState> {
        NodeState::ALL
            .into_iter()
            .find(|s| s.as_str().as_bytes() == word)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = Error;

    /// Parses `up`, `down`, `joining` or `leaving`.
    fn from_str(s: &str) -> Result<NodeState, Error> {
        NodeState::from_word(s.as_bytes()).ok_or_else(|| {
            Error::new(
                ErrorCode::Internal,
                "bad node state: expected up, down, joining or leaving",
            )
        })
    }
}

/// One storage node on the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The id the manager assigned; unique in a ring.
    pub id: u32,
    /// Where peers and clients reach it: `HOST:PORT`.
    pub addr: String,
    /// Its membership state.
    pub state: NodeState,
    /// The tokens it holds. [`Ring::new`] sorts them and drops duplicates.
    pub tokens: Vec<Token>,
}

/// A versioned map from the hash space to nodes, with the replication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Increases with every change the manager makes; a larger epoch is newer.
    pub epoch: u64,
    /// The replication factor `N`: how many nodes hold each key.
    pub replicas: u32,
    /// `R`: how many replicas must answer a read.
    pub read_quorum: u32,
    /// `W`: how many replicas must acknowledge a write.
    pub write_quorum: u32,
    /// Sorted by id, ids unique, each node's tokens sorted and unique.
    nodes: Vec<NodeEntry>,
    /// Every token with its owner, sorted by token, tokens unique. Derived from `nodes`.
    points: Vec<(Token, u32)>,
}

impl Ring {
    /// Builds a ring: nodes are sorted by id and their tokens sorted, and the token
    /// table is derived. Does not validate: a node whose id was already seen is
    /// dropped, and a token claimed by two nodes goes to the lower id. See
    /// [`Ring::try_new`] for the checked version.
    pub fn new(
        epoch: u64,
        replicas: u32,
        read_quorum: u32,
        write_quorum: u32,
        mut nodes: Vec<NodeEntry>,
    ) -> Ring {
        nodes.sort_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        for n in &mut nodes {
            n.tokens.sort_unstable();
            n.tokens.dedup();
        }
        let mut ring = Ring {
            epoch,
            replicas,
            read_quorum,
            write_quorum,
            nodes,
            points: Vec::new(),
        };
        ring.derive_points();
        ring
    }

    /// Builds a ring like [`Ring::new`], but rejects (with [`ErrorCode::Internal`]) a
    /// ring that is not well formed: a repeated node id or token, a quorum outside
    /// `1..=replicas`, or an address that is not `HOST:PORT`.
    pub fn try_new(
        epoch: u64,
        replicas: u32,
        read_quorum: u32,
        write_quorum: u32,
        nodes: Vec<NodeEntry>,
    ) -> Result<Ring, Error> {
        if replicas == 0 {
            return Err(invalid("replicas must be at least 1".to_string()));
        }
        if read_quorum == 0 || read_quorum > replicas {
            return Err(invalid(format!(
                "read quorum {read_quorum} outside 1..={replicas}"
            )));
        }
        if write_quorum == 0 || write_quorum > replicas {
            return Err(invalid(format!(
                "write quorum {write_quorum} outside 1..={replicas}"
            )));
        }
        let mut ids: Vec<u32> = nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("node id {} appears twice", w[0])));
        }
        for n in &nodes {
            if !valid_addr(&n.addr) {
                return Err(invalid(format!("node {}: address is not HOST:PORT", n.id)));
            }
        }
        let mut tokens: Vec<Token> = nodes
            .iter()
            .flat_map(|n| n.tokens.iter().copied())
            .collect();
        tokens.sort_unstable();
        if let Some(w) = tokens.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("token {} appears twice", w[0])));
        }
        Ok(Ring::new(epoch, replicas, read_quorum, write_quorum, nodes))
    }

    /// The ring before any node joined: epoch 0, one replica, quorums of one, no nodes.
    pub fn empty() -> Ring {
        Ring::new(0, 1, 1, 1, Vec::new())
    }

    /// The nodes, sorted by id.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.nodes
    }

    /// The node with this id.
    pub fn node(&self, id: u32) -> Option<&NodeEntry> {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Every token with its owner, sorted by token.
    pub fn points(&self) -> &[(Token, u32)] {
        &self.points
    }

    /// Whether the ring holds no tokens (so no key has an owner).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Adds a node, or replaces the one with the same id, and re-derives the token
    /// table (the same rules as [`Ring::new`]). The epoch is left to the caller.
    pub fn upsert_node(&mut self, mut entry: NodeEntry) {
        entry.tokens.sort_unstable();
        entry.tokens.dedup();
        match self.nodes.binary_search_by_key(&entry.id, |n| n.id) {
            Ok(i) => self.nodes[i] = entry,
            Err(i) => self.nodes.insert(i, entry),
        }
        self.derive_points();
    }

    /// Removes a node and its tokens; each of its ranges then belongs to the next
    /// token clockwise. Returns the removed entry. The epoch is left to the caller.
    pub fn remove_node(&mut self, id: u32) -> Option<NodeEntry> {
        let i = self.nodes.binary_search_by_key(&id, |n| n.id).ok()?;
        let entry = self.nodes.remove(i);
        self.derive_points();
        Some(entry)
    }

    /// Changes a node's state; returns false if there is no such node. Ownership does
    /// not depend on state, so the token table is unchanged.
    pub fn set_state(&mut self, id: u32, state: NodeState) -> bool {
        match self.nodes.binary_search_by_key(&id, |n| n.id) {
            Ok(i) => {
                self.nodes[i].state = state;
                true
            }
            Err(_) => false,
        }
    }

    /// The token that owns `hash`: the smallest token `>= hash`, or the smallest token
    /// of all when `hash` is above the largest. A token owns the hashes in
    /// `(previous token, token]`. `None` on a ring without tokens.
    pub fn token_for(&self, hash: u64) -> Option<Token> {
        self.point_index(hash).map(|i| self.points[i].0)
    }

    /// The node owning `hash`: the owner of [`Ring::token_for`].
    pub fn owner_of_hash(&self, hash: u64) -> Option<u32> {
        self.point_index(hash).map(|i| self.points[i].1)
    }

    /// The node owning `key`: `owner_of_hash(hash64(key))`.
    pub fn owner(&self, key: &[u8]) -> Option<u32> {
        self.owner_of_hash(hash64(key))
    }

    /// The range `(start, token]` that `token` owns, as `(start, token)`; `start ==
    /// token` when it is the only token (the whole circle). `None` if no node holds
    /// `token`. Test hashes against it with [`in_range`].
    pub fn range_of(&self, token: Token) -> Option<(Token, Token)> {
        let i = self.points.binary_search_by_key(&token, |p| p.0).ok()?;
        let prev = if i == 0 { self.points.len() - 1 } else { i - 1 };
        Some((self.points[prev].0, token))
    }

    /// Fraction of the hash space (0.0..=1.0) each node owns, as (node id, share), in
    /// id order; nodes without tokens own 0.0. The shares sum to 1.0 unless the ring
    /// is empty.
    pub fn ownership(&self) -> Vec<(u32, f64)> {
        let owned = owned_by(&self.points);
        self.nodes
            .iter()
            .map(|n| {
                let units = owned
                    .binary_search_by_key(&n.id, |o| o.0)
                    .map(|i| owned[i].1)
                    .unwrap_or(0);
                (n.id, units as f64 / HASH_SPACE as f64)
            })
            .collect()
    }

    /// Text form used on the wire as the RING reply payload; see the module docs.
    /// Expects a well-formed ring (as [`Ring::try_new`] accepts): an address with a
    /// space or newline in it would not decode.
    pub fn encode(&self) -> String {
        codec::encode(self)
    }

    /// Parses the text form (see the module docs). Strict: anything that is not the
    /// canonical text of a well-formed ring is an [`ErrorCode::Internal`] error saying
    /// what is wrong. Never panics.
    pub fn decode(text: &[u8]) -> Result<Ring, Error> {
        codec::decode(text)
    }

    /// The ring requests are routed by while moves are pending: joining nodes do not
    /// serve yet, leaving nodes still do.
    pub fn serving(&self) -> Ring {
        let nodes = self
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Joining)
            .cloned()
            .collect();
        self.with_nodes(nodes)
    }

    /// The ring once every pending move is done: joining nodes serve, and each
    /// leaving node's tokens go to other nodes as [`plan_handoff`] chooses (in id
    /// order of the leaving nodes). Every process computes the same result.
    pub fn settled(&self) -> Ring {
        let mut nodes: Vec<NodeEntry> = self.nodes.clone();
        for leaving in self.nodes.iter().filter(|n| n.state == NodeState::Leaving) {
            let points: Vec<(Token, u32)> = nodes
                .iter()
                .flat_map(|n| n.tokens.iter().map(move |&t| (t, n.id)))
                .collect();
            let handoff = plan_handoff(&points, leaving.id);
            if handoff.is_empty() {
                continue; // nobody to hand to: the node keeps its tokens
            }
            for n in nodes.iter_mut() {
                if n.id == leaving.id {
                    n.tokens.clear();
                } else {
                    n.tokens
                        .extend(handoff.iter().filter(|h| h.1 == n.id).map(|h| h.0));
                }
            }
        }
        nodes.retain(|n| n.state != NodeState::Leaving || !n.tokens.is_empty());
        for n in nodes.iter_mut() {
            if n.state == NodeState::Joining {
                n.state = NodeState::Up;
            }
        }
        self.with_nodes(nodes)
    }

    /// This ring's epoch and replication settings with other nodes.
    fn with_nodes(&self, nodes: Vec<NodeEntry>) -> Ring {
        Ring::new(
            self.epoch,
            self.replicas,
            self.read_quorum,
            self.write_quorum,
            nodes,
        )
    }

    /// Whether any node is joining or leaving.
    pub fn has_moves(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(n.state, NodeState::Joining | NodeState::Leaving))
    }

    fn derive_points(&mut self) {
        let mut points: Vec<(Token, u32)> = self
            .nodes
            .iter()
            .flat_map(|n| n.tokens.iter().map(move |&t| (t, n.id)))
            .collect();
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        self.points = points;
    }

    /// Index in `points` of the token owning `hash`.
    fn point_index(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|p| p.0 < hash);
        Some(if i == self.points.len() { 0 } else { i })
    }
}

/// The length, in hashes, of the range ending at `points[i]`, for a list sorted by
/// token with unique tokens.
fn range_len(points: &[(Token, u32)], i: usize) -> u128 {
    if points.len() == 1 {
        return HASH_SPACE;
    }
    let prev = if i == 0 { points.len() - 1 } else { i - 1 };
    u128::from(points[i].0.wrapping_sub(points[prev].0))
}

/// Hashes owned by each node holding tokens, as (id, hashes) sorted by id, for a list
/// sorted by token with unique tokens. The amounts sum to [`HASH_SPACE`] unless empty.
fn owned_by(points: &[(Token, u32)]) -> Vec<(u32, u128)> {
    let mut owned: Vec<(u32, u128)> = Vec::new();
    for i in 0..points.len() {
        let id = points[i].1;
        let len = range_len(points, i);
        match owned.binary_search_by_key(&id, |o| o.0) {
            Ok(j) => owned[j].1 += len,
            Err(j) => owned.insert(j, (id, len)),
        }
    }
    owned
}

/// Whether `addr` is `HOST:PORT`: printable ASCII without spaces, a non-empty host and
/// a canonical decimal port.
fn valid_addr(addr: &str) -> bool {
    if !addr.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && codec::parse_dec(port.as_bytes())
                    .and_then(|p| u16::try_from(p).ok())
                    .is_some()
        }
        None => false,
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorCode::Internal, format!("bad ring: {message}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn entry(id: u32, state: NodeState, tokens: &[Token]) -> NodeEntry {
        NodeEntry {
            id,
            addr: format!("10.0.0.{id}:7000"),
            state,
            tokens: tokens.to_vec(),
        }
    }

    /// Nodes 1: {100, 300}, 2: {200}, 3: {400}.
    fn small_ring() -> Ring {
        Ring::new(
            5,
            3,
            2,
            2,
            vec![
                entry(3, NodeState::Up, &[400]),
                entry(1, NodeState::Up, &[300, 100]),
                entry(2, NodeState::Down, &[200]),
            ],
        )
    }

    /// External reference vectors: computed with the Python `xxhash` package
    /// 4.1.0 (`xxhash.xxh3_64_intdigest`, bundling libxxhash 0.8.4), not with the crate
    /// under test.
    #[test]
    fn hash64_known_vectors() {
        let hundred: Vec<u8> = (0u8..100).collect();
        let long: Vec<u8> = [vec![b'x'; 240], vec![b'y'; 17]].concat();
        let cases: [(&[u8], u64); 7] = [
            (b"", 3244421341483603138),
            (b"a", 16629034431890738719),
            (b"hello", 10760762337991515389),
            (b"gtstore", 15447238858202134313),
            (b"key0", 8419820270403067590),
            (&hundred, 22042537110060316),
            (&long, 9535771341869245342),
        ];
        for (input, want) in cases {
            assert_eq!(hash64(input), want, "input of {} bytes", input.len());
        }
    }

    #[test]
    fn node_state_words() {
        for s in NodeState::ALL {
            assert_eq!(NodeState::from_word(s.as_str().as_bytes()), Some(s));
            assert_eq!(s.as_str().parse::<NodeState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(NodeState::Up.as_str(), "up");
        assert_eq!(NodeState::Down.as_str(), "down");
        assert_eq!(NodeState::Joining.as_str(), "joining");
        assert_eq!(NodeState::Leaving.as_str(), "leaving");
        for bad in ["", "UP", "Up", "up ", "gone"] {
            assert_eq!(NodeState::from_word(bad.as_bytes()), None, "{bad:?}");
            assert!(bad.parse::<NodeState>().is_err());
        }
    }

    #[test]
    fn token_for_ranges_and_wrap_around() {
        let ring = small_ring();
        let cases: [(u64, Token, u32); 12] = [
            (0, 100, 1),
            (1, 100, 1),
            (99, 100, 1),
            (100, 100, 1), // a token owns its own position
            (101, 200, 2), // ...and not the hash after it
            (200, 200, 2),
            (201, 300, 1),
            (300, 300, 1),
            (399, 400, 3),
            (400, 400, 3),
            (401, 100, 1), // above the largest token: wraps to the smallest
            (u64::MAX, 100, 1),
        ];
        for (hash, token, owner) in cases {
            assert_eq!(ring.token_for(hash), Some(token), "hash {hash}");
            assert_eq!(ring.owner_of_hash(hash), Some(owner), "hash {hash}");
        }
        let key = b"some key";
        assert_eq!(ring.owner(key), ring.owner_of_hash(hash64(key)));
    }

    #[test]
    fn empty_and_single_token_rings() {
        let empty = Ring::empty();
        assert!(empty.is_empty());
        assert_eq!(empty.epoch, 0);
        assert_eq!(
            (empty.replicas, empty.read_quorum, empty.write_quorum),
            (1, 1, 1)
        );
        assert_eq!(empty.token_for(7), None);
        assert_eq!(empty.owner(b"k"), None);
        assert!(empty.preference_list(7, 3).is_empty());
        assert!(empty.ownership().is_empty());

        let tokenless = Ring::new(1, 1, 1, 1, vec![entry(4, NodeState::Joining, &[])]);
        assert!(tokenless.is_empty());
        assert_eq!(tokenless.owner(b"k"), None);
        assert_eq!(tokenless.ownership(), vec![(4, 0.0)]);

        let one = Ring::new(1, 1, 1, 1, vec![entry(9, NodeState::Up, &[1000])]);
        assert!(!one.is_empty());
        for hash in [0, 999, 1000, 1001, u64::MAX] {
            assert_eq!(one.token_for(hash), Some(1000));
            assert_eq!(one.owner_of_hash(hash), Some(9));
        }
        assert_eq!(one.range_of(1000), Some((1000, 1000)));
        assert_eq!(one.ownership(), vec![(9, 1.0)]);
    }

    #[test]
    fn ranges_match_token_for() {
        let ring = small_ring();
        assert_eq!(ring.range_of(100), Some((400, 100)));
        assert_eq!(ring.range_of(200), Some((100, 200)));
        assert_eq!(ring.range_of(150), None);
        for hash in [0, 50, 100, 101, 150, 200, 250, 300, 350, 400, 401, u64::MAX] {
            let token = ring.token_for(hash).unwrap();
            let (start, end) = ring.range_of(token).unwrap();
            assert!(in_range(hash, start, end), "hash {hash}");
            for &(other, _) in ring.points() {
                if other != token {
                    let (s, e) = ring.range_of(other).unwrap();
                    assert!(!in_range(hash, s, e), "hash {hash} also in {other}");
                }
            }
        }
        assert!(in_range(5, 5, 5));
        assert!(!in_range(5, 5, 6) && in_range(6, 5, 6));
        assert!(in_range(u64::MAX, 10, 2) && in_range(0, 10, 2) && in_range(2, 10, 2));
        assert!(!in_range(3, 10, 2) && !in_range(10, 10, 2));
    }

    #[test]
    fn ownership_sums_to_one() {
        let ring = small_ring();
        // Node 1: (400, 100] wraps (2^64 - 300 hashes) plus (200, 300] (100 hashes).
        let shares = ring.ownership();
        let ids: Vec<u32> = shares.iter().map(|s| s.0).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(shares[1].1, 100.0 / HASH_SPACE as f64);
        assert_eq!(shares[2].1, 100.0 / HASH_SPACE as f64);
        let total: f64 = shares.iter().map(|s| s.1).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let exact = owned_by(ring.points());
        assert_eq!(exact, vec![(1, HASH_SPACE - 200), (2, 100), (3, 100)]);
    }

    #[test]
    fn preference_list_is_distinct_and_clockwise() {
        let ring = small_ring();
        assert_eq!(ring.preference_list(150, 3), vec![2, 1, 3]);
        assert_eq!(ring.preference_list(150, 2), vec![2, 1]);
        assert_eq!(ring.preference_list(150, 1), vec![2]);
        assert!(ring.preference_list(150, 0).is_empty());
        // From token 400: 400 (3), 100 (1), 200 (2), 300 (1 again, skipped).
        assert_eq!(ring.preference_list(350, 5), vec![3, 1, 2]);
        assert_eq!(ring.preference_list(u64::MAX, 9), vec![1, 2, 3]);
        // States do not matter: node 2 is down and still listed.
        assert_eq!(ring.preference_list(101, 1), vec![2]);
    }

    #[test]
    fn coordinator_is_the_first_preference_that_is_not_down() {
        let mut ring = small_ring();
        // Preference list of 150 is [2, 1, 3] and node 2 is down.
        assert_eq!(ring.coordinator(150), Some(1));
        assert_eq!(ring.coordinator(350), Some(3));
        ring.replicas = 1;
        assert_eq!(ring.coordinator(150), None);
        ring.set_state(2, NodeState::Up);
        assert_eq!(ring.coordinator(150), Some(2));
        assert_eq!(Ring::empty().coordinator(150), None);
    }

    #[test]
    fn new_normalises_and_try_new_rejects() {
        let ring = Ring::new(
            1,
            1,
            1,
            1,
            vec![
                entry(2, NodeState::Up, &[50, 10, 50]),
                entry(1, NodeState::Up, &[50, 20]),
                entry(2, NodeState::Down, &[99]),
            ],
        );
        let ids: Vec<u32> = ring.nodes().iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(ring.node(2).unwrap().tokens, vec![10, 50]);
        assert_eq!(ring.node(2).unwrap().state, NodeState::Up);
        // Token 50 is claimed twice: the lower id wins.
        assert_eq!(ring.points(), &[(10, 2), (20, 1), (50, 1)]);
        assert_eq!(ring.node(3), None);

        let ok = |nodes: Vec<NodeEntry>| Ring::try_new(1, 3, 2, 2, nodes);
        assert!(ok(vec![
            entry(1, NodeState::Up, &[1]),
            entry(2, NodeState::Up, &[2])
        ])
        .is_ok());
        let dup_id = ok(vec![
            entry(1, NodeState::Up, &[1]),
            entry(1, NodeState::Up, &[2]),
        ]);
        assert!(dup_id.unwrap_err().message.contains("id 1"));
        let dup_token = ok(vec![
            entry(1, NodeState::Up, &[7]),
            entry(2, NodeState::Up, &[7]),
        ]);
        assert!(dup_token.unwrap_err().message.contains("token 7"));
        for addr in [
            "",
            "host",
            ":80",
            "host:",
            "host:65536",
            "host:08",
            "a b:1",
            "h:+1",
        ] {
            let mut n = entry(1, NodeState::Up, &[1]);
            n.addr = addr.to_string();
            assert!(ok(vec![n]).is_err(), "{addr:?}");
        }
        for addr in ["h:0", "localhost:7000", "[::1]:65535", "10.1.2.3:1"] {
            let mut n = entry(1, NodeState::Up, &[1]);
            n.addr = addr.to_string();
            assert!(ok(vec![n]).is_ok(), "{addr:?}");
        }
        for (n, r, w) in [(0, 1, 1), (3, 0, 2), (3, 4, 2), (3, 2, 0), (3, 2, 4)] {
            let e = Ring::try_new(1, n, r, w, Vec::new()).unwrap_err();
            assert_eq!(e.code, ErrorCode::Internal);
        }
    }

    #[test]
    fn editing_nodes_rederives_tokens() {
        let mut ring = small_ring();
        ring.upsert_node(entry(4, NodeState::Joining, &[250, 150]));
        assert_eq!(ring.owner_of_hash(120), Some(4));
        assert_eq!(ring.owner_of_hash(160), Some(2));
        assert_eq!(ring.owner_of_hash(220), Some(4));
        assert_eq!(ring.owner_of_hash(260), Some(1));
        assert_eq!(ring.node(4).unwrap().tokens, vec![150, 250]);
        ring.upsert_node(entry(4, NodeState::Up, &[350]));
        assert_eq!(ring.owner_of_hash(120), Some(2));
        assert_eq!(ring.owner_of_hash(320), Some(4));
        assert!(ring.set_state(4, NodeState::Leaving));
        assert!(!ring.set_state(5, NodeState::Up));
        assert_eq!(ring.node(4).unwrap().state, NodeState::Leaving);
        let removed = ring.remove_node(4).unwrap();
        assert_eq!(removed.tokens, vec![350]);
        assert_eq!(ring, small_ring());
        assert_eq!(ring.remove_node(4), None);
    }

    /// A ring with random nodes and random unique tokens.
    pub(crate) fn arb_points() -> impl Strategy<Value = Vec<(Token, u32)>> {
        (
            prop::collection::btree_set(1u32..50, 1..7),
            prop::collection::btree_map(any::<u64>(), any::<prop::sample::Index>(), 1..40),
        )
            .prop_map(|(ids, tokens)| {
                let ids: Vec<u32> = ids.into_iter().collect();
                tokens
                    .into_iter()
                    .map(|(t, ix)| (t, *ix.get(&ids)))
                    .collect()
            })
    }

    fn ring_from_points(points: &[(Token, u32)]) -> Ring {
        let mut nodes: Vec<NodeEntry> = Vec::new();
        for &(t, id) in points {
            match nodes.iter_mut().find(|n| n.id == id) {
                Some(n) => n.tokens.push(t),
                None => nodes.push(entry(id, NodeState::Up, &[t])),
            }
        }
        Ring::new(1, 3, 2, 2, nodes)
    }

    proptest! {
        #[test]
        fn preference_list_matches_a_plain_walk(
            points in arb_points(),
            hash in any::<u64>(),
            n in 0usize..9,
        ) {
            let ring = ring_from_points(&points);
            let mut sorted = points.clone();
            sorted.sort_unstable();
            // Reference: rotate the sorted token list so that the owning token comes
            // first, then keep first occurrences.
            let start = sorted.iter().position(|p| p.0 >= hash).unwrap_or(0);
            sorted.rotate_left(start);
            let mut want: Vec<u32> = Vec::new();
            for (_, id) in sorted {
                if want.len() < n && !want.contains(&id) {
                    want.push(id);
                }
            }
            let got = ring.preference_list(hash, n);
            prop_assert_eq!(&got, &want);
            let table = ring.pref_table(n);
            prop_assert_eq!(table.get(hash), &want[..]);
            let mut distinct: Vec<u32> = ring.points().iter().map(|p| p.1).collect();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(got.len(), n.min(distinct.len()));
            if n > 0 {
                prop_assert_eq!(got.first().copied(), ring.owner_of_hash(hash));
            }
            let token = ring.token_for(hash).unwrap();
            let (s, e) = ring.range_of(token).unwrap();
            prop_assert!(in_range(hash, s, e));
        }

        #[test]
        fn ownership_is_exact(points in arb_points()) {
            let ring = ring_from_points(&points);
            let total: u128 = owned_by(ring.points()).iter().map(|o| o.1).sum();
            prop_assert_eq!(total, HASH_SPACE);
            let share: f64 = ring.ownership().iter().map(|o| o.1).sum();
            prop_assert!((share - 1.0).abs() < 1e-9);
        }
    }
}
