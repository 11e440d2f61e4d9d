//! Unit tests of plain reads over replicas: a GET asks only the replicas its
//! read quorum needs; the others are spares, asked when an asked one fails the
//! round or after [`SPECULATIVE_READ_MS`](super::replication::SPECULATIVE_READ_MS)
//! (one timer at a time serves every read waiting for that delay).

use super::replication::{SPECULATIVE_READ_MS, TIMER_SPARES};
use super::tests::{lead_of_three, sent_on, step};
use super::*;
use crate::protocol::cluster::Reply;

/// Sends a client's GET of `key` to the lead; returns the step's outputs and
/// which of `links` it asked.
fn get(
    n: &mut StorageNode,
    now: Millis,
    key: &str,
    links: [ConnId; 2],
) -> (Vec<Output>, Vec<usize>) {
    let frame = Frame::new(op::GET, 9, 0, key.to_string());
    let out = step(
        n,
        now,
        Input::Frame {
            conn: ConnId::new(30, 1),
            frame,
        },
    );
    let asked = (0..2)
        .filter(|&i| !sent_on(&out, links[i]).is_empty())
        .collect();
    (out, asked)
}

/// A replica's "no copy" answer to the one ask `out` sent on `link`.
fn not_found(out: &[Output], link: ConnId) -> Input {
    let ask = &sent_on(out, link)[0];
    let mut frame = Reply::NotFound.encode();
    frame.client_id = ask.client_id;
    Input::Frame { conn: link, frame }
}

fn asks_on(out: &[Output], link: ConnId) -> usize {
    let sent = sent_on(out, link);
    assert!(sent.iter().all(|f| f.op == op::REPL_READ), "{sent:?}");
    sent.len()
}

#[test]
fn a_get_asks_one_replica_for_r_two_and_the_spare_when_that_link_breaks() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let (_, asked) = get(&mut n, 10, &key, links);
    assert_eq!(asked.len(), 1, "R = 2: one other copy is enough");
    let (first, spare) = (links[asked[0]], links[1 - asked[0]]);
    let out = step(&mut n, 11, Input::Closed { conn: first });
    assert_eq!(
        asks_on(&out, spare),
        1,
        "the spare is asked at once: {out:?}"
    );
    assert!(sent_on(&out, client).is_empty());
    // The spare's answer completes the read.
    let answer = not_found(&out, spare);
    let out = step(&mut n, 12, answer);
    let replies = sent_on(&out, client);
    assert_eq!(replies.len(), 1, "{out:?}");
    assert_eq!(replies[0].op, op::NOT_FOUND);
}

#[test]
fn a_get_whose_replica_is_slow_asks_the_spare_after_the_speculative_delay() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 10, &key, links);
    let spare = links[1 - asked[0]];
    let timer = out
        .iter()
        .find_map(|o| match o {
            Output::Timer { at, id } if *id == TIMER_SPARES => Some((*at, *id)),
            _ => None,
        })
        .expect("a speculative-read timer");
    assert_eq!(timer.0, 10 + SPECULATIVE_READ_MS);
    let out = step(&mut n, timer.0, Input::Timer { id: timer.1 });
    assert_eq!(asks_on(&out, spare), 1, "{out:?}");
}

#[test]
fn the_speculative_timer_of_an_answered_get_does_nothing() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 100, &key, links);
    let first = links[asked[0]];
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::Timer { id, .. } if *id == TIMER_SPARES => Some(*id),
            _ => None,
        })
        .expect("a timer");
    let answer = not_found(&out, first);
    let replies = step(&mut n, 101, answer);
    assert_eq!(
        sent_on(&replies, ConnId::new(30, 1)).len(),
        1,
        "{replies:?}"
    );
    let out = step(&mut n, 150, Input::Timer { id });
    assert!(
        links.iter().all(|&l| sent_on(&out, l).is_empty()),
        "{out:?}"
    );
}

#[test]
fn a_conditional_op_prepares_at_every_replica() {
    let (mut n, links, key) = lead_of_three();
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 1", key.len()));
    let out = step(
        &mut n,
        10,
        Input::Frame {
            conn: ConnId::new(30, 1),
            frame: incr,
        },
    );
    for l in links {
        let sent = sent_on(&out, l);
        assert_eq!(sent.len(), 1, "{out:?}");
        assert_eq!(sent[0].op, op::PREPARE, "{out:?}");
    }
}

#[test]
fn one_speculative_timer_at_a_time_serves_every_read_in_turn() {
    let (mut n, links, key) = lead_of_three();
    let timers = |out: &[Output]| -> Vec<Millis> {
        out.iter()
            .filter_map(|o| match o {
                Output::Timer { at, id } if *id == TIMER_SPARES => Some(*at),
                _ => None,
            })
            .collect()
    };
    let (out, asked) = get(&mut n, 10, &key, links);
    assert_eq!(timers(&out), vec![10 + SPECULATIVE_READ_MS]);
    let (out, asked2) = get(&mut n, 20, &key, links);
    assert!(timers(&out).is_empty(), "one timer is set: {out:?}");
    assert_eq!(asked, asked2, "both reads ask the same replica first");
    let spare = links[1 - asked[0]];
    // The first read's spare is due; the second's is not yet: the timer is
    // set again for it.
    let out = step(
        &mut n,
        10 + SPECULATIVE_READ_MS,
        Input::Timer { id: TIMER_SPARES },
    );
    assert_eq!(asks_on(&out, spare), 1, "{out:?}");
    assert_eq!(timers(&out), vec![20 + SPECULATIVE_READ_MS], "{out:?}");
    let out = step(
        &mut n,
        20 + SPECULATIVE_READ_MS,
        Input::Timer { id: TIMER_SPARES },
    );
    assert_eq!(asks_on(&out, spare), 1, "{out:?}");
    assert!(timers(&out).is_empty(), "none left: {out:?}");
}
