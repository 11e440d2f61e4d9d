//! Unit tests of anti-entropy (`repair/anti_entropy.rs`): a comparison's steps as
//! the lead and as the peer, and the purge floors that keep a collected delete
//! deleted.

use super::tests::{lead_of_three, sent_on, step};
use super::*;
use crate::protocol::cluster::Stub;

/// Keys `{prefix}N` in the range ending at `end`, as node `n` cuts ranges.
fn keys_in(n: &StorageNode, end: u64, prefix: &str, count: usize) -> Vec<Bytes> {
    let d = &n.anti_entropy.digests;
    let range = d.range_ending(end).expect("a range of the ring");
    (0..200_000)
        .map(|i| Bytes::from(format!("{prefix}{i}")))
        .filter(|k| d.contains(range, hash64(k)))
        .take(count)
        .collect()
}

/// Stores an entry in `n` directly (as a replica write would).
fn put(n: &mut StorageNode, key: &Bytes, version: u64, value: Option<&[u8]>) {
    n.store((key, hash64(key)), version, value, None);
}

/// The peer's answer `reply` to the frame `asked` that `n` sent on `link`.
fn answer(
    n: &mut StorageNode,
    now: Millis,
    link: ConnId,
    asked: &Frame,
    reply: Reply,
) -> Vec<Output> {
    let mut f = reply.encode();
    f.client_id = asked.client_id;
    step(
        n,
        now,
        Input::Frame {
            conn: link,
            frame: f,
        },
    )
}

/// The one frame `out` sends on either link, and that link.
fn sent_on_a_link(out: &[Output], links: [ConnId; 2]) -> (ConnId, Frame) {
    let sent: Vec<(ConnId, Frame)> = (links.iter())
        .flat_map(|&l| sent_on(out, l).into_iter().map(move |f| (l, f)))
        .collect();
    assert_eq!(sent.len(), 1, "{out:?}");
    sent.into_iter().next().expect("one")
}

#[test]
fn the_lead_pulls_what_is_newer_pushes_what_is_wanted_and_counts_it() {
    let (mut n, links, _) = lead_of_three();
    // The first tick starts a comparison: the root of a range this node leads.
    let out = step(&mut n, 100, Input::Timer { id: TIMER_TICK });
    let (link, digest) = sent_on_a_link(&out, links);
    let Ok(Message::AeDigest { end, epoch, root }) = Message::decode(&digest) else {
        panic!("{digest:?}")
    };
    assert_eq!((epoch, root), (n.ring.epoch, 0), "no key held yet");
    let [mine, theirs, gone] = <[Bytes; 3]>::try_from(keys_in(&n, end, "ae", 3)).unwrap();
    put(&mut n, &mine, 40 << 16, Some(b"mine"));
    // A tombstone this node collected: an older live copy must not come back.
    put(&mut n, &gone, 50 << 16, None);
    n.purge(&gone, 50 << 16);
    assert_eq!(n.engine.entry(&gone), None);
    // The peer's leaves differ everywhere: every leaf is listed.
    let leaves = vec![1; super::repair::digest::LEAVES];
    let out = answer(&mut n, 110, link, &digest, Reply::Leaves(leaves));
    let (_, keys) = sent_on_a_link(&out, links);
    let Ok(Message::AeKeys {
        end: e,
        leaves,
        stubs,
    }) = Message::decode(&keys)
    else {
        panic!("{keys:?}")
    };
    assert_eq!((e, leaves.len()), (end, 256));
    let listed: Vec<_> = stubs.iter().map(|s| (&s.key, s.version, s.live)).collect();
    assert_eq!(listed, [(&mine, 40 << 16, true)]);
    // The peer sends a key this node lacks and the stale copy of the deleted
    // one, and wants `mine`.
    let records = vec![
        Record {
            key: theirs.clone(),
            version: 45 << 16,
            value: Some(Bytes::from_static(b"theirs")),
        },
        Record {
            key: gone.clone(),
            version: 30 << 16,
            value: Some(Bytes::from_static(b"zombie")),
        },
    ];
    let diff = Reply::Diff {
        records,
        wants: vec![mine.clone()],
    };
    let out = answer(&mut n, 120, link, &keys, diff);
    assert_eq!(n.engine.get(&theirs).as_deref(), Some(&b"theirs"[..]));
    assert_eq!(
        n.engine.entry(&gone),
        None,
        "a collected delete stays deleted"
    );
    let pushes = sent_on(&out, link);
    assert_eq!(pushes.len(), 1, "{out:?}");
    let Ok(Message::Migrate { records }) = Message::decode(&pushes[0]) else {
        panic!("{pushes:?}")
    };
    assert_eq!(records.len(), 1);
    assert_eq!((&records[0].key, records[0].version), (&mine, 40 << 16));
    // The other replica is owed what was pulled.
    let other = if link == links[0] { 3 } else { 2 };
    assert_eq!(n.repair.resync.owed(other), 1);
    let s = n.ae_status(130);
    assert_eq!(
        (s["comparisons"].as_u64(), s["keys_repaired"].as_u64()),
        (Some(1), Some(2))
    );
    let ranges = s["ranges"].as_array().unwrap();
    let this = ranges
        .iter()
        .find(|r| r["end"] == end)
        .expect("a range it leads");
    assert_eq!(
        (this["age_ms"].as_u64(), this["keys_repaired"].as_u64()),
        (Some(10), Some(2))
    );
}

#[test]
fn the_peer_answers_with_what_differs_and_never_wants_a_collected_delete_back() {
    let (mut n, _, _) = lead_of_three();
    let end = n.anti_entropy.digests.bounds()[0];
    let k = keys_in(&n, end, "p", 6);
    put(&mut n, &k[0], 10 << 16, Some(b"only here"));
    put(&mut n, &k[1], 20 << 16, Some(b"newer here"));
    put(&mut n, &k[2], 20 << 16, Some(b"older here"));
    put(&mut n, &k[3], 50 << 16, None);
    n.purge(&k[3], 50 << 16);
    let stub = |i: usize, version: u64, live: bool| Stub {
        key: k[i].clone(),
        version: version << 16,
        live,
    };
    let ask = Message::AeKeys {
        end,
        leaves: (0..256).collect(),
        stubs: vec![
            stub(1, 15, true),
            stub(2, 25, true),
            stub(3, 40, true),
            stub(4, 5, false),
            stub(5, 60, true),
        ],
    };
    let peer = super::tests::member(&mut n, 40);
    let out = step(
        &mut n,
        200,
        Input::Frame {
            conn: peer,
            frame: ask.encode(),
        },
    );
    let reply = sent_on(&out, peer);
    let Ok(Reply::Diff { records, mut wants }) = Reply::decode(&reply[0]) else {
        panic!("{reply:?}")
    };
    let mut sent: Vec<_> = records.iter().map(|r| (&r.key, r.version >> 16)).collect();
    sent.sort();
    let mut want = vec![(&k[0], 10), (&k[1], 20)];
    want.sort();
    assert_eq!(sent, want, "what the asker lacks or holds older");
    wants.sort();
    let mut expected = vec![k[2].clone(), k[4].clone(), k[5].clone()];
    expected.sort();
    assert_eq!(
        wants, expected,
        "k3 was deleted and collected here: not wanted"
    );
    // A range of another epoch is refused.
    let stale = Message::AeDigest {
        end,
        epoch: n.ring.epoch + 1,
        root: 0,
    };
    let out = step(
        &mut n,
        210,
        Input::Frame {
            conn: peer,
            frame: stale.encode(),
        },
    );
    let reply = sent_on(&out, peer);
    assert!(matches!(
        Reply::decode(&reply[0]),
        Ok(Reply::Refused(Refusal::OffList { .. }))
    ));
}
