//! Feeds arbitrary bytes to the frame parser in pieces whose sizes come from the
//! input itself, then re-encodes every frame it got and checks that parsing the
//! encoding gives the same frames back. Also runs the payload parsers on each frame.
#![no_main]

use bytes::BytesMut;
use gtstore::protocol::{encode, kv, parse, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte picks the chunk size, so splits vary with the input.
    let chunk = (data[0] as usize % 61) + 1;
    let data = &data[1..];
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    'feed: for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse(&mut buf, 4096) {
                Ok(Parse::Frame(f)) => {
                    let _ = kv::split_kv(&f.payload);
                    let _ = kv::split_incr(&f.payload);
                    frames.push(f);
                }
                Ok(Parse::Incomplete { need }) => {
                    assert!(need > buf.len());
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    let mut wire = BytesMut::new();
    for f in &frames {
        encode(&mut wire, f.op, f.client_id, f.node_id, &f.payload);
    }
    for f in &frames {
        match parse(&mut wire, 4096) {
            Ok(Parse::Frame(g)) => assert_eq!(&g, f),
            other => panic!("re-encoded frame did not parse: {other:?}"),
        }
    }
    assert!(wire.is_empty());
});
