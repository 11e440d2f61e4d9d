//! One stored entry in one heap allocation, owned through a thin (8-byte)
//! pointer, so a sector's table spends 8 bytes a key on it rather than the 16 of
//! a `Box<[u8]>`.
//!
//! The allocation holds, in order: the version (8 bytes, little endian), a
//! varint of `key length << 1 | live`, a varint of the value's length (0 for a
//! tombstone), the key and the value. Every length, the allocation's own
//! included, is read back from that header, which is written once by
//! [`Record::new`] and never changes size afterwards ([`Record::set`] rewrites
//! in place only when every length stays the same, and allocates a new record
//! otherwise). The allocation is made and freed as a `Box<[u8]>` of exactly that
//! length. A 13-byte key with a 100-byte value takes 123 bytes: mimalloc's
//! 128-byte class.

use crate::storage::engine::EntryRef;
use std::ptr::NonNull;

/// Bytes before the varints in a record: the version.
const VERSION_LEN: usize = 8;

/// An entry's bytes behind a thin pointer; see the module doc for the layout.
pub(super) struct Record(NonNull<u8>);

// SAFETY: a Record owns its allocation alone, exactly like the Box<[u8]> it
// was made from (no sharing, no interior mutability), so moving it to or
// sharing `&Record` with another thread is as safe as for that Box.
unsafe impl Send for Record {}
// SAFETY: as above; `&Record` only ever reads.
unsafe impl Sync for Record {}

/// Where a record's parts lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Offset of the key (the header's length).
    at: usize,
    /// Key length.
    klen: usize,
    /// Value length (0 for a tombstone).
    vlen: usize,
    /// Whether the value is live (not a tombstone).
    live: bool,
}

impl Shape {
    fn len(&self) -> usize {
        self.at + self.klen + self.vlen
    }
}

/// Appends `n` as a LEB128 varint.
pub(super) fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Bytes `n` takes as a varint.
pub(super) fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads the varint at `p + *at`, advancing `*at` past it.
///
/// # Safety
/// `p + *at` must start a complete varint written by [`put_varint`] inside one
/// live allocation.
#[inline(always)]
unsafe fn read_varint(p: *const u8, at: &mut usize) -> u64 {
    // SAFETY: the caller promises a complete varint from here: every byte read
    // up to and including the one without the continuation bit is inside it.
    let first = unsafe { *p.add(*at) };
    *at += 1;
    if first < 0x80 {
        return first as u64;
    }
    let mut n = (first & 0x7f) as u64;
    let mut shift = 7;
    loop {
        // SAFETY: as above: the previous byte had its continuation bit set.
        let byte = unsafe { *p.add(*at) };
        *at += 1;
        n |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return n;
        }
        shift += 7;
    }
}

impl Record {
    /// A new record of `key` at `version` holding `value` (`None`: a tombstone).
    pub(super) fn new(key: &[u8], version: u64, value: Option<&[u8]>) -> Record {
        let tag = (key.len() as u64) << 1 | value.is_some() as u64;
        let vlen = value.map_or(0, <[u8]>::len);
        let len = VERSION_LEN + varint_len(tag) + varint_len(vlen as u64) + key.len() + vlen;
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&version.to_le_bytes());
        put_varint(&mut buf, tag);
        put_varint(&mut buf, vlen as u64);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value.unwrap_or_default());
        debug_assert_eq!(buf.len(), len);
        Record::from_box(buf.into_boxed_slice())
    }

    /// Takes ownership of a box holding a complete record.
    fn from_box(b: Box<[u8]>) -> Record {
        #[cfg(test)]
        let b_len = b.len();
        let raw = Box::into_raw(b) as *mut u8;
        #[cfg(test)]
        ledger::made(raw, b_len);
        // A Box never holds a null pointer (not even for an empty slice, and a
        // record is never empty).
        Record(NonNull::new(raw).expect("a Box is never null"))
    }

    /// The header, read through the pointer.
    #[inline(always)]
    fn shape(&self) -> Shape {
        let p = self.0.as_ptr() as *const u8;
        let mut at = VERSION_LEN;
        // SAFETY: `self.0` points at a live record (made by `Record::new`, freed
        // only by `drop`), which starts with the version and two complete
        // varints.
        let (tag, vlen) = unsafe { (read_varint(p, &mut at), read_varint(p, &mut at)) };
        Shape {
            at,
            klen: (tag >> 1) as usize,
            vlen: vlen as usize,
            live: tag & 1 == 1,
        }
    }

    /// All the record's bytes, and its shape.
    #[inline(always)]
    fn bytes(&self) -> (&[u8], Shape) {
        let shape = self.shape();
        // SAFETY: the allocation is `shape.len()` bytes long (the header tells
        // the lengths it was made with), all initialised, and lives as long as
        // `self`; `&self` keeps anyone from writing to it meanwhile.
        let b = unsafe { std::slice::from_raw_parts(self.0.as_ptr(), shape.len()) };
        (b, shape)
    }

    /// All the record's bytes, writable, and its shape.
    fn bytes_mut(&mut self) -> (&mut [u8], Shape) {
        let shape = self.shape();
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference to
        // the allocation while the slice lives.
        let b = unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), shape.len()) };
        (b, shape)
    }

    #[inline]
    pub(super) fn version(&self) -> u64 {
        let mut v = [0u8; VERSION_LEN];
        v.copy_from_slice(&self.bytes().0[..VERSION_LEN]);
        u64::from_le_bytes(v)
    }

    #[inline]
    pub(super) fn key(&self) -> &[u8] {
        let (b, s) = self.bytes();
        &b[s.at..s.at + s.klen]
    }

    #[inline]
    pub(super) fn live(&self) -> bool {
        self.shape().live
    }

    #[inline]
    pub(super) fn value(&self) -> Option<&[u8]> {
        let (b, s) = self.bytes();
        s.live.then(|| &b[s.at + s.klen..])
    }

    /// Bytes of a live record's key and value; 0 for a tombstone.
    pub(super) fn live_bytes(&self) -> usize {
        let s = self.shape();
        if s.live {
            s.klen + s.vlen
        } else {
            0
        }
    }

    pub(super) fn view(&self) -> EntryRef<'_> {
        let (b, s) = self.bytes();
        let mut v = [0u8; VERSION_LEN];
        v.copy_from_slice(&b[..VERSION_LEN]);
        EntryRef {
            key: &b[s.at..s.at + s.klen],
            version: u64::from_le_bytes(v),
            value: s.live.then(|| &b[s.at + s.klen..]),
        }
    }

    /// Replaces version and value, in place when every length stays the same.
    pub(super) fn set(&mut self, version: u64, value: Option<&[u8]>) {
        let vlen = value.map_or(0, <[u8]>::len);
        let (b, s) = self.bytes_mut();
        if s.vlen == vlen {
            // The lengths stay, so of the header only the version changes,
            // and the live bit: the lowest bit of the tag's first varint byte
            // (LEB128 puts the low bits first).
            b[..VERSION_LEN].copy_from_slice(&version.to_le_bytes());
            b[VERSION_LEN] = b[VERSION_LEN] & !1 | value.is_some() as u8;
            b[s.at + s.klen..].copy_from_slice(value.unwrap_or_default());
        } else {
            let fresh = Record::new(&b[s.at..s.at + s.klen], version, value);
            *self = fresh;
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let len = self.shape().len();
        #[cfg(test)]
        ledger::freed(self.0.as_ptr(), len);
        let raw = std::ptr::slice_from_raw_parts_mut(self.0.as_ptr(), len);
        // SAFETY: the allocation was made as a `Box<[u8]>` of exactly `len`
        // bytes (`Record::from_box`; the header gives that length back) and is
        // freed only here, once: no other Record owns it.
        drop(unsafe { Box::from_raw(raw) });
    }
}

impl Clone for Record {
    fn clone(&self) -> Record {
        Record::from_box(self.bytes().0.into())
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.bytes().0 == other.bytes().0
    }
}

impl Eq for Record {}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key())
            .field("version", &self.version())
            .field("value", &self.value())
            .finish()
    }
}

/// Test-only bookkeeping of every record allocation on this thread: what
/// `drop` frees must be exactly what `from_box` made (same address, same
/// length), once; [`ledger::live`] tells leaks.
#[cfg(test)]
pub(super) mod ledger {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static LIVE: RefCell<HashMap<usize, usize>> = RefCell::new(HashMap::new());
    }

    pub(in crate::storage::engine) fn made(p: *const u8, len: usize) {
        let old = LIVE.with(|l| l.borrow_mut().insert(p as usize, len));
        assert_eq!(old, None, "an address handed out twice");
    }

    pub(in crate::storage::engine) fn freed(p: *const u8, len: usize) {
        let made = LIVE.with(|l| l.borrow_mut().remove(&(p as usize)));
        assert_eq!(made, Some(len), "freed with another length, or twice");
    }

    /// Records alive on this thread.
    pub(in crate::storage::engine) fn live() -> usize {
        LIVE.with(|l| l.borrow().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &Record, key: &[u8], version: u64, value: Option<&[u8]>) {
        assert_eq!(r.key(), key);
        assert_eq!(r.version(), version);
        assert_eq!(r.value(), value);
        assert_eq!(r.live(), value.is_some());
        assert_eq!(r.live_bytes(), value.map_or(0, |v| key.len() + v.len()));
        let view = r.view();
        assert_eq!((view.key, view.version, view.value), (key, version, value));
        let c = r.clone();
        assert_eq!(&c, r);
        assert_eq!(c.key(), key);
    }

    #[test]
    fn a_record_is_one_thin_pointer() {
        assert_eq!(std::mem::size_of::<Record>(), 8);
        assert_eq!(std::mem::size_of::<Option<Record>>(), 8);
    }

    #[test]
    fn a_record_holds_what_it_was_given() {
        let big = vec![7u8; 70_000];
        let cases: [(&[u8], Option<&[u8]>); 7] = [
            (b"", None),
            (b"", Some(b"")),
            (b"k", Some(b"")),
            (b"", Some(b"v")),
            (b"key:000000001", Some(&[b'v'; 100])),
            (&[b'k'; 300], Some(&big)),
            (&big, None),
        ];
        let records = ledger::live();
        for (key, value) in cases {
            for version in [0, 1, u64::MAX] {
                let r = Record::new(key, version, value);
                check(&r, key, version, value);
            }
        }
        assert_eq!(ledger::live(), records, "each freed once, at its length");
    }

    #[test]
    fn set_keeps_the_key_in_place_or_not() {
        let key = b"key:000000001";
        let big = vec![9u8; 20_000];
        let bigger = vec![3u8; 20_001];
        let values: [Option<&[u8]>; 8] = [
            Some(b"abc"),
            Some(b"xyz"),
            None,
            Some(b""),
            None,
            Some(&big),
            Some(&bigger),
            Some(b"x"),
        ];
        let records = ledger::live();
        for key in [&key[..], b"", &[b'k'; 200]] {
            let mut r = Record::new(key, 1, Some(b"first"));
            for (i, value) in values.iter().enumerate() {
                let before = r.0;
                let same = r.shape().vlen == value.map_or(0, <[u8]>::len);
                r.set(10 + i as u64, *value);
                check(&r, key, 10 + i as u64, *value);
                assert_eq!(
                    r.0 == before,
                    same,
                    "in place exactly when the length stays"
                );
            }
        }
        assert_eq!(ledger::live(), records, "each freed once, at its length");
    }

    #[test]
    fn varints_of_every_length_read_back() {
        for n in [0u64, 1, 127, 128, 300, 16_383, 16_384, 1 << 40, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, n);
            assert_eq!(buf.len(), varint_len(n), "{n}");
            buf.push(0xff);
            let mut at = 0;
            // SAFETY: `buf` holds a complete varint at 0.
            assert_eq!(unsafe { read_varint(buf.as_ptr(), &mut at) }, n);
            assert_eq!(at, varint_len(n));
        }
    }
}
