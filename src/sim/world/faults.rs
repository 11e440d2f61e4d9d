//! Faults the world can inject: crashes and restarts, pauses (SIGSTOP), signals,
//! partitions and connection resets.

use super::{Chunk, Ev, ProcId, ProcState, World};
use crate::reactor::{Input, Millis, Signal};

impl World {
    /// The process dies: its connections close (FIN on exit, reset on a crash).
    pub(super) fn exit(&mut self, p: ProcId, state: ProcState) {
        let conns = std::mem::take(&mut self.procs[p].conns);
        for (_, (c, e)) in conns {
            let Some(end) = self.end_mut(c, e) else {
                continue;
            };
            if end.gone {
                continue;
            }
            end.gone = true;
            let fin_sent = end.fin_sent;
            let other_gone = self.conns[&c].ends[1 - e].gone;
            if other_gone {
                self.conns.remove(&c);
                continue;
            }
            match state {
                ProcState::Exited if !fin_sent => self.push_chunk(c, e, Chunk::Fin),
                ProcState::Exited => {}
                _ => self.push_chunk(c, e, Chunk::Rst),
            }
        }
        let proc = &mut self.procs[p];
        proc.actor = None;
        proc.state = state;
        proc.life += 1;
        proc.stalled.clear();
        proc.fins.clear();
        proc.stopping = false;
        self.touched.remove(&p);
    }

    /// Crashes process `p`: its state is lost and its connections reset.
    pub fn crash(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## crash {}", w.now, w.procs[p].name));
        if self.procs[p].actor.is_some() {
            self.exit(p, ProcState::Crashed);
        }
    }

    /// Restarts a crashed or exited process with a fresh actor from its factory.
    pub fn restart(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## restart {}", w.now, w.procs[p].name));
        let proc = &mut self.procs[p];
        if proc.actor.is_some() {
            return;
        }
        proc.actor = Some((proc.factory)());
        proc.state = ProcState::Up;
        let life = proc.life;
        self.at(
            self.now,
            Ev::Timer {
                proc: p,
                life,
                id: 0,
            },
        );
    }

    /// Pauses process `p` (SIGSTOP).
    pub fn pause(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## pause {}", w.now, w.procs[p].name));
        if self.procs[p].state == ProcState::Up {
            self.procs[p].state = ProcState::Paused;
        }
    }

    /// Resumes a paused process (SIGCONT): what waited is delivered now.
    pub fn resume(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## resume {}", w.now, w.procs[p].name));
        if self.procs[p].state != ProcState::Paused {
            return;
        }
        self.procs[p].state = ProcState::Up;
        while let Some(input) = self.procs[p].stalled.pop_front() {
            self.deliver(p, input);
            if self.procs[p].state != ProcState::Up {
                break;
            }
        }
        let ends: Vec<(u64, usize)> = self.procs[p].conns.values().copied().collect();
        for (c, e) in ends {
            self.pump(c, e);
        }
        self.end_turn();
    }

    /// Delivers a signal to process `p` now.
    pub fn signal(&mut self, p: ProcId, sig: Signal) {
        self.deliver(p, Input::Signal(sig));
        self.end_turn();
    }

    /// Cuts the network between every two of `groups` (processes in no group keep
    /// talking to everyone). With `reset_after`, connections still cut after that
    /// many ms are reset, as TCP gives up retransmitting.
    pub fn partition(&mut self, groups: &[Vec<ProcId>], reset_after: Option<Millis>) {
        self.trace_line(|w| {
            let names: Vec<Vec<&str>> = groups
                .iter()
                .map(|g| g.iter().map(|&q| w.procs[q].name.as_str()).collect())
                .collect();
            format!("{:>7} ## partition {names:?} reset {reset_after:?}", w.now)
        });
        for (i, g) in groups.iter().enumerate() {
            for h in &groups[i + 1..] {
                for &a in g {
                    for &b in h {
                        if a != b {
                            self.cuts.insert((a.min(b), a.max(b)));
                        }
                    }
                }
            }
        }
        self.cut_generation += 1;
        if let Some(ms) = reset_after {
            let generation = self.cut_generation;
            self.at(self.now + ms, Ev::CutReset { generation });
        }
    }

    /// Whether any cut is in place.
    pub fn partitioned(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Removes every cut; held bytes flow again.
    pub fn heal(&mut self) {
        self.trace_line(|w| format!("{:>7} ## heal", w.now));
        self.cuts.clear();
        self.cut_generation += 1;
        let mut wake = Vec::new();
        for (&c, conn) in &self.conns {
            for dir in 0..2 {
                if let Some((at, _)) = conn.pipes[dir].chunks.front() {
                    wake.push((*at, c, dir));
                }
            }
        }
        for (at, conn, dir) in wake {
            self.at(at.max(self.now + 1), Ev::Arrive { conn, dir });
        }
    }

    /// Numbers of the live connections, for picking one to reset.
    pub fn connection_numbers(&self) -> Vec<u64> {
        self.conns.keys().copied().collect()
    }

    /// Resets every connection between processes `a` and `b`.
    pub fn reset_between(&mut self, a: ProcId, b: ProcId) {
        let between: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let (x, y) = (c.ends[0].proc, c.ends[1].proc);
                (x, y) == (a, b) || (x, y) == (b, a)
            })
            .map(|(n, _)| *n)
            .collect();
        for c in between {
            self.reset(c);
        }
    }

    /// Resets connection `c`: bytes in flight are lost, and each end whose
    /// process is still there gets `Closed`, even when the other end's process
    /// is gone (its FIN or RST in flight is lost with the rest, and the reset
    /// stands for it: the live end learns the connection broke).
    pub fn reset(&mut self, c: u64) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let (a, b) = (conn.ends[0].proc, conn.ends[1].proc);
        self.trace_line(|w| {
            let (a, b) = (&w.procs[a].name, &w.procs[b].name);
            format!("{:>7} ## reset connection {c} {a}-{b}", w.now)
        });
        let conn = self.conns.get_mut(&c).expect("checked");
        for p in conn.pipes.iter_mut() {
            p.chunks.clear();
        }
        for e in 0..2 {
            // Towards end 1 - e, from end e whether or not its process lives.
            if !self.conns[&c].ends[1 - e].gone {
                self.push_chunk(c, e, Chunk::Rst);
            }
        }
    }
}
