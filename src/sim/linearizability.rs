//! A linearizability checker for per-key histories of gtstore operations.
//!
//! Each key is a register whose state is "absent" or a value. Keys are
//! independent (linearizability is compositional), so a history is split by key
//! and each part is checked alone. The model, per op and outcome:
//!
//! | op | outcome | allowed when | new state |
//! |---|---|---|---|
//! | PUT v | OK | always | v |
//! | GET | VALUE v / NOT_FOUND | state is v / absent | unchanged |
//! | DELETE | OK / NOT_FOUND | present / absent | absent |
//! | CREATE v | OK / CONFLICT | absent / present | v / unchanged |
//! | UPDATE v | OK / NOT_FOUND | present / absent | v / unchanged |
//! | INCR d | VALUE n | absent (0) or a decimal c with c + d = n | n |
//! | INCR d | ERR NOTINT | not a decimal, or overflow | unchanged |
//!
//! A write refused with `ERR UNAVAILABLE` or `ERR TIMEOUT` was applied nowhere
//! (docs/protocol.md, "Error codes"), so it is left out like a request never
//! sent: the checker holds the nodes to that promise. A write whose outcome is
//! unknown (no reply, `ERR UNKNOWN`, or any other `ERR` but `NOTINT`) is
//! *indeterminate*: it may
//! take effect at any point after it was sent, or never, and whichever way it
//! went it does what the model says for the state it meets (an indeterminate
//! CREATE writes only if the key is absent). It gets a completion time of
//! infinity, and "never" is the same as "last". Reads with no answer, requests
//! that were never sent, and non-key requests are left out.
//!
//! The search is Wing & Gong's, with Lowe's memoization (as popularized by
//! Porcupine): walk the events in time order; at a call, try to linearize that op
//! now (the model must allow it) and move on; at a return whose op is not yet
//! linearized, undo the last choice. A cache of (set of linearized ops, state)
//! pairs already explored cuts the exponential blow-up in practice. The search is
//! bounded by [`Limits::steps`]: a history that needs more is reported as
//! [`Verdict::TooLong`], never as a pass.
//!
//! Times are [`Stamp`]s, points in the simulation's total order of events, so
//! "completed before invoked" is exact even inside one virtual millisecond.

use super::client::{Outcome, Record, Request, Stamp};
use crate::protocol::ErrorCode;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};

/// Bounds on the search.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Search steps allowed per key before giving up with `TooLong`.
    pub steps: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { steps: 2_000_000 }
    }
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not; the text shows the history.
    Violation {
        /// The key.
        key: Bytes,
        /// The key's operations, one per line.
        history: String,
    },
    /// The search for this key ran out of steps: nothing is known.
    TooLong {
        /// The key.
        key: Bytes,
        /// Operations in its history.
        ops: usize,
    },
}

/// What an op is known to have returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    /// The reply, as recorded.
    Reply(Outcome),
    /// Unknown: may or may not have happened.
    Unknown,
}

#[derive(Clone, Debug)]
struct Op {
    request: Request,
    known: Known,
    invoked: Stamp,
    /// `None`: indeterminate (returns at infinity).
    completed: Option<Stamp>,
}

type State = Option<Bytes>;

fn parse_i64(v: &[u8]) -> Option<i64> {
    crate::protocol::kv::parse_i64(v)
}

/// The model: the state after `op` from `s`, or `None` if `op` cannot happen there.
fn apply(s: &State, op: &Op) -> Option<State> {
    use Outcome as O;
    let unknown = op.known == Known::Unknown;
    let reply = match &op.known {
        Known::Reply(r) => Some(r),
        Known::Unknown => None,
    };
    match &op.request {
        Request::Put(v) => match reply {
            None | Some(O::Ok) => Some(Some(v.clone())),
            _ => None,
        },
        Request::Get => match reply? {
            O::Value(v) if s.as_ref() == Some(v) => Some(s.clone()),
            O::NotFound if s.is_none() => Some(None),
            _ => None,
        },
        Request::Delete => match reply {
            None => Some(None),
            Some(O::Ok) if s.is_some() => Some(None),
            Some(O::NotFound) if s.is_none() => Some(None),
            _ => None,
        },
        Request::Create(v) => match reply {
            None if s.is_none() => Some(Some(v.clone())),
            None => Some(s.clone()),
            Some(O::Ok) if s.is_none() => Some(Some(v.clone())),
            Some(O::Conflict) if s.is_some() => Some(s.clone()),
            _ => None,
        },
        Request::Update(v) => match reply {
            None if s.is_some() => Some(Some(v.clone())),
            None => Some(None),
            Some(O::Ok) if s.is_some() => Some(Some(v.clone())),
            Some(O::NotFound) if s.is_none() => Some(None),
            _ => None,
        },
        Request::Incr(d) => {
            let current = match s {
                None => Some(0),
                Some(v) => parse_i64(v),
            };
            let next = current.and_then(|c| c.checked_add(*d));
            match (reply, next) {
                (_, Some(n)) if unknown => Some(Some(Bytes::from(n.to_string()))),
                (_, None) if unknown => Some(s.clone()),
                (Some(O::Value(v)), Some(n)) if parse_i64(v) == Some(n) => {
                    Some(Some(Bytes::from(n.to_string())))
                }
                (Some(O::Err(e)), None) if e.starts_with("NOTINT") => Some(s.clone()),
                _ => None,
            }
        }
        Request::Other(_) => Some(s.clone()),
    }
}

/// Whether an `ERR` payload promises its write was applied nowhere.
fn applied_nowhere(payload: &str) -> bool {
    let code = payload.split(' ').next().unwrap_or("");
    [ErrorCode::Unavailable, ErrorCode::Timeout]
        .iter()
        .any(|c| c.as_str() == code)
}

/// Turns a record into a checkable op, or `None` if it says nothing about state.
fn to_op(r: &Record) -> Option<Op> {
    let indeterminate = match (&r.request, &r.outcome) {
        (Request::Other(_), _) | (_, Outcome::NotSent) => return None,
        (Request::Get, Outcome::Value(_) | Outcome::NotFound) => false,
        (Request::Get, _) => return None,
        (Request::Incr(_), Outcome::Err(e)) if e.starts_with("NOTINT") => false,
        (_, Outcome::Err(e)) if applied_nowhere(e) => return None,
        (_, Outcome::Err(_) | Outcome::NoReply | Outcome::Other(..)) => true,
        _ => r.completed.is_none(),
    };
    Some(Op {
        request: r.request.clone(),
        known: if indeterminate {
            Known::Unknown
        } else {
            Known::Reply(r.outcome.clone())
        },
        invoked: r.invoked,
        completed: if indeterminate { None } else { r.completed },
    })
}

/// Checks every key of `history`.
pub fn check(history: &[Record], limits: Limits) -> Verdict {
    let mut by_key: BTreeMap<Bytes, Vec<&Record>> = BTreeMap::new();
    for r in history {
        by_key.entry(r.key.clone()).or_default().push(r);
    }
    let mut too_long = None;
    for (key, records) in by_key {
        let ops: Vec<Op> = records.iter().filter_map(|r| to_op(r)).collect();
        match search(&ops, limits) {
            Some(true) => {}
            Some(false) => {
                return Verdict::Violation {
                    key,
                    history: describe(&records),
                }
            }
            None => {
                too_long.get_or_insert(Verdict::TooLong {
                    key,
                    ops: ops.len(),
                });
            }
        }
    }
    too_long.unwrap_or(Verdict::Linearizable)
}

/// One line per record, in invocation order.
pub fn describe(records: &[&Record]) -> String {
    let mut rs = records.to_vec();
    rs.sort_by_key(|r| r.invoked);
    let mut text = String::new();
    for r in rs {
        let done = match r.completed {
            Some((t, s)) => format!("{t}.{s}"),
            None => "-".into(),
        };
        let what = match &r.request {
            Request::Put(v) => format!("PUT {}", String::from_utf8_lossy(v)),
            Request::Create(v) => format!("CREATE {}", String::from_utf8_lossy(v)),
            Request::Update(v) => format!("UPDATE {}", String::from_utf8_lossy(v)),
            Request::Incr(d) => format!("INCR {d}"),
            other => format!("{other:?}").to_uppercase(),
        };
        text.push_str(&format!(
            "  c{} [{}.{} .. {done}] {what} -> {}\n",
            r.client, r.invoked.0, r.invoked.1, r.outcome
        ));
    }
    text
}

const NIL: usize = usize::MAX;

/// One key's search. `Some(true)`: linearizable; `Some(false)`: not; `None`: too long.
fn search(ops: &[Op], limits: Limits) -> Option<bool> {
    if ops.is_empty() {
        return Some(true);
    }
    // Events: (time, is_return, op). Returns at infinity sort last; at equal stamps
    // calls come first (the more permissive reading).
    let mut events: Vec<(Stamp, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked, false, i));
        events.push((op.completed.unwrap_or((u64::MAX, u64::MAX)), true, i));
    }
    events.sort();
    // A doubly linked list over events, node 0 the head sentinel.
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    next[len - 1] = NIL;
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    prev[0] = NIL;
    let mut ret_of = vec![0usize; ops.len()];
    for (k, &(_, is_ret, i)) in events.iter().enumerate() {
        if is_ret {
            ret_of[i] = k + 1;
        }
    }
    let node = |k: usize| events[k - 1];
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        let (p, n) = (prev[k], next[k]);
        next[p] = n;
        if n != NIL {
            prev[n] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        let (p, n) = (prev[k], next[k]);
        next[p] = k;
        if n != NIL {
            prev[n] = k;
        }
    };
    let words = ops.len().div_ceil(64);
    let mut done = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut entry = next[0];
    let mut steps = 0u64;
    while next[0] != NIL {
        steps += 1;
        if steps > limits.steps {
            return None;
        }
        if entry == NIL {
            // Every remaining event is a return of an op not yet linearized.
            entry = next[0];
        }
        let (_, is_ret, i) = node(entry);
        if !is_ret {
            if let Some(s2) = apply(&state, &ops[i]) {
                done[i / 64] |= 1 << (i % 64);
                if cache.insert((done.clone(), s2.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, s2)));
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, ret_of[i]);
                    entry = next[0];
                    continue;
                }
                done[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            let Some((call, s0)) = stack.pop() else {
                return Some(false);
            };
            let (_, _, j) = node(call);
            state = s0;
            done[j / 64] &= !(1 << (j % 64));
            relink(&mut next, &mut prev, ret_of[j]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record by hand: client, request, [invoked, completed] (None = no reply).
    fn rec(client: usize, request: Request, at: (u64, Option<u64>), outcome: Outcome) -> Record {
        Record {
            client,
            key: Bytes::from_static(b"k"),
            request,
            invoked: (at.0, 0),
            completed: at.1.map(|t| (t, 0)),
            outcome,
        }
    }

    fn put(v: &'static str) -> Request {
        Request::Put(Bytes::from_static(v.as_bytes()))
    }

    fn val(v: &'static str) -> Outcome {
        Outcome::Value(Bytes::from_static(v.as_bytes()))
    }

    fn ok(h: &[Record]) -> bool {
        match check(h, Limits::default()) {
            Verdict::Linearizable => true,
            Verdict::Violation { .. } => false,
            v => panic!("unexpected {v:?}"),
        }
    }

    #[test]
    fn sequential_histories() {
        let h = [
            rec(0, Request::Get, (0, Some(1)), Outcome::NotFound),
            rec(0, put("a"), (2, Some(3)), Outcome::Ok),
            rec(1, Request::Get, (4, Some(5)), val("a")),
            rec(
                1,
                Request::Create(Bytes::from_static(b"b")),
                (6, Some(7)),
                Outcome::Conflict,
            ),
            rec(
                0,
                Request::Update(Bytes::from_static(b"5")),
                (8, Some(9)),
                Outcome::Ok,
            ),
            rec(0, Request::Incr(2), (10, Some(11)), val("7")),
            rec(1, Request::Delete, (12, Some(13)), Outcome::Ok),
            rec(1, Request::Delete, (14, Some(15)), Outcome::NotFound),
            rec(0, Request::Incr(-1), (16, Some(17)), val("-1")),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn stale_read_after_a_completed_write() {
        let h = [
            rec(0, put("1"), (0, Some(1)), Outcome::Ok),
            rec(0, put("2"), (2, Some(3)), Outcome::Ok),
            rec(1, Request::Get, (4, Some(5)), val("1")),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn lost_write_and_a_value_nobody_wrote() {
        let lost = [
            rec(0, put("1"), (0, Some(1)), Outcome::Ok),
            rec(1, Request::Get, (2, Some(3)), Outcome::NotFound),
        ];
        assert!(!ok(&lost));
        let invented = [
            rec(0, put("1"), (0, Some(1)), Outcome::Ok),
            rec(1, Request::Get, (0, Some(3)), val("zzz")),
        ];
        assert!(!ok(&invented));
        let bad_incr = [
            rec(0, put("4"), (0, Some(1)), Outcome::Ok),
            rec(0, Request::Incr(1), (2, Some(3)), val("6")),
        ];
        assert!(!ok(&bad_incr));
    }

    #[test]
    fn overlapping_ops_in_either_order() {
        for seen in [val("1"), Outcome::NotFound] {
            let h = [
                rec(0, put("1"), (0, Some(10)), Outcome::Ok),
                rec(1, Request::Get, (2, Some(3)), seen),
            ];
            assert!(ok(&h));
        }
        // Two concurrent writes: readers may see them in either order, but once
        // the second is seen, the first cannot come back.
        let base = || {
            vec![
                rec(0, put("1"), (0, Some(10)), Outcome::Ok),
                rec(1, put("2"), (0, Some(10)), Outcome::Ok),
            ]
        };
        let mut h = base();
        h.push(rec(2, Request::Get, (11, Some(12)), val("1")));
        h.push(rec(2, Request::Get, (13, Some(14)), val("1")));
        assert!(ok(&h));
        let mut h = base();
        h.push(rec(2, Request::Get, (1, Some(2)), val("2")));
        h.push(rec(2, Request::Get, (3, Some(4)), val("1")));
        assert!(ok(&h), "2 then 1, both inside the writes");
        let mut h = base();
        h.push(rec(2, Request::Get, (11, Some(12)), val("1")));
        h.push(rec(2, Request::Get, (13, Some(14)), val("2")));
        assert!(!ok(&h));
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_happen_but_only_once() {
        for seen in [val("1"), Outcome::NotFound] {
            let h = [
                rec(0, put("1"), (0, None), Outcome::NoReply),
                rec(1, Request::Get, (5, Some(6)), seen),
            ];
            assert!(ok(&h));
        }
        let h = [
            rec(0, put("1"), (0, None), Outcome::NoReply),
            rec(1, Request::Get, (5, Some(6)), val("1")),
            rec(1, Request::Get, (7, Some(8)), Outcome::NotFound),
        ];
        assert!(!ok(&h), "once seen, an unacknowledged write cannot vanish");
        let h = [
            rec(1, Request::Get, (0, Some(1)), val("1")),
            rec(0, put("1"), (2, None), Outcome::Err("UNKNOWN x".into())),
        ];
        assert!(!ok(&h), "nor take effect before it was sent");
    }

    #[test]
    fn unknown_may_have_happened_unavailable_did_not() {
        for (code, may) in [
            ("UNKNOWN", true),
            ("UNAVAILABLE", false),
            ("TIMEOUT", false),
        ] {
            let err = Outcome::Err(format!("{code} some words"));
            let h = [
                rec(0, put("1"), (0, Some(1)), err.clone()),
                rec(1, Request::Get, (5, Some(6)), val("1")),
            ];
            assert_eq!(ok(&h), may, "{code}");
            let h = [
                rec(0, Request::Incr(1), (0, Some(1)), err),
                rec(1, Request::Incr(1), (5, Some(6)), val("2")),
            ];
            assert_eq!(ok(&h), may, "{code}: an INCR counted");
        }
    }

    #[test]
    fn long_histories_are_reported_not_passed() {
        // Many concurrent writes and reads that force a wide search.
        let mut h = Vec::new();
        for i in 0..40u64 {
            let v = Bytes::from(format!("{i}"));
            h.push(rec(
                i as usize,
                Request::Put(v),
                (0, Some(100)),
                Outcome::Ok,
            ));
        }
        h.push(rec(50, Request::Get, (101, Some(102)), val("never")));
        match check(&h, Limits { steps: 10_000 }) {
            Verdict::TooLong { ops, .. } => assert_eq!(ops, 41),
            v => panic!("expected TooLong, got {v:?}"),
        }
    }
}
