//! The model of TCP between simulated processes: connection set-up, byte
//! delivery in order per direction (split and delayed by the seed), FIN, reset,
//! and what each end hands its process, through the reactor's own [`ConnBuf`].

use super::{Chunk, Conn, End, Ev, Pipe, ProcId, ProcState, World};
use crate::reactor::{ConnBuf, ConnId, Input, Marks};
use crate::sim::rng::hash;
use bytes::Bytes;
use std::cmp::Reverse;

impl World {
    pub(super) fn on_syn(&mut self, from: ProcId, life: u32, tag: u64, to: ProcId, n: u64) {
        if self.procs[from].life != life || self.procs[from].actor.is_none() {
            return;
        }
        let target = &self.procs[to];
        let refused = !target.listens
            || matches!(target.state, ProcState::Crashed | ProcState::Exited)
            || target.actor.is_none();
        if refused {
            let d = self.delay(1, from as u64, to as u64, n);
            self.at(self.now + d, Ev::Refused { from, life, tag });
            return;
        }
        if self.is_cut(from, to) {
            let t = self.now + self.net.connect_timeout;
            self.at(t, Ev::Refused { from, life, tag });
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let idx = (conn * 2) as u32;
        let mk = |proc: ProcId, life: u32, id: ConnId, max_payload: u32| End {
            proc,
            life,
            id,
            told: false,
            announced: false,
            buf: ConnBuf::new(max_payload, Marks::NONE),
            rst_in: false,
            fin_sent: false,
            gone: false,
            rst_sent: false,
            tag,
        };
        let caller = mk(from, life, ConnId::new(idx, 1), self.net.member_max_payload);
        let callee = mk(
            to,
            self.procs[to].life,
            ConnId::new(idx + 1, 1),
            self.net.max_payload,
        );
        let (cid, tid) = (caller.id, callee.id);
        self.conns.insert(
            conn,
            Conn {
                ends: [caller, callee],
                pipes: [Pipe::default(), Pipe::default()],
            },
        );
        self.procs[from].conns.insert(cid, (conn, 0));
        self.procs[to].conns.insert(tid, (conn, 1));
        self.deliver(
            to,
            Input::Accepted {
                conn: tid,
                listener: 0,
            },
        );
        let d = self.delay(2, conn, 0, 0);
        self.at(self.now + d, Ev::Established { conn });
    }

    pub(super) fn send_bytes(&mut self, p: ProcId, conn: ConnId, bytes: Bytes) {
        let Some((c, e)) = self.lookup(p, conn) else {
            return;
        };
        let end = &self.conns[&c].ends[e];
        if end.gone || end.fin_sent {
            return;
        }
        self.push_chunk(c, e, Chunk::Data(bytes));
    }

    /// Puts a chunk on direction `dir` of connection `c`, in order after the rest.
    pub(super) fn push_chunk(&mut self, c: u64, dir: usize, chunk: Chunk) {
        let now = self.now;

        let n = self.conns[&c].pipes[dir].sent;
        let d = self.delay(4, c, dir as u64, n);
        let split = hash(self.seed, &[5, c, dir as u64, n]);
        let pipe = &mut self.conns.get_mut(&c).expect("caller checked").pipes[dir];
        pipe.sent += 1;
        let mut at = (now + d).max(pipe.last);
        match chunk {
            Chunk::Data(b)
                if b.len() >= 2
                    && (split >> 40) as f64 / (1u64 << 24) as f64 <= self.net.split_chance =>
            {
                let cut = 1 + (split as usize % (b.len() - 1));
                pipe.chunks.push_back((at, Chunk::Data(b.slice(..cut))));
                self.queue.push(Reverse((at, Ev::Arrive { conn: c, dir })));
                at += 1 + (split >> 20) % 20;
                pipe.chunks.push_back((at, Chunk::Data(b.slice(cut..))));
            }
            chunk => pipe.chunks.push_back((at, chunk)),
        }
        pipe.last = at;
        self.queue.push(Reverse((at, Ev::Arrive { conn: c, dir })));
    }

    pub(super) fn send_fin(&mut self, c: u64, e: usize) {
        let Some(end) = self.end_mut(c, e) else {
            return;
        };
        if end.gone || end.fin_sent {
            return;
        }
        end.fin_sent = true;
        let fin_in = end.buf.eof_seen();
        self.push_chunk(c, e, Chunk::Fin);
        if fin_in {
            self.at(self.now, Ev::Remove { conn: c, end: e });
        }
    }

    pub(super) fn on_arrive(&mut self, c: u64, dir: usize) {
        let r = 1 - dir;
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        if self.is_cut(conn.ends[dir].proc, conn.ends[r].proc) {
            return; // held until the partition heals
        }
        let now = self.now;
        let mut reply_rst = false;
        let conn = self.conns.get_mut(&c).expect("checked");
        while conn.pipes[dir]
            .chunks
            .front()
            .is_some_and(|(at, _)| *at <= now)
        {
            let (_, chunk) = conn.pipes[dir].chunks.pop_front().expect("checked");

            let end = &mut conn.ends[r];
            match chunk {
                Chunk::Data(b) => {
                    if end.gone {
                        if !end.rst_sent {
                            end.rst_sent = true;
                            reply_rst = true;
                        }
                    } else if !end.rst_in {
                        // After a reset nothing more is read: the bytes that
                        // were in flight when it happened are lost, so what the
                        // peer sent later would follow a gap in the stream.
                        end.buf.push_input(&b);
                    }
                }
                Chunk::Fin => end.buf.set_eof(),
                Chunk::Rst => end.rst_in = true,
            }
        }
        let gone = conn.ends[r].gone;
        if reply_rst && !conn.ends[dir].gone {
            self.push_chunk(c, r, Chunk::Rst);
        }
        if !gone {
            self.pump(c, r);
        }
    }

    /// Delivers what end `e` of connection `c` can take now.
    pub(super) fn pump(&mut self, c: u64, e: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&c) else {
                return;
            };
            let end = &mut conn.ends[e];
            if end.gone || !end.announced || self.procs[end.proc].state != ProcState::Up {
                return;
            }
            let (p, id) = (end.proc, end.id);
            if end.buf.closing() {
                if end.buf.eof_seen() && end.fin_sent {
                    self.remove_end(c, e, true);
                }
                return;
            }
            if end.buf.held() && !end.rst_in {
                return;
            }
            if let Some(input) = end.buf.next_input(id) {
                self.deliver(p, input);
                continue;
            }
            if end.rst_in {
                self.remove_end(c, e, true);
            } else if let Some(eof) = end.buf.take_eof(id) {
                self.deliver(p, eof);
            }
            return;
        }
    }

    /// Removes end `e` of connection `c` from its process, telling the process
    /// (`Closed`, or `ConnectFailed` if it never heard of the connection).
    pub(super) fn remove_end(&mut self, c: u64, e: usize, notify: bool) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        let end = &mut conn.ends[e];
        if end.gone {
            return;
        }
        end.gone = true;
        let (p, id, told, tag, life) = (end.proc, end.id, end.told, end.tag, end.life);
        let both = conn.ends[1 - e].gone;
        if both {
            self.conns.remove(&c);
        }
        if self.procs[p].life != life {
            return;
        }
        self.procs[p].conns.remove(&id);
        if notify {
            if told {
                self.deliver(p, Input::Closed { conn: id });
            } else if e == 0 {
                self.deliver(p, Input::ConnectFailed { tag });
            }
        }
    }
}
