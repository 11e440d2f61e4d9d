//! Versions: every write a node decides gets its version from the node's hybrid
//! logical clock ([`Hlc`]), and every version it sees from a peer moves the
//! clock past it, unless it is too far ahead of this node's clock
//! ([`MAX_AHEAD_MS`], see [`Hlc::admits`]): a peer's version beats every later
//! write of its key, so one from far in the future would pin the key forever.
//! The arithmetic saturates: no version, however large, panics or wraps.

/// How far ahead of this node's clock a version from a peer may be, in
/// milliseconds of physical time: one hour. Clocks of healthy nodes differ by
/// far less; a version further ahead is refused (the key keeps its value).
pub const MAX_AHEAD_MS: u64 = 3_600_000;

/// Bits of a version below its milliseconds (the counter and writer bytes).
const MS_SHIFT: u32 = 16;

/// A hybrid logical clock: versions are `milliseconds << 16 | counter << 8 |
/// writer`, never repeat on one node, grow with the wall clock, and jump past
/// every version the node has seen, so a write ordered after another by
/// causality gets a higher version even across nodes whose clocks differ.
///
/// The low byte is the writing node's id (mod 256, see [`Hlc::set_writer`]), so
/// two nodes never make the same version: an equal version on two replicas is
/// the same write, which is what lets [`super::engine::Engine::apply`] treat it as
/// a harmless repeat. (Two nodes leading the same key at once, while a ring
/// changes, could otherwise make the same version in the same millisecond for
/// different values, and replicas would each keep one and call the other a
/// repeat.) Caveats: node ids that are equal mod 256 share a writer byte; and the
/// counter holds 256 versions a millisecond, past which the clock runs ahead of
/// the wall clock (harmless for ordering; tombstones then look younger than they
/// are).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hlc {
    last: u64,
    writer: u64,
}

impl Hlc {
    /// A version above `floor`, above every earlier one, at least the wall
    /// clock `wall_ms`, and ending in this clock's writer byte. Saturates: at
    /// the top of the range (2^48 ms, or a peer's version near `u64::MAX` that
    /// got past [`Hlc::admits`]) it repeats the largest version it can make
    /// rather than wrap.
    pub fn next(&mut self, wall_ms: u64, floor: u64) -> u64 {
        let min = wall_ms
            .saturating_mul(1 << MS_SHIFT)
            .max(self.last.saturating_add(1))
            .max(floor.saturating_add(1));
        let v = (min & !0xff) | self.writer;
        let v = if v < min {
            v.checked_add(0x100).unwrap_or(v)
        } else {
            v
        };
        self.last = self.last.max(v);
        v
    }

    /// Whether a version from a peer may be taken at wall clock `wall_ms`: at
    /// most [`MAX_AHEAD_MS`] ahead of the wall clock. Measured from the wall
    /// clock, not from the last version seen, so admitted versions cannot
    /// ratchet the bound forward an hour at a time. `Err` carries how far
    /// ahead it is, in ms.
    pub fn admits(&self, wall_ms: u64, version: u64) -> Result<(), u64> {
        let ahead = (version >> MS_SHIFT).saturating_sub(wall_ms);
        if ahead > MAX_AHEAD_MS {
            Err(ahead)
        } else {
            Ok(())
        }
    }

    /// Sets the writer byte of the versions this clock makes: the node's id.
    pub fn set_writer(&mut self, node_id: u32) {
        self.writer = u64::from(node_id & 0xff);
    }

    /// Remembers a version seen elsewhere.
    pub fn observe(&mut self, version: u64) {
        self.last = self.last.max(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_repeats_and_passes_what_it_saw() {
        let mut c = Hlc::default();
        let a = c.next(1000, 0);
        assert_eq!(a, 1000 << 16);
        let b = c.next(1000, 0);
        assert!(b > a);
        let back_in_time = c.next(999, 0);
        assert!(back_in_time > b);
        c.observe(5000 << 16);
        assert!(c.next(1001, 0) > 5000 << 16);
        assert!(c.next(0, u64::MAX >> 1) > u64::MAX >> 1);
    }

    #[test]
    fn the_clock_saturates_at_the_top_of_the_range() {
        for top in [u64::MAX, u64::MAX - 1, u64::MAX - 0x100, 1 << 63] {
            let mut c = Hlc::default();
            c.set_writer(7);
            c.observe(top);
            let a = c.next(u64::MAX, top);
            let b = c.next(u64::MAX, u64::MAX);
            assert!(b >= a && a >= top.min(u64::MAX - 0xff), "{a:#x} {b:#x}");
        }
        let mut c = Hlc::default();
        assert_eq!(
            c.next(u64::MAX, 0) >> 16,
            u64::MAX >> 16,
            "the wall clock saturates"
        );
    }

    #[test]
    fn versions_too_far_ahead_are_not_admitted() {
        let mut c = Hlc::default();
        let wall = 1_800_000_000_000; // 2027, in ms
        let at = |ms: u64| ms << 16;
        assert_eq!(c.admits(wall, at(wall)), Ok(()));
        assert_eq!(c.admits(wall, at(wall + MAX_AHEAD_MS)), Ok(()));
        assert_eq!(
            c.admits(wall, at(wall + MAX_AHEAD_MS + 1)),
            Err(MAX_AHEAD_MS + 1)
        );
        assert!(c.admits(wall, 1 << 63).is_err());
        assert!(c.admits(wall, u64::MAX).is_err());
        assert_eq!(c.admits(wall, 0), Ok(()), "old versions are fine");
        // Measured from the wall clock: an admitted version does not move the bound.
        c.observe(at(wall + MAX_AHEAD_MS));
        assert!(c.admits(wall, at(wall + 2 * MAX_AHEAD_MS)).is_err());
    }

    #[test]
    fn two_writers_never_make_the_same_version() {
        let (mut a, mut b) = (Hlc::default(), Hlc::default());
        a.set_writer(4);
        b.set_writer(5);
        let mut seen = std::collections::HashSet::new();
        for ms in [1000, 1000, 1000, 1001, 999] {
            for v in [a.next(ms, 0), b.next(ms, 0)] {
                assert!(seen.insert(v), "version {v:#x} made twice");
            }
        }
        assert_eq!(a.next(2000, 0), 2000 << 16 | 4);
        assert_eq!(b.next(2000, 0), 2000 << 16 | 5);
        // Past a floor (a version seen elsewhere) and still its own.
        let v = a.next(2000, (2000 << 16) | 0x3ff);
        assert!(v > (2000 << 16) | 0x3ff && v & 0xff == 4, "{v:#x}");
        b.observe(v);
        let w = b.next(0, 0);
        assert!(w > v && w & 0xff == 5, "{w:#x}");
    }
}
