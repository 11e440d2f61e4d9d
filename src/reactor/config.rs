//! The reactor's tunables: frame sizes, output marks and limits, and each
//! connection's share of a loop turn (see the parent module).

use super::Millis;
use crate::protocol;

/// Tunables of the loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest payload accepted from a client.
    pub max_payload: u32,
    /// Largest payload accepted on outbound links and from proven members (the
    /// manager's ring, handoff chunks, forwarded requests).
    pub member_max_payload: u32,
    /// Pending output above which a connection stops being read.
    pub high_water: usize,
    /// Pending output below which a paused connection is read again.
    pub low_water: usize,
    /// Bytes asked of the kernel per read call.
    pub read_chunk: usize,
    /// Bytes read from one connection per turn before others get a go.
    pub read_budget: usize,
    /// Bytes written to one connection per turn.
    pub write_cap: usize,
    /// Bytes of replies one connection's requests may queue per turn before its
    /// remaining input waits for the next turn (others get a go first).
    pub turn_output: usize,
    /// Queued output above which a client connection (accepted, not a proven
    /// member) is dropped; never below twice `max_payload` plus `high_water`, so
    /// one largest reply on top of a full buffer always fits.
    pub output_limit: usize,
    /// How long a closing connection may drain its peer's input, in ms.
    pub linger: Millis,
    /// Buffers larger than this are released once empty (after a large frame).
    pub shrink_above: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_payload: protocol::DEFAULT_MAX_PAYLOAD,
            member_max_payload: 1 << 30,
            high_water: 4 << 20,
            low_water: 1 << 20,
            read_chunk: 64 << 10,
            read_budget: 1 << 20,
            write_cap: 4 << 20,
            turn_output: 1 << 20,
            output_limit: 64 << 20,
            linger: 2_000,
            shrink_above: 1 << 20,
        }
    }
}
