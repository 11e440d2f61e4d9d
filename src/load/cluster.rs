//! Redis Cluster routing: key slots, the slot map a seed node reports, and the
//! redirects (`-MOVED`, `-ASK`) a node answers when a key is not its own.
//!
//! A Redis Cluster splits keys over [`SLOTS`] slots; a key's slot is CRC16
//! (XMODEM: polynomial 0x1021, initial value 0, no reflection) of the key
//! modulo 16384, or of its hash tag: the bytes between the first `{` and the
//! next `}` when there is at least one byte between them ([`key_slot`]). Each
//! master serves ranges of slots; `CLUSTER SLOTS` lists them ([`fetch_slots`],
//! a blocking call made once before the load starts).
//!
//! The driver keeps its own copy of the map per thread and corrects it from
//! `-MOVED slot host:port` (the slot lives elsewhere now). `-ASK slot host:port`
//! sends one request to another node (during a slot migration) without changing
//! the map: the request goes again, preceded by `ASKING`.
//!
//! Caveats: replicas in the `CLUSTER SLOTS` reply are ignored (reads go to
//! masters, as redis-benchmark does); an empty endpoint means the seed's own
//! host; a `?` endpoint (unknown) is refused. While slots move, a request sent
//! again after a redirect can reach the new master after a later request for
//! the same key that went there directly; the verify phase judges by the order
//! of the acknowledgements, which is that master's order, but a live resharding
//! with keys still on the old master can show as anomalies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// How long the `CLUSTER SLOTS` call may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest `CLUSTER SLOTS` reply accepted.
const MAX_SLOTS_REPLY: usize = 16 << 20;

/// Deepest nesting of RESP arrays accepted in the reply.
const MAX_DEPTH: u32 = 6;

const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
}

static CRC16: [u16; 256] = crc16_table();

/// CRC16-XMODEM of `data`, as Redis Cluster computes it.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16[((crc >> 8) as u8 ^ b) as usize]
    })
}

/// The part of `key` that is hashed: its hash tag if it has one, else all of it.
pub fn hash_part(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key) {
        if let Some(len) = memchr::memchr(b'}', &key[open + 1..]) {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_part(key)) % SLOTS as u16
}

/// Which master serves each slot.
#[derive(Clone, Debug)]
pub struct SlotMap {
    /// The masters: label (`host:port`) and address.
    pub masters: Vec<(String, SocketAddr)>,
    /// Per slot, an index into `masters`, or [`SlotMap::NONE`].
    pub slots: Vec<u16>,
}

impl SlotMap {
    /// A slot no master serves.
    pub const NONE: u16 = u16::MAX;
}

/// A RESP2 value, as far as `CLUSTER SLOTS` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Int(i64),
    Text(Vec<u8>),
    Null,
    Error(String),
    Array(Vec<Value>),
}

/// Parses one RESP value at `at`: `Ok(None)` until it is all in `buf`.
fn parse_value(buf: &[u8], at: usize, depth: u32) -> Result<Option<(Value, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err("arrays nested too deep".into());
    }
    let Some(lf) = memchr::memchr(b'\n', &buf[at..]) else {
        return Ok(None);
    };
    let line = &buf[at..at + lf];
    let line = line.strip_suffix(b"\r").ok_or("a line without CRLF")?;
    let after = at + lf + 1;
    let (kind, body) = line.split_first().ok_or("an empty line")?;
    let num = || -> Result<i64, String> {
        crate::protocol::kv::parse_i64(body).ok_or_else(|| "a bad number".to_string())
    };
    Ok(match kind {
        b'+' => Some((Value::Text(body.to_vec()), after)),
        b'-' => Some((
            Value::Error(String::from_utf8_lossy(body).into_owned()),
            after,
        )),
        b':' => Some((Value::Int(num()?), after)),
        b'$' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Value::Null, after)));
            }
            if n as usize > MAX_SLOTS_REPLY {
                return Err("a string too long".into());
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Some((Value::Text(buf[after..end].to_vec()), end + 2))
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Value::Null, after)));
            }
            let mut items = Vec::new();
            let mut pos = after;
            for _ in 0..n {
                match parse_value(buf, pos, depth + 1)? {
                    Some((v, next)) => {
                        items.push(v);
                        pos = next;
                    }
                    None => return Ok(None),
                }
            }
            Some((Value::Array(items), pos))
        }
        _ => return Err(format!("a bad type byte {kind:#x}")),
    })
}

/// Builds the slot map from a `CLUSTER SLOTS` reply; `seed_host` stands in for
/// an empty endpoint.
fn slot_map(reply: &Value, seed_host: &str) -> Result<SlotMap, String> {
    let Value::Array(ranges) = reply else {
        return Err(format!("not an array: {reply:?}"));
    };
    let mut map = SlotMap {
        masters: Vec::new(),
        slots: vec![SlotMap::NONE; SLOTS],
    };
    for r in ranges {
        let Value::Array(r) = r else {
            return Err("a range that is not an array".into());
        };
        let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return Err(format!("a range without start, end and master: {r:?}"));
        };
        let (Some(Value::Text(host)), Some(Value::Int(port))) = (master.first(), master.get(1))
        else {
            return Err(format!("a master without host and port: {master:?}"));
        };
        let host = String::from_utf8_lossy(host).into_owned();
        let host = if host.is_empty() {
            seed_host.to_string()
        } else if host == "?" {
            return Err("a master with an unknown endpoint".into());
        } else {
            host
        };
        if !(0..SLOTS as i64).contains(lo) || !(*lo..SLOTS as i64).contains(hi) {
            return Err(format!("a bad slot range {lo}-{hi}"));
        }
        let label = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let index = match map.masters.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                let addr = super::resolve(&label)?;
                map.masters.push((label, addr));
                map.masters.len() - 1
            }
        };
        for s in *lo..=*hi {
            map.slots[s as usize] = index as u16;
        }
    }
    if map.masters.is_empty() {
        return Err("no slot is served".into());
    }
    Ok(map)
}

/// Asks the node at `seed` (`HOST:PORT`) for `CLUSTER SLOTS` and builds the map.
pub fn fetch_slots(seed: &str) -> Result<SlotMap, String> {
    let fail = |e: String| format!("CLUSTER SLOTS from {seed}: {e}");
    let addr = super::resolve(seed)?;
    let mut s =
        TcpStream::connect_timeout(&addr, FETCH_TIMEOUT).map_err(|e| fail(e.to_string()))?;
    s.set_read_timeout(Some(FETCH_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(FETCH_TIMEOUT)))
        .and_then(|()| s.write_all(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n"))
        .map_err(|e| fail(e.to_string()))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let reply = loop {
        if let Some((v, _)) = parse_value(&buf, 0, 0).map_err(fail)? {
            break v;
        }
        if buf.len() > MAX_SLOTS_REPLY {
            return Err(fail("reply too large".into()));
        }
        let n = s.read(&mut chunk).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            return Err(fail("connection closed".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if let Value::Error(e) = &reply {
        return Err(fail(e.clone()));
    }
    let host = seed.rsplit_once(':').map_or(seed, |(h, _)| h);
    slot_map(&reply, host).map_err(fail)
}

/// A redirect from a cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `ASK` (one request, map unchanged) rather than `MOVED`.
    pub ask: bool,
    /// The slot.
    pub slot: u16,
    /// Where to go, `host:port`.
    pub to: String,
}

/// Parses the error line (without `-` and CRLF) `MOVED 3999 127.0.0.1:6381` or
/// `ASK ...`; None for any other error.
pub fn parse_redirect(line: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let ask = match words.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot: u16 = words.next()?.parse().ok()?;
    let to = words.next()?;
    if slot as usize >= SLOTS || to.is_empty() || words.next().is_some() {
        return None;
    }
    // A redirect with an empty host (`:6380`) means the host the client used.
    Some(Redirect {
        ask,
        slot,
        to: to.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_test_vector() {
        // The check value in the Redis Cluster specification's CRC16 section.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn known_key_slots() {
        // Values redis-cli's CLUSTER KEYSLOT prints.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tags_follow_the_first_brace_pair() {
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_part(b"{}"), b"{}");
        assert_eq!(hash_part(b"a{b"), b"a{b");
        assert_eq!(hash_part(b"key:000000001"), b"key:000000001");
    }

    #[test]
    fn redirects_parse() {
        assert_eq!(
            parse_redirect(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirect {
                ask: false,
                slot: 3999,
                to: "127.0.0.1:6381".into()
            })
        );
        assert!(parse_redirect(b"ASK 1 127.0.0.1:7000").unwrap().ask);
        assert_eq!(parse_redirect(b"ERR unknown command"), None);
        assert_eq!(parse_redirect(b"MOVED 16384 127.0.0.1:1"), None);
        assert_eq!(parse_redirect(b"MOVED x 127.0.0.1:1"), None);
        assert_eq!(parse_redirect(b"MOVED 1"), None);
    }

    #[test]
    fn slot_map_from_a_cluster_slots_reply() {
        let reply = b"*2\r\n\
            *3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n\
            *4\r\n:8192\r\n:16383\r\n*3\r\n$0\r\n\r\n:7001\r\n$2\r\nib\r\n\
            *3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nic\r\n";
        for cut in 0..reply.len() {
            assert_eq!(parse_value(&reply[..cut], 0, 0), Ok(None), "cut at {cut}");
        }
        let (v, used) = parse_value(reply, 0, 0).unwrap().unwrap();
        assert_eq!(used, reply.len());
        let map = slot_map(&v, "127.0.0.1").unwrap();
        let labels: Vec<&str> = map.masters.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert_eq!(map.slots[0], 0);
        assert_eq!(map.slots[8191], 0);
        assert_eq!(map.slots[8192], 1);
        assert_eq!(map.slots[16383], 1);
    }

    #[test]
    fn bad_slot_replies_are_refused() {
        let bad: [&[u8]; 4] = [
            b"*1\r\n*3\r\n:5\r\n:2\r\n*2\r\n$1\r\na\r\n:1\r\n",
            b"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",
            b"*1\r\n:1\r\n",
            b"*0\r\n",
        ];
        for b in bad {
            let (v, _) = parse_value(b, 0, 0).unwrap().unwrap();
            assert!(slot_map(&v, "127.0.0.1").is_err(), "{b:?}");
        }
        assert!(parse_value(b"*1\r\n?\r\n", 0, 0).is_err());
        let deep = "*1\r\n".repeat(20);
        assert!(parse_value(deep.as_bytes(), 0, 0).is_err());
    }
}
