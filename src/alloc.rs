//! The memory allocator every gtstore program runs on: mimalloc, declared here
//! as the global allocator, so each binary (and each integration test) that
//! links the library gets it. The library's own unit tests keep a counting
//! allocator of their own (the node's tests count value copies).
//!
//! Why not the system's malloc: glibc puts a header before each block and
//! rounds to 16 bytes, so an engine record of 123 bytes (version, two lengths,
//! a 13-byte key, a 100-byte value) takes 144; mimalloc keeps no per-object
//! header and has a 128-byte size class. Its small-object paths are also cheaper, and a node
//! allocates on every request.
//!
//! One setting differs from mimalloc's default: freed pages go back to the
//! operating system at once ([`configure`]) instead of after a delay. A node
//! that buffered a burst (a stalled client's replies) and then falls idle would
//! otherwise keep the burst's memory resident, since mimalloc only purges
//! during later allocator calls; immediate purging cost no measurable CPU per
//! request under load (see the commit that made it).

use std::os::raw::{c_int, c_long};

#[cfg(not(test))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's number for its purge-delay option (`mi_option_purge_delay` in
/// its `mimalloc.h`; the binding crate names only some options).
const PURGE_DELAY: c_int = 15;

/// Applies gtstore's allocator settings; every `main` calls it first.
pub fn configure() {
    // SAFETY: mi_option_set takes any option number and value; it only stores
    // the value in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0 as c_long) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_configure_sets() {
        // SAFETY: reading an option is always allowed.
        let before = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // mimalloc 3's default purge delay is 1000 ms (10 in mimalloc 2); an
        // environment override would show here too, so allow any non-zero.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(before == 1000 || before == 10, "option 15 is {before}");
        }
        configure();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 0);
    }
}
