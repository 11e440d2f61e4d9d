//! The STATUS JSON as a table a person can read, and plain-text tables in general.
//!
//! The JSON is the manager's STATUS (op 32) with the nodes' own figures merged in
//! by [`super::survey`]: `epoch`, `replicas`, `effective_replicas`, `read_quorum`,
//! `write_quorum`, `live_nodes`, `total_keys`, `copies`, `distinct_keys`,
//! `distinct_keys_estimate`, `max_over_mean_keys`, optionally `source`,
//! `view_of`, `manager_error` and `recovering_ms_left`, and `nodes`, each node with
//! `id`, `addr`, `state`, `token_count`, `tokens`, `share` (a fraction of the ring,
//! 0 to 1), `keys`, `primary_keys`, `catching_up`, `anti_entropy` and `current`.
//! The whole object is described in docs/operations.md.
//!
//! The table: a note when the view is a node's (the manager being away) or the
//! manager is recovering its membership, a summary line (`keys 6 distinct, 18
//! copies`, with `~` and `(estimate)` when the distinct count is one), and a row
//! per node (KEYS: live keys it holds; PRIMARY: those it is the first replica of),
//! then a line per node on its anti-entropy (comparisons, keys repaired, the age
//! of its least recently compared range).
//! A field that is missing shows as `?`, so an older or newer manager still gives a
//! table; the manager's raw STATUS (no distinct count) shows its `total_keys`.
//! Control characters in the cells show as `?`: nothing a peer sends reaches the
//! terminal raw.

use serde_json::Value;

/// Parses a STATUS payload.
pub fn parse_status(payload: &[u8]) -> Result<Value, String> {
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| format!("STATUS is not valid JSON: {e}"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err("STATUS is not a JSON object".into())
    }
}

/// One storage node as STATUS lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: u32,
    /// Where it listens.
    pub addr: String,
    /// `up`, `down`, `joining`, `leaving`.
    pub state: String,
}

/// The nodes of a STATUS object (entries without an id or address are skipped).
pub fn nodes(status: &Value) -> Vec<NodeInfo> {
    let Some(list) = status.get("nodes").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|n| {
            Some(NodeInfo {
                id: u32::try_from(n.get("id")?.as_u64()?).ok()?,
                addr: n.get("addr")?.as_str()?.to_string(),
                state: n
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            })
        })
        .collect()
}

/// The number of live nodes STATUS reports (0 if absent).
pub fn live_nodes(status: &Value) -> u64 {
    status
        .get("live_nodes")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn num(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "?".into(),
    }
}

fn float(v: &Value, field: &str, scale: f64, decimals: usize) -> String {
    match v.get(field).and_then(Value::as_f64) {
        Some(x) => format!("{:.*}", decimals, x * scale),
        None => "?".into(),
    }
}

/// The lines above the summary: where the view comes from when it is not the
/// manager's, and whether the manager is recovering its membership.
fn notes(status: &Value) -> String {
    let mut out = String::new();
    if status.get("source").and_then(Value::as_str) == Some("node") {
        if let Some(e) = status.get("manager_error").and_then(Value::as_str) {
            out.push_str(&format!("manager unavailable: {e}\n"));
        }
        let of = &status["view_of"];
        out.push_str(&format!(
            "as node {} ({}) sees it\n",
            num(of, "id"),
            of.get("addr").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    let recovering = status
        .get("recovering_ms_left")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if recovering > 0 {
        out.push_str(&format!(
            "manager recovering membership, {} s left\n",
            recovering.div_ceil(1000)
        ));
    }
    out
}

/// The summary's key figures: distinct keys and copies when the client merged the
/// nodes' own figures in, else the manager's total.
fn key_figures(status: &Value) -> String {
    match status.get("distinct_keys").and_then(Value::as_u64) {
        Some(distinct) => {
            let estimate = status.get("distinct_keys_estimate") == Some(&Value::Bool(true));
            format!(
                "keys {}{distinct} distinct{}, {} copies",
                if estimate { "~" } else { "" },
                if estimate { " (estimate)" } else { "" },
                num(status, "copies"),
            )
        }
        None => format!("keys {}", num(status, "total_keys")),
    }
}

/// A node's STATE cell: its membership state, then what it says of itself (a
/// restarted node that has no ring from the manager yet shows `starting`: it will
/// catch up, so its figures are not yet its share).
fn state_cell(node: &Value) -> String {
    let state = node.get("state").and_then(Value::as_str).unwrap_or("?");
    let mut cell = state.to_string();
    let flag = |f: &str| node.get(f).and_then(Value::as_bool) == Some(true);
    if node.get("ring_received") == Some(&Value::Bool(false)) {
        cell.push_str(", starting (no ring yet)");
    } else if flag("catching_up") {
        cell.push_str(", catching up");
    }
    if flag("leaving") && state != "leaving" {
        cell.push_str(", leaving");
    }
    if node.get("current") == Some(&Value::Bool(false)) && state != "down" {
        cell.push_str(", not answering");
    }
    cell
}

/// Formats a STATUS object: notes, a summary line, then one row per node.
pub fn format_status(status: &Value) -> String {
    let n = num(status, "replicas");
    let effective = num(status, "effective_replicas");
    let mut summary = notes(status);
    summary.push_str(&format!(
        "epoch {}  live nodes {}/{}  N/R/W {}/{}/{}",
        num(status, "epoch"),
        num(status, "live_nodes"),
        status
            .get("nodes")
            .and_then(Value::as_array)
            .map_or("?".into(), |a| a.len().to_string()),
        n,
        num(status, "read_quorum"),
        num(status, "write_quorum"),
    ));
    if effective != n {
        summary.push_str(&format!(" (effective N {effective})"));
    }
    summary.push_str(&format!(
        "  {}  max/mean {}\n",
        key_figures(status),
        float(status, "max_over_mean_keys", 1.0, 2)
    ));
    let empty = Vec::new();
    let list = status
        .get("nodes")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|node| {
            let tokens = match node.get("token_count") {
                Some(_) => num(node, "token_count"),
                None => node
                    .get("tokens")
                    .and_then(Value::as_array)
                    .map_or("?".into(), |t| t.len().to_string()),
            };
            vec![
                num(node, "id"),
                node.get("addr")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                state_cell(node),
                tokens,
                float(node, "share", 100.0, 1),
                num(node, "keys"),
                num(node, "primary_keys"),
            ]
        })
        .collect();
    summary
        + &table(
            &[
                "ID", "ADDRESS", "STATE", "TOKENS", "SHARE(%)", "KEYS", "PRIMARY",
            ],
            &[true, false, false, true, true, true, true],
            &rows,
        )
        + &anti_entropy_lines(list)
}

/// One line per node that reported anti-entropy figures: comparisons and keys
/// repaired, and the age of its least recently compared range (or how many of
/// its ranges were never compared).
fn anti_entropy_lines(nodes: &[Value]) -> String {
    let mut out = String::new();
    for node in nodes {
        let Some(ae) = node.get("anti_entropy").filter(|a| a.is_object()) else {
            continue;
        };
        let ranges = ae.get("ranges").and_then(Value::as_array);
        let ages: Vec<Option<u64>> = (ranges.into_iter().flatten())
            .map(|r| r.get("age_ms").and_then(Value::as_u64))
            .collect();
        let never = ages.iter().filter(|a| a.is_none()).count();
        let oldest = ages.iter().flatten().max();
        let age = match (never, oldest) {
            (0, Some(ms)) => format!("oldest range compared {:.1} s ago", *ms as f64 / 1000.0),
            (0, None) => "leads no range".to_string(),
            (n, _) => format!("{n} of {} ranges not compared yet", ages.len()),
        };
        out.push_str(&format!(
            "anti-entropy node {}: {} comparisons, {} keys repaired, {age}{}\n",
            num(node, "id"),
            num(ae, "comparisons"),
            num(ae, "keys_repaired"),
            if num(ae, "rate") == "0" { " (off)" } else { "" },
        ));
    }
    out
}

/// Renders rows under headers, columns two spaces apart, numbers (`right[i]`)
/// right-aligned. Every line ends with a newline; no trailing spaces.
pub fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let clean = |cell: &String| -> String {
        cell.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(clean).collect()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                line.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"effective_replicas":2,"epoch":7,"live_nodes":2,
        "max_over_mean_keys":1.0526,"nodes":[
        {"addr":"127.0.0.1:7001","id":1,"keys":20,"share":0.5,"state":"up",
         "token_count":64,"tokens":[1,2]},
        {"addr":"127.0.0.1:7002","id":2,"keys":18,"share":0.25,"state":"up","catching_up":true,
         "token_count":64,"tokens":[3]},
        {"addr":"127.0.0.1:17003","id":12,"keys":0,"share":0.25,"state":"down",
         "token_count":8,"tokens":[4]}],
        "read_quorum":2,"replicas":3,"total_keys":38,"write_quorum":2}"#;

    #[test]
    fn status_table() {
        let v = parse_status(SAMPLE.as_bytes()).unwrap();
        let want = "\
epoch 7  live nodes 2/3  N/R/W 3/2/2 (effective N 2)  keys 38  max/mean 1.05
ID  ADDRESS          STATE            TOKENS  SHARE(%)  KEYS  PRIMARY
 1  127.0.0.1:7001   up                   64      50.0    20        ?
 2  127.0.0.1:7002   up, catching up      64      25.0    18        ?
12  127.0.0.1:17003  down                  8      25.0     0        ?
";
        assert_eq!(format_status(&v), want);
    }

    #[test]
    fn anti_entropy_lines_per_node() {
        let v = parse_status(
            br#"{"epoch":1,"nodes":[
            {"id":1,"anti_entropy":{"rate":10,"comparisons":7,"keys_repaired":3,
             "ranges":[{"end":5,"age_ms":1500,"keys_repaired":3},{"end":9,"age_ms":200}]}},
            {"id":2,"anti_entropy":{"rate":0,"comparisons":0,"keys_repaired":0,
             "ranges":[{"end":7,"age_ms":null}]}},
            {"id":3}]}"#,
        )
        .unwrap();
        let text = format_status(&v);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("anti")).collect();
        assert_eq!(
            lines,
            [
                "anti-entropy node 1: 7 comparisons, 3 keys repaired, oldest range compared 1.5 s ago",
                "anti-entropy node 2: 0 comparisons, 0 keys repaired, 1 of 1 ranges not compared yet (off)",
            ]
        );
    }

    #[test]
    fn missing_fields_show_question_marks() {
        let v = parse_status(br#"{"epoch":1,"nodes":[{"id":3,"tokens":[1,2,3]}]}"#).unwrap();
        let want = "\
epoch 1  live nodes ?/1  N/R/W ?/?/?  keys ?  max/mean ?
ID  ADDRESS  STATE  TOKENS  SHARE(%)  KEYS  PRIMARY
 3  ?        ?           3         ?     ?        ?
";
        assert_eq!(format_status(&v), want);
    }

    #[test]
    fn merged_figures_and_notes() {
        let v = parse_status(
            br#"{"epoch":3,"replicas":2,"effective_replicas":2,"read_quorum":1,
            "write_quorum":2,"live_nodes":1,"copies":12,"distinct_keys":6,
            "distinct_keys_estimate":false,"max_over_mean_keys":1.0,
            "source":"node","view_of":{"id":2,"addr":"127.0.0.1:7002"},
            "manager_error":"cannot reach manager 127.0.0.1:7000: connection refused",
            "nodes":[
            {"id":1,"addr":"127.0.0.1:7001","state":"up","token_count":8,"share":0.5,
             "keys":6,"primary_keys":2,"catching_up":false,"current":false},
            {"id":3,"addr":"127.0.0.1:7003","state":"up","token_count":8,"share":0,
             "keys":0,"primary_keys":0,"catching_up":false,"ring_received":false,
             "current":true},
            {"id":2,"addr":"127.0.0.1:7002","state":"up","token_count":8,"share":0.5,
             "keys":6,"primary_keys":4,"catching_up":true,"leaving":true,"current":true}]}"#,
        )
        .unwrap();
        let want = "\
manager unavailable: cannot reach manager 127.0.0.1:7000: connection refused
as node 2 (127.0.0.1:7002) sees it
epoch 3  live nodes 1/3  N/R/W 2/1/2  keys 6 distinct, 12 copies  max/mean 1.00
ID  ADDRESS         STATE                       TOKENS  SHARE(%)  KEYS  PRIMARY
 1  127.0.0.1:7001  up, not answering                8      50.0     6        2
 3  127.0.0.1:7003  up, starting (no ring yet)       8       0.0     0        0
 2  127.0.0.1:7002  up, catching up, leaving         8      50.0     6        4
";
        assert_eq!(format_status(&v), want);
        let v = parse_status(
            br#"{"epoch":0,"live_nodes":0,"nodes":[],"recovering_ms_left":2100,
            "copies":0,"distinct_keys":0,"distinct_keys_estimate":true}"#,
        )
        .unwrap();
        let text = format_status(&v);
        assert!(
            text.starts_with("manager recovering membership, 3 s left\n"),
            "{text}"
        );
        assert!(
            text.contains("keys ~0 distinct (estimate), 0 copies"),
            "{text}"
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let v =
            parse_status(br#"{"nodes":[{"id":1,"addr":"\u001b[2J127.0.0.1:1","state":"up\r"}]}"#)
                .unwrap();
        let text = format_status(&v);
        assert!(text.contains("?[2J127.0.0.1:1"), "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }

    #[test]
    fn node_list_and_live_count() {
        let v = parse_status(SAMPLE.as_bytes()).unwrap();
        assert_eq!(live_nodes(&v), 2);
        let n = nodes(&v);
        assert_eq!(n.len(), 3);
        assert_eq!(
            n[2],
            NodeInfo {
                id: 12,
                addr: "127.0.0.1:17003".into(),
                state: "down".into()
            }
        );
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(parse_status(b"not json").is_err());
        assert!(parse_status(b"[1,2]").is_err());
    }
}
