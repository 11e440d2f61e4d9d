//! What a driver knows about the keys it wrote, and the verify phase that reads
//! them back and counts what was lost.

use super::{Driver, Kind, Pending, VERIFY_PIPELINE};
use crate::load::keys::Known;
use crate::load::spec::Op;
use crate::load::wire::{self, Outcome, Space};

/// What the verify phase found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyCounts {
    /// Keys read back.
    pub checked: u64,
    /// Written, acknowledged, and now absent.
    pub missing: u64,
    /// Present with other bytes than the last acknowledged write.
    pub wrong: u64,
    /// Deleted (acknowledged), yet present.
    pub undeleted: u64,
    /// Could not be read back (an error reply, no connection).
    pub errors: u64,
    /// Not checked: the last write's outcome is unknown (`ERR UNKNOWN`, no
    /// reply), so a read-back may find either value.
    pub unknown: u64,
    /// Inconsistencies seen live by a key's owner (see [`crate::load::keys::KeyBook::anomalies`]).
    pub anomalies: u64,
}

/// Error codes that say a write was applied nowhere (gtstore's `UNAVAILABLE`,
/// and `STALE`, a redirect): the key keeps what it held. Every other error,
/// `UNKNOWN` and the generator's own `TIMEOUT` (no reply) included, leaves the
/// key's value unknown.
const APPLIED_NOWHERE: [&str; 2] = ["UNAVAILABLE", "STALE"];

impl VerifyCounts {
    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &VerifyCounts) {
        self.checked += o.checked;
        self.missing += o.missing;
        self.wrong += o.wrong;
        self.undeleted += o.undeleted;
        self.errors += o.errors;
        self.unknown += o.unknown;
        self.anomalies += o.anomalies;
    }

    /// Keys found lost or damaged.
    pub fn lost(&self) -> u64 {
        self.missing + self.wrong + self.undeleted + self.anomalies
    }
}

impl Driver {
    /// The next key to verify, advancing the cursor.
    pub(super) fn next_verify(&mut self) -> Option<(Space, u32)> {
        let book = self.book.as_ref()?;
        loop {
            let (space, slot) = self.verify_cursor;
            if slot >= book.slots() {
                if space == Space::Data {
                    self.verify_cursor = (Space::Counter, 0);
                    continue;
                }
                return None;
            }
            self.verify_cursor.1 += 1;
            let key = book.key_of_slot(slot);
            if book.verifiable(space, slot) {
                if let Some(k) = key {
                    return Some((space, k));
                }
            } else if key.is_some() && book.uncertain(space, slot) {
                self.verify.unknown += 1;
            }
        }
    }

    pub(super) fn fill_verify(&mut self, c: usize) {
        let sh = self.sh.clone();
        let depth = sh.s.pipeline.max(VERIFY_PIPELINE);
        while self.clients[c].inflight < depth {
            let Some((space, key)) = self.next_verify() else {
                self.verify_done = true;
                return;
            };
            let Some((l, share)) = self.route(c, space, Some(key)) else {
                self.verify.errors += 1;
                continue;
            };
            let t = match space {
                Space::Data => &sh.templates.get,
                Space::Counter => &sh.templates.get_counter,
            };
            self.push_request(l, t, key, &[0; wire::TAG_LEN]);
            self.links[l].pending.push_back(Pending {
                op: Op::Get,
                kind: Kind::Verify(space),
                key,
                counter: 0,
                share: share as u32,
                sent_ns: 0,
                hops: 0,
            });
            self.clients[c].inflight += 1;
            self.inflight += 1;
        }
    }

    /// What an owner's acknowledged (or failed) write says its key now holds.
    /// A write refused as applied nowhere leaves the key as it was; one whose
    /// outcome is unknown makes the key unknown (and counted as such).
    pub(super) fn record_write(&mut self, p: &Pending, outcome: &Outcome) {
        let Some(book) = &mut self.book else {
            return;
        };
        let space = match p.op {
            Op::Incr => Space::Counter,
            _ => Space::Data,
        };
        if let Outcome::Error(code) = outcome {
            let nowhere = APPLIED_NOWHERE.contains(&code.as_str());
            book.set_uncertain(space, p.key, !nowhere);
            if !nowhere {
                match space {
                    Space::Counter => book.set_count(p.key, None),
                    Space::Data => book.set(p.key, Known::Unknown),
                }
            }
            return;
        }
        book.set_uncertain(space, p.key, false);
        if p.op == Op::Incr {
            let next = match (book.count(p.key), outcome) {
                (before, Outcome::Counter(v)) => {
                    if before.is_some_and(|b| b.checked_add(1) != Some(*v)) {
                        book.anomalies += 1;
                    }
                    Some(*v)
                }
                (before, Outcome::Miss) => {
                    book.anomalies += u64::from(before.is_some());
                    None
                }
                _ => None,
            };
            book.set_count(p.key, next);
            return;
        }
        let before = book.known(p.key);
        let present = matches!(before, Known::Present(_));
        let absent = before == Known::Absent;
        let after = match (p.op, outcome) {
            (Op::Put, Outcome::Ok) => Known::Present(p.counter),
            (Op::Create, Outcome::Ok) => {
                book.anomalies += u64::from(present);
                Known::Present(p.counter)
            }
            (Op::Create, Outcome::Conflict) => {
                book.anomalies += u64::from(absent);
                before
            }
            (Op::Update, Outcome::Ok) => {
                book.anomalies += u64::from(absent);
                Known::Present(p.counter)
            }
            (Op::Update, Outcome::Miss) | (Op::Del, Outcome::Miss) => {
                book.anomalies += u64::from(present);
                Known::Absent
            }
            (Op::Del, Outcome::Ok) => {
                book.anomalies += u64::from(absent);
                Known::Absent
            }
            _ => Known::Unknown,
        };
        book.set(p.key, after);
    }

    /// Compares a read-back with what the key's owner knows.
    pub(super) fn check(&mut self, space: Space, key: u32, outcome: &Outcome, value: &[u8]) {
        let Some(book) = &self.book else {
            return;
        };
        let v = &mut self.verify;
        v.checked += 1;
        match space {
            Space::Counter => {
                let want = book.count(key);
                match outcome {
                    Outcome::Value(_) => {
                        let got = crate::protocol::kv::parse_i64(value.trim_ascii_end());
                        if got != want {
                            v.wrong += 1;
                        }
                    }
                    Outcome::Miss => v.missing += 1,
                    _ => v.errors += 1,
                }
            }
            Space::Data => match (book.known(key), outcome) {
                (Known::Present(c), Outcome::Value(_)) => {
                    let s = &self.sh.s;
                    let len = self.sh.sizes[wire::size_index(s.seed, key, c, self.sh.sizes.len())];
                    wire::expected_value(s.seed, key, c, len, &mut self.scratch);
                    if value != &self.scratch[..] {
                        v.wrong += 1;
                    }
                }
                (Known::Present(_), Outcome::Miss) => v.missing += 1,
                (Known::Absent, Outcome::Miss) => {}
                (Known::Absent, Outcome::Value(_)) => v.undeleted += 1,
                _ => v.errors += 1,
            },
        }
    }
}
