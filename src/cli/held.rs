//! `gtstore status --keys`: after the status table, what each node holds,
//! asked of every node listed (STATUS with the payload `keys`: its first
//! 1,000 live keys in byte order, and whether it holds more). Keys print as
//! `gtstore scan` prints them ([`super::display::key_line`]), indented under
//! their node; a node that does not answer gets one line saying why.

use crate::client::node_status_asking;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// The keys each node of the merged status JSON `status` holds, as text,
/// proving `password` to each node when one is given.
pub fn held_keys(status: &[u8], timeout: Duration, password: Option<&str>) -> String {
    let status: Value = serde_json::from_slice(status).unwrap_or(Value::Null);
    let mut out = String::new();
    for node in status["nodes"].as_array().into_iter().flatten() {
        let Some(addr) = node["addr"].as_str() else {
            continue;
        };
        let id = &node["id"];
        let reply = node_status_asking(addr, b"keys", timeout, password)
            .map_err(|e| e.to_string())
            .and_then(|p| serde_json::from_slice::<Value>(&p).map_err(|e| e.to_string()));
        let v = match reply {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(out, "node {id} {addr}: not answering ({e})");
                continue;
            }
        };
        let keys: Vec<Vec<u8>> = (v["held_keys"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .map(|s| s.chars().map(|c| c as u32 as u8).collect())
            .collect();
        let total = v["keys"].as_u64().unwrap_or(keys.len() as u64);
        let _ = writeln!(out, "node {id} {addr}: {total} keys");
        for k in &keys {
            let _ = writeln!(out, "  {}", super::display::key_line(k));
        }
        if v["held_keys_capped"] == true {
            let _ = writeln!(out, "  (the first {} of {total} shown)", keys.len());
        }
    }
    out
}
