//! The simulated clients' controls: finding a client, pointing it at another
//! server, starting a request on it.

use super::*;

impl World {
    /// A client actor, if `id` is a live client.
    pub fn client(&self, id: ProcId) -> Option<&Client> {
        match self.procs[id].actor.as_ref() {
            Some(Actor::Client(c)) => Some(c),
            _ => None,
        }
    }

    /// Points client `id` at another server (takes effect at its next connect).
    pub fn client_retarget(&mut self, id: ProcId, target: SocketAddr) {
        if let Some(Actor::Client(c)) = self.procs[id].actor.as_mut() {
            if let Some(conn) = c.retarget(target) {
                self.inject(id, vec![Output::Close { conn }]);
            }
        }
    }

    /// Starts a request on client `id` now. Panics if `id` is not a live client.
    pub fn client_start(&mut self, id: ProcId, request: crate::sim::client::Request, key: Bytes) {
        let stamp = self.stamp();
        self.delivered += 1;
        let now = self.now;
        let mut out = std::mem::take(&mut self.scratch);
        match self.procs[id].actor.as_mut() {
            Some(Actor::Client(c)) => {
                c.clock = stamp;
                c.start(now, request, key, &mut out);
            }
            _ => panic!("process {id} is not a live client"),
        }
        for o in out.drain(..) {
            self.apply(id, o);
        }
        self.scratch = out;
        self.touched.insert(id);
        self.end_turn();
    }
}
