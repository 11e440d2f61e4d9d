//! The ring's text form (described in the module docs of [`crate::ring`]): encode,
//! and a strict decoder that reports what is wrong and never panics.

use super::{NodeEntry, NodeState, Ring, Token};
use crate::protocol::{Error, ErrorCode};
use std::fmt::Write;

/// Writes the canonical text of `ring`.
pub(super) fn encode(ring: &Ring) -> String {
    let mut out = String::with_capacity(64 + ring.points.len() * 21);
    // Writing into a String cannot fail.
    let _ = writeln!(out, "epoch {}", ring.epoch);
    let _ = writeln!(
        out,
        "replicas {} {} {}",
        ring.replicas, ring.read_quorum, ring.write_quorum
    );
    for n in &ring.nodes {
        let _ = write!(out, "node {} {} {} ", n.id, n.addr, n.state.as_str());
        if n.tokens.is_empty() {
            out.push('-');
        }
        for (i, t) in n.tokens.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{t}");
        }
        out.push('\n');
    }
    out
}

/// Parses the canonical text of a ring.
pub(super) fn decode(text: &[u8]) -> Result<Ring, Error> {
    let body = match text.split_last() {
        Some((b'\n', body)) => body,
        Some(_) => return Err(bad(None, "text does not end with a newline")),
        None => return Err(bad(None, "text is empty")),
    };
    let mut lines = body.split(|&b| b == b'\n');

    let epoch_line = lines.next().unwrap_or_default();
    let epoch = match fields::<2>(epoch_line) {
        Some([b"epoch", e]) => parse_dec(e).ok_or_else(|| bad(Some(1), "bad epoch"))?,
        _ => return Err(bad(Some(1), "expected `epoch E`")),
    };

    let replicas_line = lines
        .next()
        .ok_or_else(|| bad(Some(2), "missing `replicas N R W` line"))?;
    let (replicas, read_quorum, write_quorum) = match fields::<4>(replicas_line) {
        Some([b"replicas", n, r, w]) => {
            let n = parse_u32(n).ok_or_else(|| bad(Some(2), "bad replica count"))?;
            let r = parse_u32(r).ok_or_else(|| bad(Some(2), "bad read quorum"))?;
            let w = parse_u32(w).ok_or_else(|| bad(Some(2), "bad write quorum"))?;
            (n, r, w)
        }
        _ => return Err(bad(Some(2), "expected `replicas N R W`")),
    };

    let mut nodes: Vec<NodeEntry> = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 3;
        let [word, id, addr, state, tokens] = match fields::<5>(line) {
            Some(f) => f,
            None => {
                return Err(bad(
                    Some(line_no),
                    "expected `node ID HOST:PORT STATE TOKENS`",
                ))
            }
        };
        if word != b"node" {
            return Err(bad(
                Some(line_no),
                "expected `node ID HOST:PORT STATE TOKENS`",
            ));
        }
        let id = parse_u32(id).ok_or_else(|| bad(Some(line_no), "bad node id"))?;
        if let Some(last) = nodes.last() {
            if id <= last.id {
                return Err(bad(Some(line_no), "node ids not in increasing order"));
            }
        }
        let addr = match std::str::from_utf8(addr) {
            Ok(a) if super::valid_addr(a) => a.to_string(),
            _ => return Err(bad(Some(line_no), "address is not HOST:PORT")),
        };
        let state = NodeState::from_word(state).ok_or_else(|| {
            bad(
                Some(line_no),
                "bad state: expected up, down, joining or leaving",
            )
        })?;
        let tokens = parse_tokens(tokens).map_err(|what| bad(Some(line_no), what))?;
        nodes.push(NodeEntry {
            id,
            addr,
            state,
            tokens,
        });
    }
    Ring::try_new(epoch, replicas, read_quorum, write_quorum, nodes)
}

/// Splits a line on single spaces into exactly `N` fields; `None` for any other count.
/// Empty fields (from two spaces in a row, or a space at either end) are kept and
/// rejected later by the field parsers.
fn fields<const N: usize>(line: &[u8]) -> Option<[&[u8]; N]> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut parts = line.split(|&b| b == b' ');
    for slot in out.iter_mut() {
        *slot = parts.next()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(out),
    }
}

/// `-`, or canonical decimal tokens joined by commas, strictly increasing.
fn parse_tokens(field: &[u8]) -> Result<Vec<Token>, &'static str> {
    if field == b"-" {
        return Ok(Vec::new());
    }
    let mut tokens: Vec<Token> = Vec::new();
    for part in field.split(|&b| b == b',') {
        let t = parse_dec(part).ok_or("bad token list")?;
        if let Some(&last) = tokens.last() {
            if t <= last {
                return Err("tokens not in increasing order");
            }
        }
        tokens.push(t);
    }
    Ok(tokens)
}

/// A canonical decimal `u64`: one or more ASCII digits, no sign, no leading zero
/// (except `0` itself), no overflow.
pub(super) fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_dec(s).and_then(|v| u32::try_from(v).ok())
}

fn bad(line: Option<usize>, what: &str) -> Error {
    let message = match line {
        Some(n) => format!("bad ring text: line {n}: {what}"),
        None => format!("bad ring text: {what}"),
    };
    Error::new(ErrorCode::Internal, message)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{arb_points, entry};
    use super::super::{plan_tokens, NodeState};
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Ring {
        Ring::new(
            7,
            3,
            2,
            2,
            vec![
                entry(2, NodeState::Joining, &[]),
                entry(
                    1,
                    NodeState::Up,
                    &[9223372036854775807, 1537228672809129301],
                ),
            ],
        )
    }

    /// The example in the module docs of `crate::ring`.
    const SAMPLE: &str = "epoch 7\n\
        replicas 3 2 2\n\
        node 1 10.0.0.1:7000 up 1537228672809129301,9223372036854775807\n\
        node 2 10.0.0.2:7000 joining -\n";

    #[test]
    fn encodes_the_documented_form() {
        assert_eq!(sample().encode(), SAMPLE);
        assert_eq!(Ring::decode(SAMPLE.as_bytes()), Ok(sample()));
        assert_eq!(Ring::empty().encode(), "epoch 0\nreplicas 1 1 1\n");
        assert_eq!(
            Ring::decode(b"epoch 0\nreplicas 1 1 1\n"),
            Ok(Ring::empty())
        );
        let extremes = Ring::new(
            u64::MAX,
            u32::MAX,
            u32::MAX,
            1,
            vec![NodeEntry {
                id: u32::MAX,
                addr: "[::1]:65535".to_string(),
                state: NodeState::Leaving,
                tokens: vec![0, u64::MAX],
            }],
        );
        let text = extremes.encode();
        assert_eq!(
            text,
            "epoch 18446744073709551615\nreplicas 4294967295 4294967295 1\n\
             node 4294967295 [::1]:65535 leaving 0,18446744073709551615\n"
        );
        assert_eq!(Ring::decode(text.as_bytes()), Ok(extremes));
    }

    #[test]
    fn rejects_malformed_text() {
        let cases: [(&str, &str); 32] = [
            ("", "empty"),
            ("epoch 7\nreplicas 3 2 2", "newline"),
            ("epoch 7\n", "missing `replicas"),
            ("epoch 7\r\nreplicas 3 2 2\n", "line 1"),
            ("epoch\nreplicas 3 2 2\n", "line 1"),
            ("epoch  7\nreplicas 3 2 2\n", "line 1"),
            ("epoch 7 \nreplicas 3 2 2\n", "line 1"),
            ("Epoch 7\nreplicas 3 2 2\n", "line 1"),
            ("epoch -7\nreplicas 3 2 2\n", "bad epoch"),
            ("epoch 07\nreplicas 3 2 2\n", "bad epoch"),
            ("epoch 18446744073709551616\nreplicas 3 2 2\n", "bad epoch"),
            ("epoch 7\nreplicas 3 2\n", "line 2"),
            ("epoch 7\nreplicas 3 2 2 2\n", "line 2"),
            ("epoch 7\nreplicas 4294967296 2 2\n", "replica count"),
            ("epoch 7\nreplicas 3 x 2\n", "read quorum"),
            ("epoch 7\nreplicas 3 2 +2\n", "write quorum"),
            ("epoch 7\nreplicas 0 1 1\n", "replicas must be"),
            ("epoch 7\nreplicas 3 4 2\n", "read quorum 4"),
            ("epoch 7\nreplicas 3 2 0\n", "write quorum 0"),
            ("epoch 7\nreplicas 3 2 2\n\n", "line 3"),
            ("epoch 7\nreplicas 3 2 2\nnode 1 h:1 up\n", "line 3"),
            ("epoch 7\nreplicas 3 2 2\nnodes 1 h:1 up 5\n", "line 3"),
            ("epoch 7\nreplicas 3 2 2\nnode 1 h:1 up 5 6\n", "line 3"),
            ("epoch 7\nreplicas 3 2 2\nnode x h:1 up 5\n", "bad node id"),
            ("epoch 7\nreplicas 3 2 2\nnode 1 h up 5\n", "HOST:PORT"),
            ("epoch 7\nreplicas 3 2 2\nnode 1 h:1 UP 5\n", "bad state"),
            (
                "epoch 7\nreplicas 3 2 2\nnode 1 h:1 up \n",
                "bad token list",
            ),
            (
                "epoch 7\nreplicas 3 2 2\nnode 1 h:1 up 5,\n",
                "bad token list",
            ),
            ("epoch 7\nreplicas 3 2 2\nnode 1 h:1 up 6,5\n", "increasing"),
            ("epoch 7\nreplicas 3 2 2\nnode 1 h:1 up 5,5\n", "increasing"),
            (
                "epoch 7\nreplicas 3 2 2\nnode 2 h:1 up 5\nnode 1 h:1 up 6\n",
                "line 4: node ids",
            ),
            (
                "epoch 7\nreplicas 3 2 2\nnode 1 h:1 up 5\nnode 2 h:1 up 1,5\n",
                "token 5 appears twice",
            ),
        ];
        for (text, why) in cases {
            let err = Ring::decode(text.as_bytes()).expect_err(text);
            assert_eq!(err.code, ErrorCode::Internal, "{text:?}");
            assert!(
                err.message.contains(why),
                "{text:?}: {:?} should mention {why:?}",
                err.message
            );
        }
        assert!(Ring::decode(b"epoch 7\nreplicas 3 2 2\nnode 1 \xff:1 up 5\n").is_err());
    }

    fn arb_ring() -> impl Strategy<Value = Ring> {
        let addr = prop_oneof![
            ("[a-z][a-z0-9.-]{0,20}", any::<u16>()).prop_map(|(h, p)| format!("{h}:{p}")),
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| format!("{}.{}.{}.{}:{p}", ip[0], ip[1], ip[2], ip[3])),
            any::<u16>().prop_map(|p| format!("[::1]:{p}")),
        ];
        let state = prop::sample::select(NodeState::ALL.to_vec());
        (
            any::<u64>(),
            (1u32..6).prop_flat_map(|n| (Just(n), 1..=n, 1..=n)),
            prop::collection::vec((addr, state), 0..6),
            arb_points(),
        )
            .prop_map(|(epoch, (n, r, w), mut nodes, points)| {
                // Node k gets id 3k+1 and the tokens arb_points gave some id; ids of
                // arb_points beyond the node list are dropped.
                let entries = nodes
                    .drain(..)
                    .enumerate()
                    .map(|(k, (addr, state))| NodeEntry {
                        id: 3 * k as u32 + 1,
                        addr,
                        state,
                        tokens: points
                            .iter()
                            .filter(|p| p.1 % 7 == k as u32)
                            .map(|p| p.0)
                            .collect(),
                    })
                    .collect();
                Ring::new(epoch, n, r, w, entries)
            })
    }

    proptest! {
        #[test]
        fn round_trip(ring in arb_ring()) {
            let text = ring.encode();
            let back = Ring::decode(text.as_bytes());
            prop_assert_eq!(back.as_ref(), Ok(&ring), "{}", text);
            prop_assert_eq!(back.unwrap().encode(), text);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Ring::decode(&bytes);
        }

        #[test]
        fn mangled_text_never_panics(
            ring in arb_ring(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = ring.encode().into_bytes();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(decoded) = Ring::decode(&bytes) {
                // Whatever is accepted is canonical: it encodes back to the same bytes.
                prop_assert_eq!(decoded.encode().into_bytes(), bytes.clone());
            }
            let _ = Ring::decode(&bytes[..cut.index(bytes.len() + 1)]);
        }
    }

    #[test]
    fn planned_rings_round_trip() {
        let mut ring = Ring::empty();
        for id in 1..=5u32 {
            let addr = format!("node{id}.example:7000");
            let tokens = plan_tokens(ring.points(), id, 16, super::super::hash64(addr.as_bytes()));
            ring.upsert_node(NodeEntry {
                id,
                addr,
                state: NodeState::Up,
                tokens,
            });
            ring.epoch += 1;
            let back = Ring::decode(ring.encode().as_bytes()).unwrap();
            assert_eq!(back, ring);
        }
    }
}
