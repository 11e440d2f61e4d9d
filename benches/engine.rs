//! Micro-benchmarks of the storage engine (src/storage/engine.rs): put and get
//! of 100-byte values in an engine of 64 sectors holding 100,000 keys.
//!
//! `cargo bench --bench engine`. Not run by `cargo test` (it only compiles them).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gtstore::storage::engine::Engine;
use std::hint::black_box;

const KEYS: u64 = 100_000;
const TOKENS: u64 = 64;

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:09}").into_bytes()
}

fn filled() -> (Engine, Vec<Vec<u8>>) {
    let step = u64::MAX / TOKENS;
    let mut e = Engine::new((1..=TOKENS).map(|t| t * step));
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let value = [b'v'; 100];
    for k in &keys {
        e.apply(k, 1, Some(&value), None);
    }
    (e, keys)
}

fn engine(c: &mut Criterion) {
    let (mut e, keys) = filled();
    let value = [b'w'; 100];
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut version = 1u64;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(e.get(&keys[i]))
        })
    });
    g.bench_function("get_miss", |b| {
        b.iter(|| black_box(e.get(b"key:999999999")))
    });
    g.bench_function("put_overwrite_100B", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            version += 1;
            e.apply(&keys[i], version, Some(black_box(&value)), None);
        })
    });
    let mut fresh = KEYS;
    g.bench_function("put_new_100B", |b| {
        b.iter(|| {
            fresh += 1;
            version += 1;
            e.apply(&key(fresh), version, Some(black_box(&value)), None);
        })
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
