//! The batch ops MGET and MSET (payloads in [`crate::protocol::batch`]).
//!
//! A batch is taken whole or not at all: its payload is decoded and checked
//! (every key, the bound on keys) before its first key goes out, and a bad one
//! is answered with one `ERR` (`BADKEY`, `LIMIT`) and nothing applied. Then each
//! key becomes the single-key request a client would send (`GET`, or `PUT`; the
//! HTTP and RESP fronts split their batches with the same
//! [`batch::key_request`]) and is served by `on_request` exactly as one: routed
//! to its lead replica, its quorum round, forwarding, read repair, the same
//! errors. All of a batch's keys are in flight at once.
//!
//! The per-key requests are served on a connection id of the batch's own (see
//! `routing/order.rs`), each carrying its key's index as its client id, so its
//! reply finds its place whatever order the replies come in. The batch holds
//! one slot on the client's connection, filled with the batch's reply when the
//! last key is answered: VALUE with one result per key, in request order.
//!
//! Bounds: at most [`batch::MAX_KEYS`] keys (the frame limit bounds the bytes);
//! a reply over [`batch::MAX_REPLY`] bytes is `ERR LIMIT` instead (the values
//! past the bound are not kept while the rest come in). A batch's keys in
//! flight count towards its connection's backlog, so a client pipelining
//! batches is stopped as one pipelining single requests is.
//!
//! Caveats: a batch is not atomic (each key is its own request, a reader may
//! see some of an MSET's writes before the others) and not isolated (two
//! batches writing the same keys may interleave key by key).

use super::*;
use crate::protocol::batch::{self, KeyResult};

/// The replies to one batch's keys, collected until the last is in.
#[derive(Debug)]
pub struct Collector {
    /// The client's connection, the batch's slot on it, and the client's id.
    client: (ConnId, u64, u64),
    results: Vec<Option<KeyResult>>,
    /// Replies still to come.
    left: usize,
    /// Bytes of the encoded reply so far.
    bytes: usize,
    /// The node id the replies carry, for the batch's reply.
    node_id: u32,
}

impl Collector {
    /// A batch of `keys` keys for the slot `client` = (connection, slot, client id).
    pub fn new(client: (ConnId, u64, u64), keys: usize) -> Collector {
        Collector {
            client,
            results: vec![None; keys],
            left: keys,
            bytes: 0,
            node_id: 0,
        }
    }

    /// The client's connection and the batch's slot on it.
    pub fn client(&self) -> (ConnId, u64) {
        (self.client.0, self.client.1)
    }

    /// How many keys the batch has.
    pub fn keys(&self) -> usize {
        self.results.len()
    }

    /// Takes the reply to the key whose index is its client id; true once
    /// every key is answered. A reply with no place (a broken invariant) is
    /// logged and dropped.
    pub fn take(&mut self, frame: Frame) -> bool {
        let i = frame.client_id as usize;
        let Some(slot) = self.results.get_mut(i).filter(|s| s.is_none()) else {
            log::error!("a batch got a reply for key {i}, which has no place; dropped");
            return false;
        };
        let result = match frame.op {
            op::OK | op::VALUE | op::NOT_FOUND | op::ERR => KeyResult {
                op: frame.op,
                payload: frame.payload,
            },
            o => KeyResult {
                op: op::ERR,
                payload: Error::new(
                    ErrorCode::Internal,
                    format!("unexpected {} reply", op::name(o)),
                )
                .to_payload(),
            },
        };
        self.bytes += result.encoded_len();
        self.node_id = frame.node_id;
        // Past the bound the reply is an error: the values are not kept.
        *slot = Some(match self.bytes <= batch::MAX_REPLY {
            true => result,
            false => KeyResult {
                op: result.op,
                payload: Bytes::new(),
            },
        });
        self.left -= 1;
        self.left == 0
    }

    /// The batch's reply: VALUE with every result, or `ERR LIMIT` when they add
    /// up to more than [`batch::MAX_REPLY`] bytes.
    pub fn reply(self) -> Frame {
        let client_id = self.client.2;
        if self.bytes > batch::MAX_REPLY {
            let e = Error::new(
                ErrorCode::Limit,
                format!(
                    "the results add up to {} bytes, over the limit of {}: ask for fewer keys",
                    self.bytes,
                    batch::MAX_REPLY
                ),
            );
            return Frame::error(client_id, self.node_id, &e);
        }
        let mut out = BytesMut::with_capacity(self.bytes);
        for r in self.results.iter().flatten() {
            batch::put_result(&mut out, r);
        }
        Frame::new(op::VALUE, client_id, self.node_id, out.freeze())
    }
}

impl StorageNode {
    /// A client's MGET or MSET: checks it whole, then serves each key as its
    /// own request (see the module docs).
    pub(super) fn on_batch(&mut self, now: Millis, conn: ConnId, f: Frame, out: &mut Vec<Output>) {
        let requests: Result<Vec<(u8, Bytes)>, Error> = match f.op {
            op::MGET => batch::decode_keys(&f.payload)
                .map(|ks| ks.iter().map(|k| batch::key_request(k, None)).collect()),
            _ => batch::decode_pairs(&f.payload).map(|ps| {
                (ps.iter())
                    .map(|(k, v)| batch::key_request(k, Some(v)))
                    .collect()
            }),
        };
        let requests = match requests {
            Ok(r) => r,
            Err(e) => {
                let frame = Frame::error(f.client_id, self.node_id, &e);
                return self.conns.order.ready(conn, frame, out);
            }
        };
        let own = self
            .conns
            .order
            .open_batch(conn, f.client_id, requests.len());
        for (i, (o, payload)) in requests.into_iter().enumerate() {
            self.on_request(now, own, Frame::new(o, i as u64, 0, payload), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{lead_of_three, sent_on, step};
    use super::*;

    fn ask(n: &mut StorageNode, conn: ConnId, frame: Frame) -> Vec<Output> {
        step(n, 10, Input::Frame { conn, frame })
    }

    #[test]
    fn a_batch_is_served_key_by_key_and_answered_in_its_place() {
        let mut n = StorageNode::new(NodeConfig::new(
            "127.0.0.1:7001".into(),
            "127.0.0.1:7000".parse().unwrap(),
        ));
        n.join_alone();
        let c = ConnId::new(30, 1);
        let mset = batch::encode_pairs(&[("a", "1"), ("b b", ""), ("a", "2")]);
        let out = ask(&mut n, c, Frame::new(op::MSET, 5, 0, mset));
        let got = sent_on(&out, c);
        assert_eq!((got.len(), got[0].op, got[0].client_id), (1, op::VALUE, 5));
        let rs = batch::decode_results(&got[0].payload).unwrap();
        assert!(rs.iter().all(|r| r.op == op::OK), "{rs:?}");
        assert_eq!(n.engine().get(b"a").as_deref(), Some(&b"2"[..]), "in order");
        let mget = batch::encode_keys(&["a", "nope", "b b"]);
        let out = ask(&mut n, c, Frame::new(op::MGET, 6, 0, mget));
        let rs = batch::decode_results(&sent_on(&out, c)[0].payload).unwrap();
        let ops: Vec<u8> = rs.iter().map(|r| r.op).collect();
        assert_eq!(ops, [op::VALUE, op::NOT_FOUND, op::VALUE]);
        assert_eq!(&rs[0].payload[..], b"2");
        assert!(rs[2].payload.is_empty());
        // A bad batch is refused whole: nothing of it is applied.
        let bad = Bytes::from_static(b"1 x1 y0 ");
        let out = ask(&mut n, c, Frame::new(op::MSET, 7, 0, bad));
        let got = sent_on(&out, c);
        assert_eq!(Error::from_payload(&got[0].payload).code, ErrorCode::BadKey);
        assert_eq!(n.engine().get(b"x"), None);
        assert_eq!(n.conns.order.batches(), 0);
    }

    #[test]
    fn replies_behind_a_batch_wait_for_it() {
        let (mut n, links, _) = lead_of_three();
        let key = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| n.serving_pref.get(hash64(k.as_bytes())).first() == Some(&2))
            .expect("a key node 2 leads");
        let c = ConnId::new(30, 1);
        let mget = batch::encode_keys(&[key.as_str()]);
        let out = ask(&mut n, c, Frame::new(op::MGET, 5, 0, mget));
        let fwd = sent_on(&out, links[0]);
        assert_eq!((fwd.len(), fwd[0].op), (1, op::GET), "forwarded to node 2");
        assert_eq!(n.conns.order.outstanding(c), 2, "its slot and its key");
        let out = ask(&mut n, c, Frame::new(op::PING, 6, 0, "p"));
        assert!(sent_on(&out, c).is_empty(), "the PONG waits for the batch");
        let answer = Frame::new(op::VALUE, fwd[0].client_id, 2, "v");
        let out = step(
            &mut n,
            11,
            Input::Frame {
                conn: links[0],
                frame: answer,
            },
        );
        let got = sent_on(&out, c);
        assert_eq!(got.len(), 2, "{out:?}");
        assert_eq!((got[0].op, got[0].client_id), (op::VALUE, 5));
        let rs = batch::decode_results(&got[0].payload).unwrap();
        assert_eq!(rs[0].value().map(|v| &v[..]), Some(&b"v"[..]));
        assert_eq!((got[1].op, got[1].client_id), (op::PONG, 6));
        assert_eq!(n.conns.order.outstanding(c), 0);
    }

    fn reply(op: u8, i: u64, payload: &'static [u8]) -> Frame {
        Frame::new(op, i, 7, payload)
    }

    #[test]
    fn results_come_back_in_key_order_whatever_the_reply_order() {
        let conn = ConnId::new(3, 1);
        let mut c = Collector::new((conn, 5, 42), 3);
        assert!(!c.take(reply(op::ERR, 2, b"UNAVAILABLE node 2 is down")));
        assert!(!c.take(reply(op::VALUE, 0, b"v0")));
        assert!(
            !c.take(reply(op::VALUE, 0, b"again")),
            "a second reply is dropped"
        );
        assert!(!c.take(reply(op::VALUE, 9, b"nowhere")), "no such key");
        assert!(c.take(reply(op::STALE, 1, b"3")));
        let f = c.reply();
        assert_eq!((f.op, f.client_id, f.node_id), (op::VALUE, 42, 7));
        let rs = batch::decode_results(&f.payload).unwrap();
        assert_eq!(rs[0].value().map(|v| &v[..]), Some(&b"v0"[..]));
        assert_eq!(rs[1].error().unwrap().code, ErrorCode::Internal);
        assert_eq!(rs[2].error().unwrap().code, ErrorCode::Unavailable);
    }

    #[test]
    fn a_reply_over_the_bound_is_an_error_and_keeps_no_values() {
        let mut c = Collector::new((ConnId::new(3, 1), 0, 1), 2);
        let big = Bytes::from(vec![b'x'; batch::MAX_REPLY - 10]);
        assert!(!c.take(Frame::new(op::VALUE, 0, 1, big)));
        assert!(c.take(Frame::new(op::VALUE, 1, 1, vec![b'y'; 100])));
        assert!(c.results[1].as_ref().unwrap().payload.is_empty());
        let f = c.reply();
        assert_eq!(f.op, op::ERR);
        assert!(f.payload.starts_with(b"LIMIT "), "{:?}", f.payload);
    }
}
