//! Counting: latencies in HDR histograms, requests per op and per node, errors by
//! code, and the tool's own CPU time.
//!
//! Each thread keeps its own [`Stats`] (nothing shared on the hot path) and sends
//! a [`Tick`] once a second for the progress line; the main thread merges both.
//! Latencies are recorded in nanoseconds from 1 ns to 60 s with three significant
//! digits, so every percentile is within 0.1% of the true value.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Largest latency recorded exactly (larger ones are recorded as this).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Counts for one op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCount {
    /// Replies received (every outcome).
    pub requests: u64,
    /// Found (get, del, update) or done (put, create, incr, ping).
    pub hits: u64,
    /// Absent key (get miss, del or update of a missing key).
    pub misses: u64,
    /// Create of a present key.
    pub conflicts: u64,
    /// Errors.
    pub errors: u64,
}

/// Everything a thread counted over the measured phase.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of every measured request.
    pub latency: Histogram<u64>,
    /// Per op, indexed by [`super::spec::Op::index`].
    pub ops: [OpCount; 7],
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// Requests answered per node label.
    pub nodes: BTreeMap<String, u64>,
    /// Measured requests answered.
    pub requests: u64,
    /// Nanoseconds from the start of the measured phase to its last reply.
    pub measured_ns: u64,
    /// Redis Cluster `-MOVED` replies followed (every phase).
    pub moved: u64,
    /// Redis Cluster `-ASK` replies followed (every phase).
    pub asked: u64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            latency: histogram(),
            ops: [OpCount::default(); 7],
            errors: BTreeMap::new(),
            nodes: BTreeMap::new(),
            requests: 0,
            measured_ns: 0,
            moved: 0,
            asked: 0,
        }
    }
}

impl Stats {
    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &Stats) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        for (a, b) in self.ops.iter_mut().zip(other.ops.iter()) {
            a.requests += b.requests;
            a.hits += b.hits;
            a.misses += b.misses;
            a.conflicts += b.conflicts;
            a.errors += b.errors;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.nodes {
            *self.nodes.entry(k.clone()).or_default() += v;
        }
        self.requests += other.requests;
        self.measured_ns = self.measured_ns.max(other.measured_ns);
        self.moved += other.moved;
        self.asked += other.asked;
    }

    /// Errors of every code.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One second of one thread, for the progress line.
#[derive(Clone, Debug)]
pub struct Tick {
    /// Seconds since the load started; this tick covers `(second - 1, second]`,
    /// or less for a thread's last tick.
    pub second: u64,
    /// Nanoseconds this tick covers.
    pub span_ns: u64,
    /// Replies received.
    pub requests: u64,
    /// Error replies among them.
    pub errors: u64,
    /// Their latencies.
    pub latency: Histogram<u64>,
    /// Whether the tick lies (mostly) in the warmup.
    pub warmup: bool,
}

impl Tick {
    /// An empty tick.
    pub fn new(second: u64) -> Tick {
        Tick {
            second,
            span_ns: 0,
            requests: 0,
            errors: 0,
            latency: histogram(),
            warmup: false,
        }
    }

    /// Adds another thread's tick for the same second.
    pub fn merge(&mut self, o: &Tick) {
        self.span_ns = self.span_ns.max(o.span_ns);
        self.requests += o.requests;
        self.errors += o.errors;
        self.latency
            .add(&o.latency)
            .expect("histograms share bounds");
        self.warmup |= o.warmup;
    }

    /// Requests per second over the tick.
    pub fn rate(&self) -> f64 {
        if self.span_ns == 0 {
            0.0
        } else {
            self.requests as f64 * 1e9 / self.span_ns as f64
        }
    }

    /// One progress line.
    pub fn line(&self) -> String {
        format!(
            "[{:>4}s] {:>12} req/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}{}",
            self.second,
            thousands(self.rate().round() as u64),
            fmt_ns(self.latency.value_at_quantile(0.5)),
            fmt_ns(self.latency.value_at_quantile(0.99)),
            fmt_ns(self.latency.max()),
            self.errors,
            if self.warmup { "  (warmup)" } else { "" }
        )
    }
}

/// The tool's own CPU time so far (user, system), in seconds, from
/// `/proc/self/stat` (in clock ticks of 1/100 s, Linux's `USER_HZ`).
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at `state`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime as f64 / 100.0, stime as f64 / 100.0))
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency for people: `812 us`, `1.25 ms`, `2.10 s`.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.0} us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::Op;
    use super::*;

    #[test]
    fn merged_stats_add_up() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.latency.record(1_000).unwrap();
        b.latency.record(3_000).unwrap();
        a.requests = 1;
        b.requests = 1;
        a.ops[Op::Get.index()].requests = 1;
        b.ops[Op::Get.index()].requests = 1;
        *a.errors.entry("TIMEOUT".into()).or_default() += 1;
        *b.errors.entry("TIMEOUT".into()).or_default() += 2;
        *b.nodes.entry("node 1".into()).or_default() += 1;
        a.measured_ns = 5;
        b.measured_ns = 7;
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.latency.max(), b.latency.max());
        assert_eq!(a.requests, 2);
        assert_eq!(a.ops[Op::Get.index()].requests, 2);
        assert_eq!(a.error_total(), 3);
        assert_eq!(a.nodes["node 1"], 1);
        assert_eq!(a.measured_ns, 7);
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_ns(812_000), "812 us");
        assert_eq!(fmt_ns(1_250_000), "1.25 ms");
        let (u, s) = cpu_seconds().expect("/proc/self/stat");
        assert!(u >= 0.0 && s >= 0.0);
    }
}
