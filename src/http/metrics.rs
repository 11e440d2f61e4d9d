//! The Prometheus text exposition format (version 0.0.4), written by hand: it
//! is a few lines of text per metric and needs no registry.
//!
//! An [`Exposition`] is built once per scrape from the service's own counters:
//! [`Exposition::family`] writes a metric's `# HELP` and `# TYPE` lines, then
//! [`Exposition::sample`] each labelled value, or [`Exposition::histogram`] a
//! [`Histogram`]'s cumulative buckets, `_sum` and `_count`. Label values are
//! escaped (backslash, double quote, newline) and so is help text (backslash,
//! newline). Values print as integers when they are whole, and as `NaN`,
//! `+Inf`, `-Inf` when not finite.
//!
//! Naming follows Prometheus' conventions, which `promtool check metrics`
//! enforces: counters end in `_total`, units are base units in the name
//! (`_seconds`, `_bytes`).

use std::fmt::Write as _;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Observations counted in fixed buckets (upper bounds, ascending), with their
/// sum and count; a fixed amount of memory whatever is observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket, not cumulative; the last counts what is above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (sorted here; `+Inf` is implied).
    pub fn new(bounds: &[f64]) -> Histogram {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Histogram {
            counts: vec![0; bounds.len() + 1],
            bounds,
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The text of one scrape, built family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// Whether `name` is a valid metric (`colon`) or label name.
fn valid_name(name: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// Appends `s` with the given characters escaped.
fn escape_into(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends a sample value.
fn value_into(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts metric family `name`: its help and type lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Exposition {
        debug_assert!(valid_name(name, true), "bad metric name {name}");
        let _ = write!(self.text, "# HELP {name} ");
        escape_into(&mut self.text, help, false);
        let _ = writeln!(self.text, "\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Exposition {
        self.sample_with(name, labels, None, value)
    }

    fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: f64,
    ) -> &mut Exposition {
        debug_assert!(valid_name(name, true), "bad metric name {name}");
        self.text.push_str(name);
        let extra = le.map(|le| ("le", le));
        if !labels.is_empty() || extra.is_some() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().chain(extra.iter()).enumerate() {
                debug_assert!(valid_name(k, false), "bad label name {k}");
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"");
                escape_into(&mut self.text, v, true);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        value_into(&mut self.text, value);
        self.text.push('\n');
        self
    }

    /// A histogram's samples: cumulative `_bucket`s (`le` labels, ending with
    /// `+Inf`), `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &Histogram,
    ) -> &mut Exposition {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        let mut le = String::new();
        for (i, &n) in h.counts.iter().enumerate() {
            cumulative += n;
            le.clear();
            match h.bounds.get(i) {
                Some(&b) => value_into(&mut le, b),
                None => le.push_str("+Inf"),
            }
            self.sample_with(&bucket, labels, Some(&le), cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64)
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_with_labels() {
        let mut e = Exposition::new();
        e.family("req_total", Kind::Counter, "Requests served.")
            .sample("req_total", &[("op", "get"), ("result", "ok")], 3.0)
            .sample("req_total", &[("op", "set"), ("result", "err")], 0.0);
        e.family("up", Kind::Gauge, "Up.").sample("up", &[], 1.0);
        e.family("ratio", Kind::Gauge, "A ratio.")
            .sample("ratio", &[], 0.25)
            .sample("ratio", &[("x", "nan")], f64::NAN)
            .sample("ratio", &[("x", "inf")], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP req_total Requests served.\n# TYPE req_total counter\n\
             req_total{op=\"get\",result=\"ok\"} 3\nreq_total{op=\"set\",result=\"err\"} 0\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n\
             # HELP ratio A ratio.\n# TYPE ratio gauge\nratio 0.25\n\
             ratio{x=\"nan\"} NaN\nratio{x=\"inf\"} +Inf\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.family("m", Kind::Gauge, "back\\slash\nnew \"quoted\"")
            .sample("m", &[("addr", "a\"b\\c\nd")], 1.0);
        assert_eq!(
            e.finish(),
            "# HELP m back\\\\slash\\nnew \"quoted\"\n# TYPE m gauge\n\
             m{addr=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(&[0.5, 0.25, 1.0]);
        for v in [0.125, 0.25, 0.375, 2.0] {
            h.observe(v);
        }
        assert_eq!(h.count(), 4);
        let mut e = Exposition::new();
        e.family("lat_seconds", Kind::Histogram, "Latency.")
            .histogram("lat_seconds", &[("op", "get")], &h);
        assert_eq!(
            e.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{op=\"get\",le=\"0.25\"} 2\n\
             lat_seconds_bucket{op=\"get\",le=\"0.5\"} 3\n\
             lat_seconds_bucket{op=\"get\",le=\"1\"} 3\n\
             lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{op=\"get\"} 2.75\n\
             lat_seconds_count{op=\"get\"} 4\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("a_b:c1", true));
        assert!(!valid_name("a:b", false));
        assert!(!valid_name("1a", true));
        assert!(!valid_name("", true));
        assert!(!valid_name("a-b", true));
    }
}
