//! The node's side of the gateway to its fronts (see
//! [`crate::storage::gateway`]): the replies, holds and closes the node's
//! reply order gave a front's connection wait in the gateway, and are handed to
//! their front, in order, after each RESP command and at the end of the step.
//! A front may answer with more requests (the next SCAN of an HTTP `GET
//! /fetch`) or connections to serve again (HTTP pipelines with room); those
//! are served, and their deliveries handed over, until none are left.

use super::*;
use crate::storage::gateway::{Event, Front};

impl StorageNode {
    /// A front's request `frame` on its connection `conn`: served as a request
    /// from that connection, through the entry a native client's take.
    pub(super) fn submit(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Frame,
        out: &mut Vec<Output>,
    ) {
        self.on_request(now, conn, frame, out);
        self.apply_holds(Some(conn), out);
    }

    /// Hands the deliveries waiting in the gateway to their fronts.
    pub(super) fn deliver(&mut self, now: Millis, out: &mut Vec<Output>) {
        while let Some(d) = self.conns.order.gateway.pop() {
            if let (Event::Reply(frame), Some(h)) = (&d.event, self.http.as_mut()) {
                h.stats.replied(d.conn, frame, now);
            }
            match d.front {
                Front::Resp => {
                    if let Some(r) = self.resp.as_mut() {
                        r.deliver(d.conn, d.event, out);
                    }
                }
                Front::Http => {
                    if let Some(h) = self.http.as_mut() {
                        h.deliver(now, d.conn, d.event, out);
                    }
                }
            }
        }
    }

    /// Ends the step for the fronts: hands them every delivery, serves what
    /// the HTTP front asks for next, and lets the RESP front send what its
    /// sessions finished.
    pub(super) fn end_fronts(&mut self, now: Millis, out: &mut Vec<Output>) {
        loop {
            self.deliver(now, out);
            let Some(h) = self.http.as_mut() else { break };
            let (requests, resume) = h.take_work();
            if requests.is_empty() && resume.is_empty() {
                break;
            }
            for (conn, frame) in requests {
                self.submit(now, conn, frame, out);
            }
            for conn in resume {
                self.serve_http(now, conn, out);
            }
        }
        if let Some(r) = self.resp.as_mut() {
            r.end_step(out);
        }
    }

    /// Whether none of `outs` is a native frame on a front's connection: the
    /// gateway's invariant, checked after every step in debug builds.
    pub(super) fn no_frames_to_fronts(&self, outs: &[Output]) -> bool {
        let gateway = &self.conns.order.gateway;
        !outs.iter().any(|o| match o {
            Output::Send { conn, .. } => gateway.front(*conn).is_some(),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::resp::Limits;
    use crate::storage::resp::{LISTENER as RESP, STEP_OUTPUT};

    /// The HTTP listener's index in these tests.
    const HTTP: usize = 2;

    fn node() -> StorageNode {
        let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
        let mut n = StorageNode::new(cfg);
        n.join_alone();
        n.enable_resp(Limits::new(1 << 20));
        n.enable_http(HTTP, 1 << 20);
        n
    }

    fn step(n: &mut StorageNode, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        n.step(0, input, &mut out);
        out
    }

    /// The bytes sent on `conn`, in order; a front's connection never gets a
    /// native frame.
    fn bytes_to(out: &[Output], conn: ConnId) -> String {
        let mut text = String::new();
        for o in out {
            match o {
                Output::SendBytes { conn: c, bytes } if *c == conn => {
                    text.push_str(&String::from_utf8_lossy(bytes));
                }
                Output::Send { conn: c, .. } if *c == conn => panic!("a native frame: {o:?}"),
                _ => {}
            }
        }
        text
    }

    fn post(path: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn resp(args: &[&[u8]]) -> BytesMut {
        let mut b = BytesMut::new();
        crate::protocol::resp::command(&mut b, args);
        b
    }

    #[test]
    fn pipelined_http_replies_leave_in_request_order() {
        let mut n = node();
        let conn = ConnId::new(1, 1);
        let accepted = step(
            &mut n,
            Input::Accepted {
                conn,
                listener: HTTP,
            },
        );
        assert!(matches!(accepted[..], [Output::Raw { .. }]), "{accepted:?}");
        // The first is answered by the front alone, the second by the node.
        let wire = post("/query", "[]") + &post("/query", r#"[{"encoding":"string","data":"k"}]"#);
        let out = step(
            &mut n,
            Input::Data {
                conn,
                data: BytesMut::from(wire.as_bytes()),
            },
        );
        let text = bytes_to(&out, conn);
        let replies: Vec<&str> = text.split("HTTP/1.1 200 OK").skip(1).collect();
        assert_eq!(replies.len(), 2, "{text}");
        assert!(replies[0].ends_with("\r\n\r\n[]"), "{text}");
        assert!(replies[1].contains("false"), "{text}");
    }

    #[test]
    fn a_resp_connection_is_served_until_its_step_output_mark() {
        let mut n = node();
        let conn = ConnId::new(1, 1);
        step(
            &mut n,
            Input::Accepted {
                conn,
                listener: RESP,
            },
        );
        let value = vec![b'x'; STEP_OUTPUT * 5 / 8];
        let set = resp(&[b"SET", b"k", &value]);
        let out = step(&mut n, Input::Data { conn, data: set });
        assert_eq!(bytes_to(&out, conn), "+OK\r\n");
        let mut wire = BytesMut::new();
        for _ in 0..4 {
            wire.extend_from_slice(&resp(&[b"GET", b"k"]));
        }
        let out = step(&mut n, Input::Data { conn, data: wire });
        // Two values pass the mark: the other two GETs go back unread.
        let text = bytes_to(&out, conn);
        assert_eq!(text.matches("$40960\r\n").count(), 2, "{}", text.len());
        let unread: Vec<&BytesMut> = (out.iter())
            .filter_map(|o| match o {
                Output::Unread { conn: c, data } if *c == conn => Some(data),
                _ => None,
            })
            .collect();
        let mut rest = resp(&[b"GET", b"k"]);
        rest.extend_from_slice(&resp(&[b"GET", b"k"]));
        assert_eq!(unread, vec![&rest]);
    }
}
