//! A simple pipelined load tool for one storage node, until `gtstore-load` exists.
//!
//! `cargo run --release --example pipebench -- ADDR OP CONNS PIPELINE SECONDS`
//! with OP one of `ping`, `get`, `put`. Each connection runs on its own thread,
//! writes PIPELINE requests in one write and reads all replies, for SECONDS.

use bytes::BytesMut;
use gtstore::protocol::{self, op, Parse};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: pipebench ADDR ping|get|put CONNS PIPELINE SECONDS");
        std::process::exit(2);
    }
    let (addr, which) = (a[1].clone(), a[2].clone());
    let conns: usize = a[3].parse().expect("CONNS");
    let pipeline: usize = a[4].parse().expect("PIPELINE");
    let secs: u64 = a[5].parse().expect("SECONDS");
    let value = vec![b'v'; 100];
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            let (addr, which, value) = (addr.clone(), which.clone(), value.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.set_nodelay(true).unwrap();
                let mut req = BytesMut::new();
                for i in 0..pipeline {
                    let key = format!("key:{t}:{i:06}");
                    let klen = key.len().to_string();
                    match which.as_str() {
                        "ping" => protocol::encode(&mut req, op::PING, 0, 0, b""),
                        "get" => protocol::encode(&mut req, op::GET, 0, 0, key.as_bytes()),
                        _ => protocol::encode_parts(
                            &mut req,
                            op::PUT,
                            0,
                            0,
                            &[klen.as_bytes(), b" ", key.as_bytes(), &value],
                        ),
                    }
                }
                let end = Instant::now() + Duration::from_secs(secs);
                let mut buf = BytesMut::with_capacity(1 << 20);
                let mut done = 0u64;
                let mut chunk = vec![0u8; 1 << 16];
                while Instant::now() < end {
                    s.write_all(&req).unwrap();
                    let mut got = 0;
                    while got < pipeline {
                        match protocol::parse(&mut buf, u32::MAX).unwrap() {
                            Parse::Frame(f) => {
                                assert_ne!(f.op, op::ERR, "server error");
                                got += 1;
                            }
                            Parse::Incomplete { .. } => {
                                let n = s.read(&mut chunk).unwrap();
                                assert!(n > 0, "server closed");
                                buf.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                    done += pipeline as u64;
                }
                done
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!(
        "{which}: {conns} conns x pipeline {pipeline}: {:.0} requests/s",
        total as f64 / secs as f64
    );
}
