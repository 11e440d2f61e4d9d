//! An outbound link to a peer that must stay up: `Idle -> Connecting -> Up`, and on
//! failure `Backoff(until)` with a delay that doubles up to a cap. Pure state: the
//! owner turns it into `Connect` and `Timer` outputs, so simulations can drive it.

use super::{ConnId, Millis};

/// Where a link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not wanted, or not yet started.
    Idle,
    /// A connect is in flight.
    Connecting,
    /// Connected on this connection.
    Up(ConnId),
    /// Waiting until this time before the next attempt.
    Backoff(Millis),
}

/// Link state plus its backoff schedule.
#[derive(Clone, Debug)]
pub struct Link {
    /// Current state.
    pub state: LinkState,
    /// First retry delay, in ms.
    base: Millis,
    /// Largest retry delay, in ms.
    cap: Millis,
    /// Delay that the next failure will use.
    next: Millis,
}

impl Link {
    /// A link that retries after `base` ms, doubling up to `cap` ms.
    pub fn new(base: Millis, cap: Millis) -> Link {
        Link {
            state: LinkState::Idle,
            base,
            cap,
            next: base,
        }
    }

    /// The connection, if up.
    pub fn conn(&self) -> Option<ConnId> {
        match self.state {
            LinkState::Up(c) => Some(c),
            _ => None,
        }
    }

    /// Records that a connect was started.
    pub fn connecting(&mut self) {
        self.state = LinkState::Connecting;
    }

    /// Records success; the backoff starts again from `base`.
    pub fn up(&mut self, conn: ConnId) {
        self.state = LinkState::Up(conn);
        self.next = self.base;
    }

    /// Records a failed connect or a lost connection at `now`; returns when to retry.
    pub fn failed(&mut self, now: Millis) -> Millis {
        let until = now + self.next;
        self.next = (self.next * 2).min(self.cap);
        self.state = LinkState::Backoff(until);
        until
    }

    /// Whether a retry is due at `now`.
    pub fn due(&self, now: Millis) -> bool {
        match self.state {
            LinkState::Idle => true,
            LinkState::Backoff(until) => now >= until,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut l = Link::new(100, 350);
        assert!(l.due(0));
        l.connecting();
        assert!(!l.due(1_000));
        assert_eq!(l.failed(0), 100);
        assert!(!l.due(99) && l.due(100));
        assert_eq!(l.failed(100), 300);
        assert_eq!(l.failed(300), 650);
        assert_eq!(l.failed(650), 1_000);
        let c = ConnId::new(3, 1);
        l.up(c);
        assert_eq!(l.conn(), Some(c));
        assert_eq!(l.failed(2_000), 2_100);
    }
}
