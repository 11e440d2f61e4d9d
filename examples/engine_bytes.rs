//! Bytes per key of the storage engine alone, as scenario 4 of bench/run fills a
//! node: 1,000,000 keys of 13 bytes (`key:` and nine digits) with 100-byte
//! values, in an engine of 64 evenly spaced sectors (a lone node's tokens).
//!
//! `cargo run --release --example engine_bytes [KEYS]`. Prints the resident
//! memory the fill added per key and the part of it the sectors' tables hold,
//! so the node's figure (bench/run 4) can be split into engine and the rest.

use gtstore::storage::engine::Engine;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    gtstore::alloc::configure();
    let keys: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("KEYS is a number"));
    let tokens = 64u64;
    let step = u64::MAX / tokens;
    let before = rss_bytes();
    let mut e = Engine::new((1..=tokens).map(|t| t * step));
    let value = [b'v'; 100];
    for i in 0..keys {
        let key = format!("key:{i:09}");
        e.apply(key.as_bytes(), u64::from(i) + 1, Some(&value), None);
    }
    let grown = rss_bytes() - before;
    let table: usize = e
        .tokens()
        .map(|t| e.sector_of_token(t).unwrap().table_bytes())
        .sum();
    let n = f64::from(keys);
    println!("keys {keys}, sectors {tokens}");
    println!("RSS growth per key   {:6.1}", grown as f64 / n);
    println!("  tables per key     {:6.1}", table as f64 / n);
    println!("  the rest per key   {:6.1}", (grown - table) as f64 / n);
    std::hint::black_box(&e);
}
