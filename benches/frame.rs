//! Micro-benchmarks of the frame codec: encoding and parsing GET and PUT frames
//! with 100-byte values, one frame and a pipelined batch of 64.
//!
//! `cargo bench --bench frame`. Not run by `cargo test` (it only compiles them).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gtstore::protocol::{self, op, Parse};
use std::hint::black_box;

const KEY: &[u8] = b"key:000012345";
const BATCH: usize = 64;

fn value() -> Vec<u8> {
    (0..100).map(|i| b'a' + (i % 26) as u8).collect()
}

fn encode_get(out: &mut BytesMut) {
    protocol::encode(out, op::GET, 7, 0, KEY);
}

fn encode_put(out: &mut BytesMut, value: &[u8]) {
    protocol::encode_parts(out, op::PUT, 7, 0, &[b"13 ", KEY, value]);
}

fn encode(c: &mut Criterion) {
    let value = value();
    let mut g = c.benchmark_group("encode");
    let mut out = BytesMut::with_capacity(64 << 10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("get", |b| {
        b.iter(|| {
            out.clear();
            encode_get(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("put_100B", |b| {
        b.iter(|| {
            out.clear();
            encode_put(&mut out, black_box(&value));
            black_box(out.len())
        })
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let value = value();
    let mut gets = BytesMut::new();
    let mut puts = BytesMut::new();
    for _ in 0..BATCH {
        encode_get(&mut gets);
        encode_put(&mut puts, &value);
    }
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, bytes) in [("get_x64", &gets), ("put_100B_x64", &puts)] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || bytes.clone(),
                |buf| {
                    let mut n = 0;
                    while let Ok(Parse::Frame(f)) = protocol::parse(buf, 1 << 20) {
                        n += f.payload.len();
                    }
                    black_box(n)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, encode, parse);
criterion_main!(benches);
