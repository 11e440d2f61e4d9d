//! The run's results: the figures merged from every thread, the verdict (exit
//! status), and their two forms, a table for people and one JSON object.

use super::driver::VerifyCounts;
use super::spec::Op;
use super::stats::{fmt_ns, thousands, Stats, Tick};
use super::wire::Proto;
use super::Settings;
use serde_json::json;
use std::fmt::Write as _;

/// The whole run's results.
pub struct Report {
    /// What was driven.
    pub target: String,
    /// Its protocol.
    pub proto: Proto,
    /// The settings used.
    pub settings: Settings,
    /// Measured-phase counts, merged.
    pub stats: Stats,
    /// What verification found (None when it was off).
    pub verify: Option<VerifyCounts>,
    /// Connections that broke or could not be opened again, over the whole run.
    pub broken: u64,
    /// CPU seconds (user, system) and wall seconds over the measured phase.
    pub cpu: Option<(f64, f64, f64)>,
    /// The progress lines' figures.
    pub per_second: Vec<Tick>,
}

impl Report {
    /// Measured requests per second.
    pub fn throughput(&self) -> f64 {
        if self.stats.measured_ns == 0 {
            0.0
        } else {
            self.stats.requests as f64 * 1e9 / self.stats.measured_ns as f64
        }
    }

    /// Keys lost or damaged, plus keys that could not be checked.
    pub fn lost(&self) -> u64 {
        self.verify.map_or(0, |v| v.lost() + v.errors)
    }

    /// Why the run failed, if it did: measured requests answered with an error,
    /// keys the verify phase could not read, or connections that broke. A failed
    /// run's figures do not measure the target.
    pub fn failure(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.stats.error_total() > 0 {
            let codes: Vec<String> = self
                .stats
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect();
            why.push(format!(
                "{} requests failed ({})",
                thousands(self.stats.error_total()),
                codes.join(", ")
            ));
        }
        if let Some(v) = self.verify.filter(|v| v.errors > 0) {
            why.push(format!(
                "{} keys could not be read back",
                thousands(v.errors)
            ));
        }
        if self.broken > 0 {
            why.push(format!("{} connections broke", thousands(self.broken)));
        }
        (!why.is_empty()).then(|| format!("the run failed: {}", why.join(", ")))
    }

    /// The exit status the report calls for: 2 if the run failed (see
    /// [`Report::failure`]), else 1 if verification found lost data, else 0.
    pub fn exit_status(&self) -> u8 {
        if self.failure().is_some() {
            2
        } else if self.lost() > 0 {
            1
        } else {
            0
        }
    }

    /// The tool's CPU use as a percentage of one core.
    pub fn cpu_percent(&self) -> Option<f64> {
        self.cpu
            .filter(|c| c.2 > 0.0)
            .map(|(u, s, w)| (u + s) / w * 100.0)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.settings;
        let h = &self.stats.latency;
        let us = |ns: u64| ns as f64 / 1e3;
        let total = self.stats.requests.max(1) as f64;
        let ops: serde_json::Map<String, serde_json::Value> = Op::ALL
            .iter()
            .filter(|o| self.stats.ops[o.index()].requests > 0 || s.mix.contains(**o))
            .map(|o| {
                let c = &self.stats.ops[o.index()];
                (
                    o.name().to_string(),
                    json!({"requests": c.requests, "hits": c.hits, "misses": c.misses,
                           "conflicts": c.conflicts, "errors": c.errors}),
                )
            })
            .collect();
        let nodes: Vec<serde_json::Value> = self
            .stats
            .nodes
            .iter()
            .map(|(k, v)| json!({"node": k, "requests": v, "share": *v as f64 / total}))
            .collect();
        let per_second: Vec<serde_json::Value> = self
            .per_second
            .iter()
            .map(|t| {
                json!({"second": t.second, "requests": t.requests, "throughput": t.rate(),
                       "p50_us": us(t.latency.value_at_quantile(0.5)),
                       "p99_us": us(t.latency.value_at_quantile(0.99)),
                       "max_us": us(t.latency.max()),
                       "errors": t.errors, "warmup": t.warmup})
            })
            .collect();
        json!({
            "target": self.target,
            "protocol": self.proto.name(),
            "clients": s.clients,
            "pipeline": s.pipeline,
            "threads": s.threads,
            "mix": s.mix.to_string(),
            "keys": s.keys,
            "key_dist": s.key_dist.to_string(),
            "value_size": s.value_size.to_string(),
            "seed": s.seed,
            "measured_s": self.stats.measured_ns as f64 / 1e9,
            "requests": self.stats.requests,
            "throughput": self.throughput(),
            "latency_us": {
                "p50": us(h.value_at_quantile(0.5)),
                "p90": us(h.value_at_quantile(0.9)),
                "p99": us(h.value_at_quantile(0.99)),
                "p99.9": us(h.value_at_quantile(0.999)),
                "max": us(h.max()),
                "mean": h.mean() / 1e3,
            },
            "ops": ops,
            "errors": self.stats.errors,
            "errors_total": self.stats.error_total(),
            "nodes": nodes,
            "redirects": {"moved": self.stats.moved, "ask": self.stats.asked},
            "cpu": self.cpu.map(|(u, sy, w)| json!({
                "user_s": u, "sys_s": sy, "wall_s": w,
                "percent_of_one_core": (u + sy) / w.max(1e-9) * 100.0})),
            "verify": self.verify.map(|v| json!({
                "checked": v.checked, "missing": v.missing, "wrong": v.wrong,
                "undeleted": v.undeleted, "anomalies": v.anomalies, "errors": v.errors,
                "unknown": v.unknown,
                "lost": v.lost()})),
            "connections_broken": self.broken,
            "failure": self.failure(),
            "per_second": per_second,
        })
    }

    /// The report's per-op table and its error line.
    fn ops_and_errors(&self, o: &mut String) {
        let s = &self.settings;
        let _ = writeln!(
            o,
            "ops       {:<7} {:>12} {:>12} {:>12} {:>10} {:>8}",
            "op", "requests", "hit/ok", "miss", "conflict", "errors"
        );
        for op in Op::ALL {
            let c = &self.stats.ops[op.index()];
            if c.requests == 0 && !s.mix.contains(op) {
                continue;
            }
            let _ = writeln!(
                o,
                "          {:<7} {:>12} {:>12} {:>12} {:>10} {:>8}",
                op.name(),
                thousands(c.requests),
                thousands(c.hits),
                thousands(c.misses),
                thousands(c.conflicts),
                thousands(c.errors)
            );
        }
        if self.stats.errors.is_empty() {
            let _ = writeln!(o, "errors    none");
        } else {
            let list: Vec<String> = self
                .stats
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect();
            let _ = writeln!(o, "errors    {}", list.join(", "));
        }
    }

    /// The report as a table for people.
    pub fn human(&self) -> String {
        let s = &self.settings;
        let h = &self.stats.latency;
        let mut o = String::new();
        let _ = writeln!(o, "target    {}", self.target);
        let _ = writeln!(
            o,
            "workload  {} clients x pipeline {}, {} thread(s), mix {}, {} keys {}, values {} B, seed {}",
            s.clients, s.pipeline, s.threads, s.mix, s.keys, s.key_dist, s.value_size, s.seed
        );
        let _ = writeln!(
            o,
            "measured  {:.2} s, {} requests, {} req/s",
            self.stats.measured_ns as f64 / 1e9,
            thousands(self.stats.requests),
            thousands(self.throughput().round() as u64)
        );
        let _ = writeln!(
            o,
            "latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (HdrHistogram, 3 digits)",
            fmt_ns(h.value_at_quantile(0.5)),
            fmt_ns(h.value_at_quantile(0.9)),
            fmt_ns(h.value_at_quantile(0.99)),
            fmt_ns(h.value_at_quantile(0.999)),
            fmt_ns(h.max())
        );
        self.ops_and_errors(&mut o);
        let total = self.stats.requests.max(1) as f64;
        for (i, (k, v)) in self.stats.nodes.iter().enumerate() {
            let _ = writeln!(
                o,
                "{}{:<28} {:>12} {:>6.1}%",
                if i == 0 { "nodes     " } else { "          " },
                k,
                thousands(*v),
                *v as f64 * 100.0 / total
            );
        }
        if self.stats.moved + self.stats.asked > 0 {
            let _ = writeln!(
                o,
                "redirects {} MOVED, {} ASK followed",
                thousands(self.stats.moved),
                thousands(self.stats.asked)
            );
        }
        if let (Some(p), Some((u, sy, w))) = (self.cpu_percent(), self.cpu) {
            let _ = writeln!(
                o,
                "cpu       {p:.0}% of one core (user {u:.2} s + sys {sy:.2} s over {w:.2} s)"
            );
        }
        match self.verify {
            None => {
                let _ = writeln!(o, "verify    off");
            }
            Some(v) => {
                let _ = writeln!(
                    o,
                    "verify    {} keys read back: {} missing, {} wrong, {} undeleted, {} anomalies, {} unreadable, {} not checked (outcome unknown): {}",
                    thousands(v.checked),
                    v.missing,
                    v.wrong,
                    v.undeleted,
                    v.anomalies,
                    v.errors,
                    v.unknown,
                    if v.lost() + v.errors == 0 { "nothing lost" } else { "LOST DATA" }
                );
            }
        }
        if let Some(why) = self.failure() {
            let _ = writeln!(o, "result    FAILED: {why}");
        }
        o
    }
}
