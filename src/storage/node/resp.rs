//! The RESP front's hooks in the node (see [`super::super::resp`]): RESP
//! connections come from listener [`resp::LISTENER`]; the native requests
//! their commands become are served by `on_request` like any client's, and the
//! replies come back to the front through the gateway (see `gateway.rs`).

use super::*;
use crate::storage::gateway::Front;
use crate::storage::resp::{self, Item, NodeFacts};

impl StorageNode {
    /// Serves RESP2 on listener [`resp::LISTENER`], commands bounded by `limits`.
    pub fn enable_resp(&mut self, limits: crate::protocol::resp::Limits) {
        let mut front = RespFront::new(limits);
        if let Some(p) = self.client_auth.as_ref().map(|a| a.password()) {
            front.require_password(Bytes::from(p.to_string()));
        }
        self.resp = Some(front);
    }

    /// Takes the inputs that belong to the RESP front; returns the input when
    /// the rest of the node should see it.
    pub(super) fn resp_input(
        &mut self,
        now: Millis,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Option<Input> {
        let Some(front) = self.resp.as_mut() else {
            return Some(input);
        };
        match input {
            Input::Accepted { conn, listener } if listener == resp::LISTENER => {
                front.accept(now, conn, out);
                self.conns.order.gateway.open(conn, Front::Resp);
                None
            }
            Input::Data { conn, data } if front.has(conn) => {
                self.on_resp_data(now, conn, data, out);
                None
            }
            Input::Closed { conn } => {
                front.closed(conn);
                Some(input)
            }
            input => Some(input),
        }
    }

    /// Bytes from a RESP connection: serve the commands they complete, in order,
    /// until this step's replies to it reach [`resp::STEP_OUTPUT`]; the rest goes
    /// back to the reactor (`Output::Unread`), handed over again once the
    /// connection's output is below its high-water mark.
    fn on_resp_data(&mut self, now: Millis, conn: ConnId, data: BytesMut, out: &mut Vec<Output>) {
        let Some(front) = self.resp.as_mut() else {
            return;
        };
        front.set_ring(self.serving_pref.bounds());
        if !front.take_input(now, conn, data) {
            return out.push(Output::Close { conn });
        }
        let start = front.served(conn);
        let mut items = Vec::new();
        loop {
            let front = self.resp.as_mut().expect("checked");
            let more = front.next_command(conn, &mut items);
            self.serve_resp_items(now, conn, &mut items, out);
            // The command's replies, if it got them at once, count towards
            // this step's output.
            self.deliver(now, out);
            if !more {
                break;
            }
            let front = self.resp.as_mut().expect("checked");
            if front.served(conn) - start >= resp::STEP_OUTPUT {
                if let Some(data) = front.take_unparsed(conn) {
                    out.push(Output::Unread { conn, data });
                }
                break;
            }
        }
        self.resp
            .as_mut()
            .expect("checked")
            .finish(conn, &mut items);
        self.serve_resp_items(now, conn, &mut items, out);
    }

    /// Does what a RESP session asked, in order (see [`Item`]).
    fn serve_resp_items(
        &mut self,
        now: Millis,
        conn: ConnId,
        items: &mut Vec<Item>,
        out: &mut Vec<Output>,
    ) {
        for item in items.drain(..) {
            match item {
                Item::Request(frame) => {
                    let front = crate::storage::http::metrics::Front::Resp;
                    self.count_request(now, conn, front, frame.op);
                    self.submit(now, conn, frame, out);
                }
                Item::Facts => {
                    let facts = NodeFacts {
                        node_id: self.node_id,
                        keys: self.engine.len(),
                    };
                    let front = self.resp.as_mut().expect("a RESP session asked");
                    if let Some(bytes) = front.facts(conn, facts) {
                        out.push(Output::SendBytes { conn, bytes });
                    }
                }
                Item::Send(bytes) => out.push(Output::SendBytes { conn, bytes }),
                Item::Close => out.push(Output::Close { conn }),
            }
        }
    }
}
