//! The workload's description: which ops in what proportion (`--mix`), how keys
//! are drawn (`--key-dist`) and how large values are (`--value-size`). Parsers
//! here turn the flags' text into these types and say exactly what is wrong.

use std::fmt;

/// One kind of request the generator can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Read a key.
    Get,
    /// Store a value.
    Put,
    /// Delete a key.
    Del,
    /// Add one to a counter (counters live in their own key space, `cnt:`).
    Incr,
    /// Store only if absent.
    Create,
    /// Store only if present.
    Update,
    /// A round trip that touches no key.
    Ping,
}

impl Op {
    /// Every op, in the order reports list them.
    pub const ALL: [Op; 7] = [
        Op::Get,
        Op::Put,
        Op::Del,
        Op::Incr,
        Op::Create,
        Op::Update,
        Op::Ping,
    ];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Del => "del",
            Op::Incr => "incr",
            Op::Create => "create",
            Op::Update => "update",
            Op::Ping => "ping",
        }
    }

    /// Parses a name (`delete` and `set` are accepted as aliases).
    pub fn from_name(s: &str) -> Option<Op> {
        Some(match s {
            "get" => Op::Get,
            "put" | "set" => Op::Put,
            "del" | "delete" => Op::Del,
            "incr" => Op::Incr,
            "create" => Op::Create,
            "update" => Op::Update,
            "ping" => Op::Ping,
            _ => return None,
        })
    }

    /// Position in [`Op::ALL`], for per-op tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the op changes what the server stores.
    pub fn writes(self) -> bool {
        !matches!(self, Op::Get | Op::Ping)
    }

    /// Whether the request carries a value.
    pub fn has_value(self) -> bool {
        matches!(self, Op::Put | Op::Create | Op::Update)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Ops with integer weights: `get=90,put=10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Ops with a weight above zero, with their cumulative weight bound.
    table: Vec<(Op, u64)>,
    /// Sum of the weights.
    total: u64,
}

impl Mix {
    /// Parses `OP=WEIGHT[,OP=WEIGHT...]`. Weights are integers; ops may not repeat;
    /// at least one weight must be above zero.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut seen: Vec<Op> = Vec::new();
        let mut table = Vec::new();
        let mut total: u64 = 0;
        for part in s.split(',') {
            let part = part.trim();
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("--mix: `{part}` is not OP=WEIGHT"))?;
            let op = Op::from_name(name.trim()).ok_or_else(|| {
                format!(
                    "--mix: unknown op `{}` (known: get, put, del, incr, create, update, ping)",
                    name.trim()
                )
            })?;
            let w: u64 = weight
                .trim()
                .parse()
                .ok()
                .filter(|&w| w <= 1_000_000)
                .ok_or_else(|| {
                    format!("--mix: weight `{weight}` of {op} is not an integer 0..=1000000")
                })?;
            if seen.contains(&op) {
                return Err(format!("--mix: {op} appears twice"));
            }
            seen.push(op);
            if w > 0 {
                total += w;
                table.push((op, total));
            }
        }
        if total == 0 {
            return Err("--mix: every weight is zero".into());
        }
        Ok(Mix { table, total })
    }

    /// The op for a uniform draw `r` in `0..total()`.
    pub fn pick(&self, r: u64) -> Op {
        let r = r % self.total;
        for &(op, bound) in &self.table {
            if r < bound {
                return op;
            }
        }
        self.table[self.table.len() - 1].0
    }

    /// Sum of the weights (draws for [`Mix::pick`] are taken below it).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The ops with a weight above zero, with their fraction of all requests.
    pub fn fractions(&self) -> Vec<(Op, f64)> {
        let mut prev = 0;
        self.table
            .iter()
            .map(|&(op, bound)| {
                let w = bound - prev;
                prev = bound;
                (op, w as f64 / self.total as f64)
            })
            .collect()
    }

    /// Whether any op in the mix writes.
    pub fn writes(&self) -> bool {
        self.table.iter().any(|(op, _)| op.writes())
    }

    /// Whether `op` has a weight above zero.
    pub fn contains(&self, op: Op) -> bool {
        self.table.iter().any(|(o, _)| *o == op)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prev = 0;
        for (i, &(op, bound)) in self.table.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{op}={}", bound - prev)?;
            prev = bound;
        }
        Ok(())
    }
}

/// How keys are drawn from `0..keys`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key `i` drawn with weight `1 / (i + 1)^theta`, `0 < theta < 1`: key 0 is
    /// the hottest.
    Zipf(f64),
    /// In order: the `i`-th request of the run (counted across clients, client
    /// `c` sending requests `c`, `c + clients`, ...) uses key `i % keys`. With
    /// `--requests` equal to `--keys`, every key is used exactly once.
    Sequential,
}

impl KeyDist {
    /// Parses `uniform` or `zipf:THETA`.
    pub fn parse(s: &str) -> Result<KeyDist, String> {
        if s == "uniform" {
            return Ok(KeyDist::Uniform);
        }
        if s == "seq" {
            return Ok(KeyDist::Sequential);
        }
        if let Some(t) = s.strip_prefix("zipf:") {
            let theta: f64 = t
                .parse()
                .map_err(|_| format!("--key-dist: `{t}` is not a number"))?;
            if !(theta > 0.0 && theta < 1.0) {
                return Err(format!(
                    "--key-dist: zipf theta must be strictly between 0 and 1, got {theta}"
                ));
            }
            return Ok(KeyDist::Zipf(theta));
        }
        Err(format!(
            "--key-dist: `{s}` is not `uniform`, `seq` or `zipf:THETA`"
        ))
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(t) => write!(f, "zipf:{t}"),
            KeyDist::Sequential => f.write_str("seq"),
        }
    }
}

/// Largest value the generator sends (64 MiB).
pub const MAX_VALUE: usize = 64 << 20;

/// Distinct value lengths used when sizes vary: each has its own encoded template.
pub const SIZE_STEPS: usize = 64;

/// Value sizes: one fixed size, or a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueSize {
    /// Smallest value, in bytes.
    pub min: usize,
    /// Largest value, in bytes.
    pub max: usize,
}

impl ValueSize {
    /// Parses `B` or `MIN-MAX` (bytes, at most [`MAX_VALUE`]).
    pub fn parse(s: &str) -> Result<ValueSize, String> {
        let num = |t: &str| -> Result<usize, String> {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= MAX_VALUE)
                .ok_or_else(|| format!("--value-size: `{t}` is not a size 0..={MAX_VALUE}"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("--value-size: {min} is above {max}"));
        }
        Ok(ValueSize { min, max })
    }

    /// The lengths values are drawn from: the one size, or up to [`SIZE_STEPS`]
    /// evenly spaced lengths from `min` to `max`, both included. Quantizing keeps
    /// every request a patched template.
    pub fn steps(&self) -> Vec<usize> {
        let span = self.max - self.min;
        if span == 0 {
            return vec![self.min];
        }
        let n = (span + 1).min(SIZE_STEPS);
        let mut v: Vec<usize> = (0..n)
            .map(|i| self.min + ((span as u128 * i as u128) / (n as u128 - 1)) as usize)
            .collect();
        v.dedup();
        v
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_weights_and_picks_in_proportion() {
        let m = Mix::parse("get=90,put=10").unwrap();
        assert_eq!(m.total(), 100);
        assert_eq!(m.to_string(), "get=90,put=10");
        let puts = (0..100).filter(|&r| m.pick(r) == Op::Put).count();
        assert_eq!(puts, 10);
        assert!(m.writes());
        assert!(!Mix::parse("get=1,ping=1").unwrap().writes());
        let all = Mix::parse("get=1, set=1,delete=1,incr=1,create=1,update=1,ping=0").unwrap();
        assert_eq!(all.total(), 6);
        assert!(!all.contains(Op::Ping));
        assert!(all.contains(Op::Del));
        let f = all.fractions();
        assert_eq!(f.len(), 6);
        assert!((f.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn mix_rejects_bad_text() {
        for (bad, says) in [
            ("get", "not OP=WEIGHT"),
            ("get=x", "not an integer"),
            ("get=-1", "not an integer"),
            ("fetch=1", "unknown op"),
            ("get=1,get=2", "twice"),
            ("get=0,put=0", "every weight is zero"),
            ("", "not OP=WEIGHT"),
        ] {
            let e = Mix::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?} -> {e}");
        }
    }

    #[test]
    fn key_dist_parses() {
        assert_eq!(KeyDist::parse("uniform").unwrap(), KeyDist::Uniform);
        assert_eq!(KeyDist::parse("zipf:0.99").unwrap(), KeyDist::Zipf(0.99));
        assert_eq!(KeyDist::parse("seq").unwrap(), KeyDist::Sequential);
        for bad in ["zipf:1", "zipf:0", "zipf:abc", "zipfian", "zipf:1.5"] {
            assert!(KeyDist::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn value_size_parses_and_quantizes() {
        assert_eq!(ValueSize::parse("100").unwrap().steps(), vec![100]);
        let r = ValueSize::parse("10-13").unwrap();
        assert_eq!(r.steps(), vec![10, 11, 12, 13]);
        let wide = ValueSize::parse("0-1000000").unwrap().steps();
        assert_eq!(wide.len(), SIZE_STEPS);
        assert_eq!((wide[0], wide[SIZE_STEPS - 1]), (0, 1_000_000));
        assert!(wide.windows(2).all(|w| w[0] < w[1]));
        for bad in ["", "x", "5-2", "1-", "99999999999"] {
            assert!(ValueSize::parse(bad).is_err(), "{bad}");
        }
    }
}
