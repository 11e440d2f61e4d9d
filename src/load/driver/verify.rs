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
    /// Inconsistencies seen live by a key's owner (see [`crate::load::keys::KeyBook::anomalies`]).
    pub anomalies: u64,
}

impl VerifyCounts {
    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &VerifyCounts) {
        self.checked += o.checked;
        self.missing += o.missing;
        self.wrong += o.wrong;
        self.undeleted += o.undeleted;
        self.errors += o.errors;
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
            if book.verifiable(space, slot) {
                if let Some(k) = book.key_of_slot(slot) {
                    return Some((space, k));
                }
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
    pub(super) fn record_write(&mut self, p: &Pending, outcome: &Outcome) {
        let Some(book) = &mut self.book else {
            return;
        };
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
