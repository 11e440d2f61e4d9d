//! Concurrent clients for the partition suite, and the history they record.
//!
//! Each client is a thread inside the clients' namespace (see [`super::Net::within`])
//! that sends one request at a time, each to a storage node picked at random
//! (every node is a contact node: it forwards to the key's coordinator), over a
//! connection per node kept open between requests. Two kinds of keys:
//! - shared keys (`reg*` registers with PUT, GET and CREATE; `ctr*` counters
//!   with INCR, GET and CREATE of `0`), whose every operation is recorded with
//!   its invoke and complete times as a [`Record`] for the linearizability
//!   checker;
//! - fresh keys, written once each (`u/CLIENT/SEQ`), whose acknowledged writes
//!   are read back after the partition heals.
//!
//! An operation with no reply in [`OP_TIMEOUT`] (or a broken connection once it
//! was sent) is recorded as `NoReply`, and the client drops that connection, so
//! a late reply is never matched to a later request. A request whose connection
//! could not be opened is `NotSent`, and the checker leaves it out; it takes a
//! `NoReply` write, and one answered with any `ERR` but `NOTINT`, as a write
//! that may or may not have happened. [`prune_unobserved`] removes those of
//! them that cannot change the verdict before the check;
//! [`drop_unavailable_writes`] removes the writes answered `ERR UNAVAILABLE`,
//! for a check that takes that code as "applied nowhere"; [`tally`] counts
//! outcomes for the reports.

use bytes::Bytes;
use gtstore::client::Connection;
use gtstore::protocol::op;
use gtstore::sim::{Outcome, Record, Request};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client waits for a reply (or a connect) before giving up.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1000);

/// Pause between one client's requests: keeps histories short enough to check.
pub const PACE: Duration = Duration::from_millis(5);

/// Shared register keys.
///
/// A write that fails or gets no reply may or may not have happened, and each
/// one pending multiplies the orders the checker has to try for its key: the
/// shared operations are spread over enough keys to keep that small.
pub const REGISTERS: [&str; 6] = ["reg0", "reg1", "reg2", "reg3", "reg4", "reg5"];

/// Shared counter keys. Pending INCRs blow the search up fastest (every subset
/// of them gives a count some read may match), so they are spread the widest.
pub const COUNTERS: [&str; 10] = [
    "ctr0", "ctr1", "ctr2", "ctr3", "ctr4", "ctr5", "ctr6", "ctr7", "ctr8", "ctr9",
];

/// What one client did.
#[derive(Default)]
pub struct ClientLog {
    /// Operations on shared keys.
    pub records: Vec<Record>,
    /// Fresh keys whose PUT was acknowledged, with their values.
    pub acked: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Counters every client bumps, read by the test to wait for progress.
#[derive(Default)]
pub struct Progress {
    /// Operations answered with a success reply (OK, VALUE, NOT_FOUND, CONFLICT).
    pub answered: AtomicUsize,
    /// Operations that ended any way at all.
    pub finished: AtomicUsize,
}

/// A small xorshift generator: each client's choices come from its own seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The nanoseconds from `start` to now: the history's clock (one `Instant`
/// clock for every thread, so real-time order across clients is exact).
pub fn stamp(start: Instant) -> (u64, u64) {
    (start.elapsed().as_nanos() as u64, 0)
}

/// A request as a wire frame's op and payload.
fn encode(request: &Request, key: &[u8]) -> (u8, Vec<u8>) {
    let f = request.frame(key, 0);
    (f.op, f.payload.to_vec())
}

/// The outcome a reply frame stands for.
fn outcome(op_code: u8, payload: Bytes) -> Outcome {
    match op_code {
        op::OK => Outcome::Ok,
        op::VALUE => Outcome::Value(payload),
        op::NOT_FOUND => Outcome::NotFound,
        op::CONFLICT => Outcome::Conflict,
        op::ERR => Outcome::Err(String::from_utf8_lossy(&payload).into_owned()),
        other => Outcome::Other(other, payload),
    }
}

/// One client: a connection to each node it has used, a random node per request.
pub struct Client {
    index: usize,
    nodes: Vec<String>,
    conns: Vec<Option<Connection>>,
    rng: Rng,
    start: Instant,
}

impl Client {
    /// Client `index` over the storage nodes `nodes` (`HOST:PORT`).
    pub fn new(index: usize, nodes: Vec<String>, start: Instant) -> Client {
        Client {
            conns: nodes.iter().map(|_| None).collect(),
            index,
            nodes,
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0x2545_F491)),
            start,
        }
    }

    /// Sends `request` for `key` to a random node and waits for the reply;
    /// records what happened.
    pub fn run(&mut self, key: &[u8], request: Request) -> Record {
        let target = self.rng.below(self.nodes.len() as u64) as usize;
        let mut rec = Record {
            client: self.index,
            key: Bytes::copy_from_slice(key),
            request: request.clone(),
            invoked: stamp(self.start),
            completed: None,
            outcome: Outcome::NotSent,
        };
        let slot = &mut self.conns[target];
        if slot.is_none() {
            match Connection::connect(&self.nodes[target], OP_TIMEOUT) {
                Ok(c) => *slot = Some(c),
                Err(_) => {
                    rec.completed = Some(stamp(self.start));
                    return rec;
                }
            }
        }
        let conn = slot.as_mut().expect("connected");
        let (o, payload) = encode(&request, key);
        conn.queue(o, 0, &[&payload]);
        match conn.flush().and_then(|()| conn.recv()) {
            Ok(f) => {
                rec.completed = Some(stamp(self.start));
                rec.outcome = outcome(f.op, f.payload);
            }
            Err(_) => {
                // A late reply must not be taken for the next request's.
                *slot = None;
                rec.outcome = Outcome::NoReply;
            }
        }
        rec
    }

    /// The next operation: a key, a request, and whether the key is a fresh one.
    fn pick(&mut self, seq: usize) -> (Vec<u8>, Request, bool) {
        let value = Bytes::from(format!("c{}-{seq}", self.index));
        let roll = self.rng.below(100);
        let reg = REGISTERS[self.rng.below(REGISTERS.len() as u64) as usize];
        let ctr = COUNTERS[self.rng.below(COUNTERS.len() as u64) as usize];
        let (key, request) = match roll {
            0..=24 => (reg, Request::Put(value)),
            25..=44 => (reg, Request::Get),
            45..=49 => (reg, Request::Create(value)),
            50..=55 => (ctr, Request::Incr(1)),
            56..=65 => (ctr, Request::Get),
            66..=67 => (ctr, Request::Create(Bytes::from_static(b"0"))),
            _ => {
                let fresh = format!("u/{}/{seq}", self.index).into_bytes();
                return (fresh, Request::Put(value), true);
            }
        };
        (key.as_bytes().to_vec(), request, false)
    }
}

/// Runs client `index` until `stop`, then returns its log.
pub fn client_loop(
    index: usize,
    nodes: Vec<String>,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> ClientLog {
    let mut client = Client::new(index, nodes, start);
    let mut log = ClientLog::default();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let (key, request, fresh) = client.pick(seq);
        let rec = client.run(&key, request.clone());
        let success = matches!(
            rec.outcome,
            Outcome::Ok | Outcome::Value(_) | Outcome::NotFound | Outcome::Conflict
        );
        if success {
            progress.answered.fetch_add(1, Ordering::Relaxed);
        }
        progress.finished.fetch_add(1, Ordering::Relaxed);
        if fresh {
            if let (Outcome::Ok, Request::Put(v)) = (&rec.outcome, &request) {
                log.acked.push((key, v.to_vec()));
            }
        } else {
            log.records.push(rec);
        }
        std::thread::sleep(PACE);
    }
    log
}

/// Whether the checker takes `r` as a write that may or may not have happened
/// (the rule of `gtstore::sim::linearizability`).
fn indeterminate(r: &Record) -> bool {
    match (&r.request, &r.outcome) {
        (Request::Incr(_), Outcome::Err(e)) if e.starts_with("NOTINT") => false,
        (Request::Get | Request::Other(_), _) | (_, Outcome::NotSent) => false,
        (_, Outcome::Err(_) | Outcome::NoReply | Outcome::Other(..)) => true,
        _ => r.completed.is_none(),
    }
}

/// Whether `r`'s outcome shows its key present (this workload never deletes,
/// so a key once present stays present).
fn shows_present(r: &Record) -> bool {
    matches!(
        (&r.request, &r.outcome),
        (Request::Put(_) | Request::Create(_), Outcome::Ok)
            | (Request::Create(_), Outcome::Conflict)
            | (_, Outcome::Value(_))
    )
}

/// Leaves out of `history` the indeterminate writes that cannot change any
/// verdict, and returns how many it left out. Each indeterminate write stays
/// pending to the end of the history, and every one multiplies the orders the
/// checker tries, so a long partition can put a key's history out of its reach.
///
/// Left out, on a key some operation had already shown present before the
/// write was sent (present for good: this workload never deletes):
/// - a PUT whose value no reply ever showed. Keys that get PUTs get no INCR, so
///   such a PUT taking effect can only be seen by a GET returning its value (none
///   did) or a CREATE's CONFLICT (which the key's presence gives anyway): every
///   order with it is an order without it, and "never" is always allowed;
/// - a CREATE: on a present key it changes nothing.
pub fn prune_unobserved(history: Vec<Record>) -> (Vec<Record>, usize) {
    // Per key: the earliest completion of an op that showed it present, and every
    // value a reply showed.
    let mut present_at: BTreeMap<Bytes, u64> = BTreeMap::new();
    let mut seen: HashSet<(Bytes, Bytes)> = HashSet::new();
    for r in &history {
        if let (true, Some(done)) = (shows_present(r), r.completed) {
            let at = present_at.entry(r.key.clone()).or_insert(u64::MAX);
            *at = (*at).min(done.0);
        }
        if let Outcome::Value(v) = &r.outcome {
            seen.insert((r.key.clone(), v.clone()));
        }
    }
    let before = history.len();
    let kept: Vec<Record> = history
        .into_iter()
        .filter(|r| {
            let present = present_at.get(&r.key).is_some_and(|&t| t < r.invoked.0);
            let droppable = match &r.request {
                Request::Put(v) => !seen.contains(&(r.key.clone(), v.clone())),
                Request::Create(_) => true,
                _ => false,
            };
            !(indeterminate(r) && present && droppable)
        })
        .collect();
    let pruned = before - kept.len();
    (kept, pruned)
}

/// Leaves out of `history` every write answered `ERR UNAVAILABLE` (applied
/// nowhere, if that code is honest), and returns, for the failure message, the
/// PUTs among them whose value a reply showed anyway.
pub fn drop_unavailable_writes(history: Vec<Record>) -> (Vec<Record>, Vec<String>) {
    let unavailable =
        |r: &Record| matches!(&r.outcome, Outcome::Err(e) if e.starts_with("UNAVAILABLE"));
    let seen: HashSet<_> = history
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Value(v) => Some((r.key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let applied = history
        .iter()
        .filter(|r| unavailable(r))
        .filter_map(|r| match &r.request {
            Request::Put(v) if seen.contains(&(r.key.clone(), v.clone())) => Some(format!(
                "c{} [{} ..] PUT {} {} -> {}",
                r.client,
                r.invoked.0,
                String::from_utf8_lossy(&r.key),
                String::from_utf8_lossy(v),
                r.outcome
            )),
            _ => None,
        })
        .collect();
    let kept = history
        .into_iter()
        .filter(|r| !(r.request.is_write() && unavailable(r)))
        .collect();
    (kept, applied)
}

/// Outcomes (as the history shows them) that are replies of a working store.
pub const SUCCESS: [&str; 4] = ["OK", "VALUE", "NOT_FOUND", "CONFLICT"];

/// Counts outcomes by kind: `OK`, `VALUE`, `ERR CODE`, `NO_REPLY`, ...
pub fn tally<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for r in records {
        let kind = match &r.outcome {
            Outcome::Value(_) => "VALUE".to_string(),
            o => o.to_string(),
        };
        *t.entry(kind).or_insert(0) += 1;
    }
    t
}
