//! The step: each input goes to its handler, then moves settle and a changed
//! ring is pushed.
//!
//! Frames are sorted in three: client requests (PING, HELLO, RING, STATUS) are
//! answered here; key-value ops are refused (they go to a storage node); the
//! typed [`Message`]s are decoded and handed to their concern (`MEMBER_HELLO` and
//! `NODE_JOIN`'s proof to the member handshake of `admin.rs`). DROP (the admin
//! ops of `admin.rs`) from a connection that has not proven the admin credential
//! gets `ERR AUTH` before its payload is read. Ops 50-99 other
//! than `MEMBER_HELLO` and `NODE_JOIN` are refused (`ERR BADOP`) on a connection that is not a
//! member link, before their payload is read. A timer runs the failure-detection
//! tick and sets the next one; a closed link may mark its node down. Connections
//! accepted on the HTTP listener go to the HTTP front (see `http`).

use super::admin::ADMIN_OPS;
use super::membership::Join;
use super::{Manager, HTTP_LISTENER, TIMER_INIT, TIMER_TICK};
use crate::protocol::cluster::NodeRef;
use crate::protocol::{op, Error, ErrorCode, Frame, Message, Reply};
use crate::reactor::{reply_error, ConnId, Input, Millis, Output, Service};
use bytes::Bytes;

/// How the manager names itself in `ERR BADOP` messages.
const SERVER: &str = "the manager";

impl Manager {
    /// Answers frame `f` from `conn`: `Ok(None)` for messages that get no reply.
    fn execute(&mut self, now: Millis, conn: ConnId, f: &Frame) -> Result<Option<Frame>, Error> {
        let member = self.links.get(&conn).copied();
        let reply = |op, payload: Bytes| Ok(Some(Frame::new(op, 0, 0, payload)));
        match f.op {
            op::PING => reply(op::PONG, f.payload.clone()),
            op::HELLO => reply(op::WELCOME, Bytes::from(self.hello()?)),
            op::RING => match self.recovering_error() {
                Some(e) if self.nodes.is_empty() => Err(e),
                _ => reply(op::RING_REPLY, Bytes::from(self.ring().encode())),
            },
            op::STATUS => reply(
                op::STATUS_REPLY,
                Bytes::from(self.status_json().to_string()),
            ),
            op::AUTH => self.auth(conn, &f.payload),
            o if ADMIN_OPS.contains(&o) && !self.is_admin(conn) => Err(Manager::not_admin(o)),
            o if (op::PING..=op::INCR).contains(&o) => Err(Error::new(
                ErrorCode::BadOp,
                "key-value requests go to a storage node (HELLO names one)",
            )),
            o if op::is_internal(o)
                && o != op::NODE_JOIN
                && o != op::MEMBER_HELLO
                && member.is_none() =>
            {
                Err(Error::bad_op(o, false, SERVER))
            }
            o if Message::is_message_op(o) => {
                let message = Message::decode(f)?;
                self.on_message(now, conn, member, message)
            }
            o => Err(Error::bad_op(o, member.is_some(), SERVER)),
        }
    }

    /// Hands a decoded message to its concern; `member` is the sender's node id
    /// if `conn` is a member link.
    fn on_message(
        &mut self,
        now: Millis,
        conn: ConnId,
        member: Option<u32>,
        message: Message,
    ) -> Result<Option<Frame>, Error> {
        match (message, member) {
            (Message::MemberHello { nonce }, _) => {
                Ok(Some(self.member_hello(conn, nonce).encode()))
            }
            (
                Message::NodeJoin {
                    proof,
                    addr,
                    tokens,
                    sent,
                    offer,
                },
                _,
            ) => {
                self.check_member(conn, &addr, &proof)?;
                let join = Join {
                    addr: &addr,
                    tokens,
                    offer: offer.as_ref(),
                };
                let joined = self.join(now, conn, join)?.encode();
                if let Some(sent) = sent {
                    self.grant_lease(conn, sent);
                }
                Ok(Some(joined))
            }
            (Message::Drop { node }, _) => self.drop_node(&node),
            (Message::Leave, Some(id)) => {
                self.leave_asked(now, id)?;
                Ok(Some(Reply::Ok.encode()))
            }
            (Message::HandoffDone { epoch }, Some(id)) => {
                self.handoff_done.insert(id, epoch);
                Ok(None)
            }
            (
                Message::Heartbeat {
                    keys,
                    sent,
                    catching_up,
                },
                Some(id),
            ) => {
                self.heartbeat(now, id, keys, catching_up);
                self.grant_lease(conn, sent);
                Ok(None)
            }
            (m, member) => Err(Error::bad_op(m.op(), member.is_some(), SERVER)),
        }
    }

    /// `DROP`: `OK` once the node's departure started, `NOT_FOUND` for a node
    /// the membership does not have (or the recovery error while it may still
    /// be learned back).
    fn drop_node(&mut self, node: &NodeRef) -> Result<Option<Frame>, Error> {
        match self.find_node(node) {
            Some(id) => {
                self.leave(id)?;
                Ok(Some(Reply::Ok.encode()))
            }
            None => match self.recovering_error() {
                Some(e) => Err(e),
                None => Ok(Some(Reply::NotFound.encode())),
            },
        }
    }
}

impl Service for Manager {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        self.now = now;
        self.started.get_or_insert(now);
        match input {
            Input::Timer { id: TIMER_INIT } | Input::Timer { id: TIMER_TICK } => {
                self.tick(now);
                self.recovery_tick();
                out.push(Output::Timer {
                    at: now + self.cfg.tick_ms,
                    id: TIMER_TICK,
                });
            }
            Input::Frame { conn, frame } => match self.execute(now, conn, &frame) {
                Ok(None) => self.http.stats.request(frame.op, "ok"),
                Ok(Some(mut reply)) => {
                    self.http.stats.request(frame.op, "ok");
                    reply.client_id = frame.client_id;
                    out.push(Output::Send { conn, frame: reply });
                }
                Err(e) => {
                    self.http.stats.request(frame.op, e.code.as_str());
                    reply_error(out, conn, frame.client_id, 0, &e);
                }
            },
            Input::FrameError {
                conn,
                error,
                client_id,
            } => {
                reply_error(out, conn, client_id, 0, &error);
                out.push(Output::Close { conn });
            }
            Input::Accepted { conn, listener } if listener == HTTP_LISTENER => {
                self.http.front.accepted(conn, out);
            }
            Input::Accepted { .. } => self.http.stats.native_conn(true),
            Input::Data { conn, data } if self.http.front.owns(conn) => {
                self.http.front.data(conn, data);
                self.serve_http(conn, out);
            }
            Input::Eof { conn } if self.http.front.owns(conn) => {
                self.http.front.eof(conn, out);
                self.serve_http(conn, out);
            }
            Input::Eof { conn } => out.push(Output::Close { conn }),
            // Only HTTP connections are raw.
            Input::Data { conn, .. } => out.push(Output::Close { conn }),
            Input::Closed { conn } if self.http.front.owns(conn) => self.http.front.closed(conn),
            Input::Closed { conn } => {
                self.forget_auth(conn);
                self.http.stats.native_conn(false);
                self.link_closed(now, conn);
            }
            Input::Signal(sig) => {
                log::info!("{sig:?}: shutting down");
                out.push(Output::Stop);
            }
            Input::Timer { .. }
            | Input::Connected { .. }
            | Input::ConnectFailed { .. }
            | Input::Drained { .. } => {}
        }
        self.call_off_stranded_leaves();
        self.maybe_settle();
        self.push_ring(out);
        self.send_leases(out);
        for conn in self.to_close.drain(..) {
            self.links.remove(&conn);
            out.push(Output::Close { conn });
        }
    }
}
