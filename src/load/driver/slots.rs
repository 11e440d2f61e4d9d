//! Redis Cluster: the thread's slot map, taken from the one fetched at the
//! start, and redirects: a request answered `-MOVED` or `-ASK` is sent again to
//! the node named, on the client's connection to it (opened if need be).

use super::{Driver, Kind, Pending, Routing};
use crate::load::cluster::{self, Redirect, SlotMap};
use crate::load::wire::{self, Outcome, Space};
use crate::reactor::Output;

/// Nodes a thread will know; a redirect to one more fails (a peer cannot make
/// the tool open connections without bound).
pub const MAX_NODES: usize = 1024;

/// `ASKING` in RESP.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

impl Driver {
    /// Learns the masters and the slot map, and connects every client to every master.
    pub(super) fn init_slots(&mut self, out: &mut Vec<Output>) {
        let sh = self.sh.clone();
        let map = sh.slots.as_ref().expect("slot routing has a slot map");
        let index: Vec<usize> = map
            .masters
            .iter()
            .map(|(label, addr)| self.node_index(label.clone(), *addr))
            .collect();
        self.slots = map
            .slots
            .iter()
            .map(|&m| match m {
                SlotMap::NONE => SlotMap::NONE,
                m => index[m as usize] as u16,
            })
            .collect();
        for c in 0..self.clients.len() {
            for &node in &index {
                self.ensure_link(c, node, out);
            }
        }
    }

    /// The redirect `reply` (a whole RESP error line, with CRLF) asks for, if any.
    pub(super) fn redirect_of(&self, outcome: &Outcome, reply: &[u8]) -> Option<Redirect> {
        if !matches!(self.sh.routing, Routing::Slots) {
            return None;
        }
        match outcome {
            Outcome::Error(code) if code == "MOVED" || code == "ASK" => {
                let line = reply.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
                cluster::parse_redirect(line)
            }
            _ => None,
        }
    }

    /// Sends `p`, answered with redirect `r` on link `l`, to the node `r` names.
    pub(super) fn redirect(
        &mut self,
        l: usize,
        mut p: Pending,
        r: Redirect,
        out: &mut Vec<Output>,
    ) {
        let c = self.links[l].client;
        let code = if r.ask { "ASK" } else { "MOVED" };
        let to = if r.to.starts_with(':') {
            // No host: the one this link reaches.
            let from = &self.nodes[self.links[l].node].label;
            let host = from.rsplit_once(':').map_or(from.as_str(), |(h, _)| h);
            format!("{host}{}", r.to)
        } else {
            r.to
        };
        let known = self.nodes.iter().position(|n| n.label == to);
        let node = match known {
            _ if p.hops >= super::MAX_REDIRECTS => None,
            Some(i) => Some(i),
            None if self.nodes.len() >= MAX_NODES => None,
            None => crate::load::resolve(&to)
                .ok()
                .map(|addr| self.node_index(to, addr)),
        };
        let Some(node) = node else {
            let now = self.now_ns();
            return self.complete(c, p, &Outcome::Error(code.into()), &[], now);
        };
        p.hops += 1;
        if r.ask {
            self.stats.asked += 1;
        } else {
            self.stats.moved += 1;
            self.slots[r.slot as usize] = node as u16;
        }
        self.ensure_link(c, node, out);
        let t = self.clients[c].links[node].expect("ensure_link made one");
        if r.ask {
            self.push_bytes(t, ASKING);
            self.links[t].pending.push_back(Pending {
                kind: Kind::Asking,
                op: crate::load::spec::Op::Ping,
                hops: 0,
                ..p
            });
        }
        self.emit_again(t, &p);
        if matches!(p.kind, Kind::Warmup | Kind::Measured) {
            p.share = node as u32;
        }
        self.links[t].pending.push_back(p);
    }

    /// Appends `bytes` to link `l`'s output.
    fn push_bytes(&mut self, l: usize, bytes: &[u8]) {
        let link = &mut self.links[l];
        link.out.extend_from_slice(bytes);
        if !link.dirty {
            link.dirty = true;
            self.dirty.push(l);
        }
    }

    /// Encodes request `p` again onto link `l`.
    fn emit_again(&mut self, l: usize, p: &Pending) {
        let sh = self.sh.clone();
        let none = [0; wire::TAG_LEN];
        match p.kind {
            Kind::Verify(Space::Data) => self.push_request(l, &sh.templates.get, p.key, &none),
            Kind::Verify(Space::Counter) => {
                self.push_request(l, &sh.templates.get_counter, p.key, &none)
            }
            Kind::Warmup | Kind::Measured => {
                let s = &sh.s;
                let size = wire::size_index(s.seed, p.key, p.counter, sh.sizes.len());
                let tag = if p.op.has_value() {
                    wire::value_tag(s.seed, p.key, p.counter)
                } else {
                    none
                };
                self.push_request(l, sh.templates.of(p.op, size), p.key, &tag);
            }
            Kind::Asking => {}
        }
    }
}
