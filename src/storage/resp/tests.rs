//! The front's unit tests: commands in, native requests and RESP bytes out.

use super::commands::glob;
use super::*;
use crate::protocol::op;
use crate::storage::gateway::Event;
use std::collections::HashMap;

fn session() -> RespSession {
    RespSession::new(Limits::new(1 << 20), 7)
}

fn cmd(args: &[&str]) -> BytesMut {
    let mut b = BytesMut::new();
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    resp::command(&mut b, &a);
    b
}

/// The native requests among `items`.
fn requests(items: &[Item]) -> Vec<(u8, Vec<u8>, u64)> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Request(f) => Some((f.op, f.payload.to_vec(), f.client_id)),
            _ => None,
        })
        .collect()
}

/// Every byte the session sends: items now, replies later.
fn sent(items: &[Item]) -> Vec<u8> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Send(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn answer(s: &mut RespSession, tag: u64, op: u8, payload: &str) -> Vec<u8> {
    s.reply(&Frame::new(op, tag, 3, payload.to_string()))
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

#[test]
fn single_key_commands_map_to_native_requests() {
    // The command, the request it becomes, the node's reply, the RESP reply.
    type Case<'a> = (&'a [&'a str], u8, &'a str, u8, &'a str, &'a str);
    let cases: &[Case] = &[
        (&["GET", "k"], op::GET, "k", op::VALUE, "v", "$1\r\nv\r\n"),
        (&["get", "k"], op::GET, "k", op::NOT_FOUND, "", "$-1\r\n"),
        (&["SET", "k", "v"], op::PUT, "1 kv", op::OK, "", "+OK\r\n"),
        (
            &["SET", "k", "v", "nx"],
            op::CREATE,
            "1 kv",
            op::CONFLICT,
            "",
            "$-1\r\n",
        ),
        (
            &["SET", "k", "v", "XX"],
            op::UPDATE,
            "1 kv",
            op::NOT_FOUND,
            "",
            "$-1\r\n",
        ),
        (
            &["SET", "k", "v", "XX"],
            op::UPDATE,
            "1 kv",
            op::OK,
            "",
            "+OK\r\n",
        ),
        (&["INCR", "n"], op::INCR, "1 n", op::VALUE, "5", ":5\r\n"),
        (
            &["DECR", "n"],
            op::INCR,
            "1 n -1",
            op::VALUE,
            "-1",
            ":-1\r\n",
        ),
        (
            &["INCRBY", "n", "10"],
            op::INCR,
            "1 n 10",
            op::VALUE,
            "10",
            ":10\r\n",
        ),
        (
            &["DECRBY", "n", "-3"],
            op::INCR,
            "1 n 3",
            op::VALUE,
            "3",
            ":3\r\n",
        ),
        (
            &["INCR", "s"],
            op::INCR,
            "1 s",
            op::ERR,
            "NOTINT not a number",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["GET", "k"],
            op::GET,
            "k",
            op::ERR,
            "UNAVAILABLE node 2 is down",
            "-ERR UNAVAILABLE node 2 is down\r\n",
        ),
        (&["PING"], op::PING, "", op::PONG, "", "+PONG\r\n"),
        (
            &["PING", "hi"],
            op::PING,
            "hi",
            op::PONG,
            "hi",
            "$2\r\nhi\r\n",
        ),
        (&["DEL", "k"], op::DELETE, "k", op::OK, "", ":1\r\n"),
        (
            &["EXISTS", "k"],
            op::EXISTS,
            "k",
            op::NOT_FOUND,
            "",
            ":0\r\n",
        ),
        (
            &["GET", "k"],
            op::GET,
            "k",
            op::OK,
            "",
            "-ERR unexpected OK reply from the node\r\n",
        ),
    ];
    for (args, req, payload, rep, rpayload, want) in cases {
        let mut s = session();
        let items = s.feed(0, cmd(args));
        assert_eq!(
            requests(&items),
            vec![(*req, payload.as_bytes().to_vec(), 1)],
            "{args:?}"
        );
        assert!(sent(&items).is_empty());
        let got = answer(&mut s, 1, *rep, rpayload);
        assert_eq!(String::from_utf8_lossy(&got), *want, "{args:?}");
        assert_eq!(s.pending(), 0);
    }
}

#[test]
fn multi_key_commands_aggregate() {
    let mut s = session();
    let items = s.feed(0, cmd(&["MGET", "a", "b", "c"]));
    assert_eq!(requests(&items).len(), 3);
    assert!(answer(&mut s, 1, op::VALUE, "1").is_empty());
    assert!(answer(&mut s, 2, op::NOT_FOUND, "").is_empty());
    let got = answer(&mut s, 3, op::VALUE, "");
    assert_eq!(&got[..], b"*3\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n");

    let items = s.feed(0, cmd(&["MSET", "a", "1", "bb", "2"]));
    assert_eq!(
        requests(&items),
        vec![
            (op::PUT, b"1 a1".to_vec(), 4),
            (op::PUT, b"2 bb2".to_vec(), 5)
        ]
    );
    assert!(answer(&mut s, 4, op::OK, "").is_empty());
    assert_eq!(&answer(&mut s, 5, op::OK, "")[..], b"+OK\r\n");

    let items = s.feed(0, cmd(&["DEL", "a", "b", "a"]));
    assert_eq!(requests(&items).len(), 3);
    answer(&mut s, 6, op::OK, "");
    answer(&mut s, 7, op::NOT_FOUND, "");
    assert_eq!(&answer(&mut s, 8, op::OK, "")[..], b":2\r\n");

    // The first error wins, once every reply is in.
    s.feed(0, cmd(&["EXISTS", "a", "b"]));
    assert!(answer(&mut s, 9, op::ERR, "TIMEOUT slow").is_empty());
    assert_eq!(
        &answer(&mut s, 10, op::OK, "")[..],
        b"-ERR TIMEOUT slow\r\n"
    );

    // MSET says how many of its writes failed.
    s.feed(0, cmd(&["MSET", "a", "1", "b", "2", "c", "3"]));
    assert!(answer(&mut s, 11, op::OK, "").is_empty());
    assert!(answer(&mut s, 12, op::ERR, "UNAVAILABLE node 2 is down").is_empty());
    assert_eq!(
        &answer(&mut s, 13, op::ERR, "TIMEOUT slow")[..],
        &b"-ERR UNAVAILABLE 2 of 3 keys failed; the first: node 2 is down\r\n"[..]
    );
}

#[test]
fn local_answers_keep_their_place_behind_pending_ones() {
    let mut s = session();
    let mut wire = cmd(&["ECHO", "first"]);
    wire.extend_from_slice(&cmd(&["GET", "k"]));
    wire.extend_from_slice(&cmd(&["ECHO", "second"]));
    wire.extend_from_slice(&cmd(&["DBSIZE"]));
    wire.extend_from_slice(&cmd(&["NOSUCH", "x"]));
    let items = s.feed(0, wire);
    // What is ready leaves when the batch ends: the session is the one path
    // of the connection's bytes, so nothing needs to leave earlier.
    assert!(matches!(items[0], Item::Request(_)));
    assert_eq!(items[1], Item::Facts);
    assert_eq!(items[2], Item::Send(Bytes::from_static(b"$5\r\nfirst\r\n")));
    assert_eq!(items.len(), 3);
    assert!(
        s.facts(NodeFacts {
            node_id: 3,
            keys: 12
        })
        .is_none(),
        "waits for GET"
    );
    let got = answer(&mut s, 1, op::VALUE, "v");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "$1\r\nv\r\n$6\r\nsecond\r\n:12\r\n\
         -ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n"
    );
}

const NOT_INT: &str = "-ERR value is not an integer or out of range\r\n";
const BAD_NAME: &str =
    "-ERR Client names cannot contain spaces, newlines or special characters.\r\n";

#[test]
fn local_commands() {
    let cases: &[(&[&str], &str)] = &[
        (&["ECHO", "a b"], "$3\r\na b\r\n"),
        (&["COMMAND", "DOCS"], "*0\r\n"),
        (&["command"], "*0\r\n"),
        (&["COMMAND", "COUNT"], ":23\r\n"),
        (&["COMMAND", "INFO", "get"], "*1\r\n$-1\r\n"),
        (&["CONFIG", "GET", "save"], "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            &["CONFIG", "GET", "appendonly"],
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (&["CONFIG", "GET", "nope"], "*0\r\n"),
        (
            &["CONFIG", "GET", "*only", "SAVE"],
            "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (
            &["CONFIG", "SET", "x", "y"],
            "-ERR CONFIG SET is not supported by gtstore\r\n",
        ),
        (&["CLIENT", "SETNAME", "bob"], "+OK\r\n"),
        (&["CLIENT", "GETNAME"], "$-1\r\n"),
        (&["CLIENT", "ID"], ":7\r\n"),
        (&["CLIENT", "SETINFO", "lib-name", "x"], "+OK\r\n"),
        (&["SELECT", "0"], "+OK\r\n"),
        (&["SELECT", "1"], "-ERR DB index is out of range\r\n"),
        (
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &["GET", "a", "b"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &["MSET", "a"],
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            &["MSET", "a", "1", "b"],
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            &["DBSIZE", "x"],
            "-ERR wrong number of arguments for 'dbsize' command\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "10"],
            "-ERR SET option 'EX' is not supported by gtstore\r\n",
        ),
        (&["SET", "k", "v", "NX", "XX"], "-ERR syntax error\r\n"),
        (&["SET", "k", "v", "bogus"], "-ERR syntax error\r\n"),
        (
            &["INCRBY", "k", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["DECRBY", "k", "-9223372036854775808"],
            "-ERR decrement would overflow\r\n",
        ),
        (
            &["FLUSHALL", "a\r\nb"],
            "-ERR unknown command 'FLUSHALL', with args beginning with: 'a  b' \r\n",
        ),
    ];
    for (args, want) in cases {
        let items = session().feed(0, cmd(args));
        assert!(requests(&items).is_empty(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&sent(&items)), *want, "{args:?}");
    }
    let mut s = session();
    s.feed(0, cmd(&["CLIENT", "SETNAME", "bob"]));
    assert_eq!(
        &sent(&s.feed(0, cmd(&["CLIENT", "GETNAME"])))[..],
        b"$3\r\nbob\r\n"
    );
}

/// Each case on a fresh session: what it answers, with no native request.
fn answers_locally(cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        let items = session().feed(0, cmd(args));
        assert!(requests(&items).is_empty(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&sent(&items)), *want, "{args:?}");
    }
}

#[test]
fn redis_errors_for_arguments_and_connection_commands() {
    answers_locally(&[
        // Integers only in canonical form; overflow as Redis words it.
        (&["INCRBY", "k", "+5"], NOT_INT),
        (&["INCRBY", "k", "007"], NOT_INT),
        (&["DECRBY", "k", "-0"], NOT_INT),
        (&["INCRBY", "k", " 5"], NOT_INT),
        (&["INCRBY", "k", ""], NOT_INT),
        // SET's options, checked as Redis checks them.
        (&["SET", "k", "v", "XX", "NX"], "-ERR syntax error\r\n"),
        (&["SET", "k", "v", "EX"], "-ERR syntax error\r\n"),
        (
            &["SET", "k", "v", "EX", "1", "PX", "1"],
            "-ERR syntax error\r\n",
        ),
        (
            &["SET", "k", "v", "KEEPTTL", "EX", "1"],
            "-ERR syntax error\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "1", "KEEPTTL"],
            "-ERR syntax error\r\n",
        ),
        (&["SET", "k", "v", "EX", "x"], NOT_INT),
        (
            &["SET", "k", "v", "PX", "0"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "PX", "9223372036854775807"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "EXAT", "9223372036854775"],
            "-ERR SET option 'EXAT' is not supported by gtstore\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "1", "EX", "2"],
            "-ERR SET option 'EX' is not supported by gtstore\r\n",
        ),
        (
            &["SET", "k", "v", "get"],
            "-ERR SET option 'GET' is not supported by gtstore\r\n",
        ),
        // Redis's errors before a command runs.
        (
            &["CLIENT", "SETNAME"],
            "-ERR wrong number of arguments for 'client|setname' command\r\n",
        ),
        (
            &["CLIENT", "bogus"],
            "-ERR unknown subcommand 'bogus'. Try CLIENT HELP.\r\n",
        ),
        (
            &["client"],
            "-ERR wrong number of arguments for 'client' command\r\n",
        ),
        (
            &["PING", "a", "b"],
            "-ERR wrong number of arguments for 'ping' command\r\n",
        ),
        (&["SELECT", "x"], NOT_INT),
        // The connection's own commands.
        (&["CLIENT", "SETNAME", "a b"], BAD_NAME),
        (&["CLIENT", "SETNAME", "a\nb"], BAD_NAME),
        (&["CLIENT", "SETNAME", ""], "+OK\r\n"),
        (
            &["CLIENT", "SETINFO", "LIB-NAME", "a b"],
            "-ERR LIB-NAME cannot contain spaces, newlines or special characters.\r\n",
        ),
        (
            &["CLIENT", "SETINFO", "color", "x"],
            "-ERR Unrecognized option 'color'\r\n",
        ),
        (&["CLIENT", "NO-EVICT", "maybe"], "-ERR syntax error\r\n"),
        (&["HELLO", "3"], "-NOPROTO unsupported protocol version\r\n"),
        (&["HELLO", "1"], "-NOPROTO unsupported protocol version\r\n"),
        (
            &["HELLO", "two"],
            "-ERR Protocol version is not an integer or out of range\r\n",
        ),
        (
            &["HELLO", "2", "SETNAME"],
            "-ERR Syntax error in HELLO option 'SETNAME'\r\n",
        ),
        (&["HELLO", "2", "SETNAME", "a b"], BAD_NAME),
        (
            &["HELLO", "2", "AUTH", "bob", "pw"],
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        ),
        (&["AUTH", "default", "pw"], "+OK\r\n"),
        (
            &["AUTH", "pw"],
            "-ERR AUTH <password> called without any password configured for the default \
             user. Are you sure your configuration is correct?\r\n",
        ),
    ]);
}

#[test]
fn info_and_dbsize_use_the_node_facts() {
    let mut s = session();
    let items = s.feed(0, cmd(&["DBSIZE"]));
    assert_eq!(items, vec![Item::Facts]);
    let got = s
        .facts(NodeFacts {
            node_id: 2,
            keys: 41,
        })
        .unwrap();
    assert_eq!(&got[..], b":41\r\n");
    s.feed(0, cmd(&["INFO"]));
    let got = s
        .facts(NodeFacts {
            node_id: 2,
            keys: 41,
        })
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with('$') && text.contains("db0:keys=41,"),
        "{text}"
    );
    assert!(text.contains("gtstore_node_id:2\r\n"), "{text}");
}

#[test]
fn protocol_error_answers_after_earlier_replies_then_closes() {
    let mut s = session();
    let mut wire = cmd(&["GET", "k"]);
    wire.extend_from_slice(b"*1\r\n$x\r\n");
    let items = s.feed(0, wire);
    assert_eq!(items.len(), 1);
    assert!(
        s.feed(0, cmd(&["PING"])).is_empty(),
        "input after the error is ignored"
    );
    let got = answer(&mut s, 1, op::NOT_FOUND, "");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "$-1\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(s.take_close());
    assert!(!s.take_close());

    // With nothing pending, the error and the close come at once.
    let items = session().feed(0, BytesMut::from(&b"*1\r\n$99999999999\r\n"[..]));
    assert!(
        matches!(&items[0], Item::Send(b) if b.starts_with(b"-ERR Protocol error: bulk length"))
    );
    assert_eq!(items[1], Item::Close);
}

#[test]
fn quit_answers_ok_and_closes() {
    let mut wire = cmd(&["QUIT"]);
    wire.extend_from_slice(&cmd(&["PING"]));
    let items = session().feed(0, wire);
    assert_eq!(
        items,
        vec![Item::Send(Bytes::from_static(b"+OK\r\n")), Item::Close]
    );
}

#[test]
fn a_reply_out_of_order_closes_instead_of_lying() {
    let mut s = session();
    s.feed(0, cmd(&["GET", "a"]));
    s.feed(0, cmd(&["GET", "b"]));
    let got = answer(&mut s, 2, op::VALUE, "x");
    assert!(got.starts_with(b"-ERR internal error"));
    assert!(s.take_close());
    assert!(answer(&mut s, 1, op::VALUE, "y").is_empty());
}

#[test]
fn inline_commands_and_split_input() {
    let mut s = session();
    let items = s.feed(0, BytesMut::from(&b"SET k hello\r\nGE"[..]));
    assert_eq!(requests(&items), vec![(op::PUT, b"1 khello".to_vec(), 1)]);
    let items = s.feed(0, BytesMut::from(&b"T k\n"[..]));
    assert_eq!(requests(&items), vec![(op::GET, b"k".to_vec(), 2)]);
}

#[test]
fn backlog_is_bounded_by_holds() {
    let mut front = RespFront::new(Limits::new(1 << 20));
    let conn = ConnId::new(4, 1);
    let mut out = Vec::new();
    front.accept(0, conn, &mut out);
    assert!(matches!(out[0], Output::Raw { .. }));
    out.clear();
    // One GET stays unanswered; ECHOs pile up behind it.
    let mut wire = cmd(&["GET", "slow"]);
    for _ in 0..(HOLD_ENTRIES + 1) {
        wire.extend_from_slice(&cmd(&["ECHO", "x"]));
    }
    let items = front.feed(0, conn, wire);
    assert_eq!(requests(&items).len(), 1);
    front.end_step(&mut out);
    assert!(
        matches!(out[..], [Output::Hold { hold: true, .. }]),
        "{out:?}"
    );
    out.clear();
    // The node holds and releases the connection: the session still wants it.
    front.deliver(conn, Event::Hold(true), &mut out);
    front.deliver(conn, Event::Hold(false), &mut out);
    front.end_step(&mut out);
    assert!(out.is_empty(), "{out:?}");
    // The reply drains everything and the hold goes.
    let reply = Frame::new(op::NOT_FOUND, 1, 1, "");
    front.deliver(conn, Event::Reply(reply), &mut out);
    assert!(out.is_empty(), "the bytes wait for the end of the step");
    front.end_step(&mut out);
    match &out[..] {
        [Output::SendBytes { bytes, .. }, Output::Hold { hold: false, .. }] => {
            assert_eq!(bytes.len(), 5 + (HOLD_ENTRIES + 1) * 7)
        }
        o => panic!("{o:?}"),
    }
    // Held by the node alone: released when the node releases it.
    out.clear();
    front.deliver(conn, Event::Hold(true), &mut out);
    front.end_step(&mut out);
    assert!(matches!(out[..], [Output::Hold { hold: true, .. }]));
    front.deliver(conn, Event::Hold(false), &mut out);
    assert!(matches!(out[1..], [Output::Hold { hold: false, .. }]));
    // A close sends what is ready first.
    out.clear();
    front.feed(0, conn, cmd(&["GET", "k"]));
    front.deliver(
        conn,
        Event::Reply(Frame::new(op::VALUE, 2, 1, "v")),
        &mut out,
    );
    front.deliver(conn, Event::Close, &mut out);
    assert!(
        matches!(&out[..], [Output::SendBytes { bytes, .. }, Output::Close { .. }] if bytes == "$1\r\nv\r\n"),
        "{out:?}"
    );
}

#[test]
fn a_node_serves_resp_connections_through_its_native_path() {
    use crate::reactor::{Input, Service};
    use crate::storage::{NodeConfig, StorageNode};
    let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
    let mut node = StorageNode::new(cfg);
    node.join_alone();
    node.enable_resp(Limits::new(1 << 20));
    let mut step = |input: Input| {
        let mut out = Vec::new();
        node.step(0, input, &mut out);
        out
    };
    let (resp_conn, native_conn) = (ConnId::new(1, 1), ConnId::new(2, 1));
    let out = step(Input::Accepted {
        conn: resp_conn,
        listener: LISTENER,
    });
    assert!(matches!(out[..], [Output::Raw { conn }] if conn == resp_conn));
    // A native client's connection is untouched by the front.
    assert!(step(Input::Accepted {
        conn: native_conn,
        listener: 0
    })
    .is_empty());
    let mut wire = cmd(&["SET", "k", "v"]);
    wire.extend_from_slice(&cmd(&["MGET", "k", "x"]));
    wire.extend_from_slice(&cmd(&["DBSIZE"]));
    wire.extend_from_slice(b"PING\r\n");
    let out = step(Input::Data {
        conn: resp_conn,
        data: wire,
    });
    let bytes: Vec<u8> = out
        .iter()
        .flat_map(|o| match o {
            Output::SendBytes { conn, bytes } if *conn == resp_conn => bytes.to_vec(),
            o => panic!("unexpected {o:?}"),
        })
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "+OK\r\n*2\r\n$1\r\nv\r\n$-1\r\n:1\r\n+PONG\r\n"
    );
    // The native connection sees the same data, in native frames.
    let out = step(Input::Frame {
        conn: native_conn,
        frame: Frame::new(op::GET, 5, 0, "k"),
    });
    assert!(
        matches!(&out[..], [Output::Send { frame, .. }] if frame.op == op::VALUE && frame.payload == "v")
    );
    // A protocol error: the reply, then the close; the session is gone once closed.
    let out = step(Input::Data {
        conn: resp_conn,
        data: BytesMut::from(&b"*1\r\n$x\r\n"[..]),
    });
    assert!(
        matches!(&out[..], [Output::SendBytes { .. }, Output::Close { .. }]),
        "{out:?}"
    );
    step(Input::Closed { conn: resp_conn });
    let out = step(Input::Data {
        conn: resp_conn,
        data: cmd(&["PING"]),
    });
    assert!(matches!(out[..], [Output::Close { .. }]), "{out:?}");
}

#[test]
fn a_pipelined_batch_leaves_in_one_buffer() {
    use crate::reactor::{Input, Service};
    use crate::storage::{NodeConfig, StorageNode};
    let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
    let mut node = StorageNode::new(cfg);
    node.join_alone();
    node.enable_resp(Limits::new(1 << 20));
    let conn = ConnId::new(1, 1);
    let mut out = Vec::new();
    node.step(
        0,
        Input::Accepted {
            conn,
            listener: LISTENER,
        },
        &mut out,
    );
    let mut wire = cmd(&["SET", "a", "1"]);
    for c in [
        &["GET", "a"][..],
        &["GET", "b"],
        &["ECHO", "e"],
        &["GET", "a"],
    ] {
        wire.extend_from_slice(&cmd(c));
    }
    out.clear();
    node.step(0, Input::Data { conn, data: wire }, &mut out);
    // Every reply of the batch (the ECHO's, answered by the session, waits in
    // order behind the GET before it) leaves in one buffer.
    let sends: Vec<String> = out
        .iter()
        .map(|o| match o {
            Output::SendBytes { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
            o => panic!("unexpected {o:?}"),
        })
        .collect();
    assert_eq!(
        sends.concat(),
        "+OK\r\n$1\r\n1\r\n$-1\r\n$1\r\ne\r\n$1\r\n1\r\n"
    );
    assert_eq!(sends.len(), 1, "{sends:?}");
}

#[test]
fn glob_patterns() {
    assert!(glob(b"*", b"save"));
    assert!(glob(b"s?ve", b"SAVE"));
    assert!(glob(b"*only", b"appendonly"));
    assert!(!glob(b"save?", b"save"));
}

#[test]
fn overflow_and_canonical_integers_read_as_in_redis() {
    let mut s = session();
    s.feed(0, cmd(&["INCR", "n"]));
    let got = answer(
        &mut s,
        1,
        op::ERR,
        "NOTINT increment or decrement would overflow",
    );
    assert_eq!(&got[..], b"-ERR increment or decrement would overflow\r\n");
    s.feed(0, cmd(&["INCR", "n"]));
    let got = answer(&mut s, 2, op::ERR, "NOTINT value is not an integer");
    assert_eq!(
        &got[..],
        b"-ERR value is not an integer or out of range\r\n"
    );
    // A delta is sent in canonical form; NX twice is still one CREATE.
    let items = s.feed(0, cmd(&["INCRBY", "n", "-9223372036854775808"]));
    assert_eq!(
        requests(&items),
        vec![(op::INCR, b"1 n -9223372036854775808".to_vec(), 3)]
    );
    let items = s.feed(0, cmd(&["SET", "k", "v", "NX", "nx"]));
    assert_eq!(requests(&items), vec![(op::CREATE, b"1 kv".to_vec(), 4)]);
    let items = s.feed(0, cmd(&["SET", "k", "v", "XX", "XX", "KEEPTTL"]));
    assert_eq!(requests(&items), vec![(op::UPDATE, b"1 kv".to_vec(), 5)]);
}

#[test]
fn hello_answers_as_a_resp2_only_redis() {
    let mut s = session();
    let want = "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
                $5\r\nproto\r\n:2\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
                $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    for args in [
        &["HELLO"][..],
        &["hello", "2"],
        &["HELLO", "2", "AUTH", "default", "any", "SETNAME", "me"],
    ] {
        assert_eq!(String::from_utf8_lossy(&sent(&s.feed(0, cmd(args)))), want);
    }
    assert_eq!(
        &sent(&s.feed(0, cmd(&["CLIENT", "GETNAME"])))[..],
        b"$2\r\nme\r\n"
    );
    // A refused HELLO changes nothing.
    s.feed(0, cmd(&["HELLO", "2", "SETNAME", "x", "AUTH", "bob", "pw"]));
    assert_eq!(
        &sent(&s.feed(0, cmd(&["CLIENT", "GETNAME"])))[..],
        b"$2\r\nme\r\n"
    );
}

/// The `key=value` fields of a CLIENT LIST line.
fn fields(line: &str) -> Vec<(String, String)> {
    line.trim_end()
        .split(' ')
        .map(|f| {
            let (k, v) = f.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn client_list_shows_every_connection_in_redis_order() {
    let mut front = RespFront::new(Limits::new(1 << 20));
    let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
    let mut out = Vec::new();
    front.accept(1_000, a, &mut out);
    front.accept(2_000, b, &mut out);
    let mut wire = cmd(&["CLIENT", "SETNAME", "alpha"]);
    wire.extend_from_slice(&cmd(&["CLIENT", "SETINFO", "lib-name", "redis-py"]));
    wire.extend_from_slice(&cmd(&["CLIENT", "SETINFO", "LIB-VER", "5.0.1"]));
    wire.extend_from_slice(&cmd(&["GET", "k"]));
    front.feed(3_000, a, wire);
    front.feed(4_000, b, cmd(&["NOSUCH"]));
    let items = front.feed(9_500, b, cmd(&["CLIENT", "LIST"]));
    assert_eq!(items, vec![Item::Facts]);
    let facts = NodeFacts {
        node_id: 1,
        keys: 0,
    };
    let got = front.facts(b, facts).expect("answered at once");
    let text = String::from_utf8_lossy(&got).into_owned();
    let body = text.split_once("\r\n").unwrap().1;
    let lines: Vec<&str> = body.trim_end_matches("\r\n").lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let keys: Vec<String> = fields(lines[0]).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys.join(" "),
        "id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free \
         argv-mem multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp \
         lib-name lib-ver"
    );
    let first: HashMap<String, String> = fields(lines[0]).into_iter().collect();
    let second: HashMap<String, String> = fields(lines[1]).into_iter().collect();
    assert_eq!(first["id"], "1");
    assert_eq!(first["name"], "alpha");
    assert_eq!((&first["age"][..], &first["idle"][..]), ("8", "6"));
    assert_eq!(first["cmd"], "get");
    assert_eq!(
        (&first["lib-name"][..], &first["lib-ver"][..]),
        ("redis-py", "5.0.1")
    );
    assert_eq!(second["id"], "2");
    assert_eq!(second["cmd"], "client|list");
    assert_eq!((&second["age"][..], &second["idle"][..]), ("7", "0"));
    // Filters.
    front.feed(9_500, b, cmd(&["CLIENT", "LIST", "ID", "2", "99"]));
    let got = front.facts(b, facts).unwrap();
    assert!(got.starts_with(b"$") && got.windows(5).filter(|w| w == b"\nid=2").count() == 1);
    assert_eq!(got.windows(4).filter(|w| w == b"id=1").count(), 0);
    front.feed(9_500, b, cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]));
    assert_eq!(&front.facts(b, facts).unwrap()[..], b"$0\r\n\r\n");
    let items = front.feed(9_500, b, cmd(&["CLIENT", "LIST", "TYPE", "x"]));
    assert_eq!(sent(&items), b"-ERR Unknown client type 'x'\r\n".to_vec());
    // CLIENT INFO is this connection's line; an unknown command leaves `cmd=NULL`.
    let items = front.feed(9_500, b, cmd(&["CLIENT", "INFO"]));
    let line = String::from_utf8_lossy(&sent(&items)).into_owned();
    assert!(
        line.starts_with("$") && line.contains("\r\nid=2 addr=?:0 "),
        "{line}"
    );
    assert!(line.contains(" cmd=client|info "), "{line}");
    let c = ConnId::new(3, 1);
    front.accept(9_500, c, &mut out);
    front.feed(9_500, c, cmd(&["NOSUCH"]));
    front.feed(9_600, b, cmd(&["CLIENT", "LIST", "ID", "3"]));
    let got = String::from_utf8_lossy(&front.facts(b, facts).unwrap()).into_owned();
    assert!(got.contains(" cmd=NULL "), "{got}");
}

#[test]
fn with_a_password_only_auth_hello_and_quit_run_before_it() {
    let mut s = session();
    s.client.require(Bytes::from_static(b"pw"));
    let noauth = "-NOAUTH Authentication required.\r\n";
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    // The reply bytes of one command, and whether it became a native request.
    let mut run = |args: &[&str]| {
        let items = s.feed(0, cmd(args));
        (
            String::from_utf8(sent(&items)).unwrap(),
            !requests(&items).is_empty(),
        )
    };
    for args in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["PING"],
        &["DBSIZE"],
    ] {
        assert_eq!(run(args), (noauth.to_string(), false), "{args:?}");
    }
    // Existence and arity first.
    assert!(run(&["GET"])
        .0
        .starts_with("-ERR wrong number of arguments"));
    assert!(run(&["HELLO", "2"])
        .0
        .starts_with("-NOAUTH HELLO must be called"));
    assert_eq!(run(&["AUTH", "nope"]).0, wrongpass);
    assert_eq!(run(&["AUTH", "bob", "pw"]).0, wrongpass);
    assert_eq!(run(&["HELLO", "2", "AUTH", "default", "nope"]).0, wrongpass);
    assert_eq!(run(&["GET", "k"]).0, noauth);
    assert_eq!(run(&["AUTH", "pw"]).0, "+OK\r\n");
    assert_eq!(run(&["GET", "k"]), (String::new(), true));

    let mut h = session();
    h.client.require(Bytes::from_static(b"pw"));
    let items = h.feed(0, cmd(&["HELLO", "2", "AUTH", "default", "pw"]));
    assert!(sent(&items).starts_with(b"*14\r\n"));
    assert_eq!(requests(&h.feed(0, cmd(&["GET", "k"]))).len(), 1);
}
