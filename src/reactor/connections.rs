//! Connections coming and going: accepting, dialing (a non-blocking connect
//! finished by its first writable event), and dropping one, at once when it is
//! past the hard output limit or at the end of the turn otherwise.

use super::*;

impl Reactor {
    pub(super) fn new_conn(&mut self, stream: TcpStream, phase: Phase, max_payload: u32) -> Conn {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        // Accepted connections are clients until proven members; outbound links
        // are this process's own.
        let limit = match phase {
            Phase::Open => (self.cfg.output_limit)
                .max((self.cfg.max_payload as usize).saturating_mul(2) + self.cfg.high_water),
            _ => usize::MAX,
        };
        let marks = Marks {
            high: self.cfg.high_water,
            low: self.cfg.low_water,
            shrink_above: self.cfg.shrink_above,
            limit,
        };
        Conn {
            stream,
            gen,
            phase,
            buf: ConnBuf::new(max_payload, marks),
            writable_registered: false,
            notify_drained: false,
        }
    }

    pub(super) fn connect(&mut self, addr: SocketAddr, tag: u64) -> io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let key = self.entries.vacant_key();
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let max = self.cfg.member_max_payload;
        let mut conn = self.new_conn(stream, Phase::Connecting(tag), max);
        conn.writable_registered = true;
        self.entries.insert(Entry::Conn(Box::new(conn)));
        Ok(())
    }

    pub(super) fn finish_connect<S: Service>(&mut self, svc: &mut S, id: ConnId, tag: u64) {
        let Some(c) = conn_in(&mut self.entries, id) else {
            return;
        };
        let result = match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match c.stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                let _ = c.stream.set_nodelay(true);
                c.phase = Phase::Open;
                c.writable_registered = false;
                let r = self.poll.registry().reregister(
                    &mut c.stream,
                    Token(id.idx as usize),
                    Interest::READABLE,
                );
                if r.is_err() {
                    self.drop_entry(id);
                    self.deliver(svc, Input::ConnectFailed { tag });
                    return;
                }
                self.deliver(svc, Input::Connected { conn: id, tag });
                // Data may already be waiting: edge-triggered, so look now.
                self.mark_pending(id);
            }
            Err(e) => {
                log::debug!("connect {tag} failed: {e}");
                self.drop_entry(id);
                self.deliver(svc, Input::ConnectFailed { tag });
            }
        }
    }

    /// Drops a client connection whose queued output passed its hard limit: its
    /// output is discarded, nothing more is read or queued, and it is removed at
    /// the end of the turn.
    pub(super) fn drop_over_limit(&mut self, now: Millis, id: ConnId) {
        let limit = self.cfg.output_limit;
        let Some(c) = self.conn_mut(id) else { return };
        log::warn!(
            "dropping client connection {id}: {} bytes of replies queued and unread, \
             over its limit of {limit}",
            c.buf.output_len()
        );
        c.buf.close();
        c.buf.discard_output();
        c.phase = Phase::Draining(now);
        self.to_remove.push(id);
    }

    pub(super) fn drop_entry(&mut self, id: ConnId) {
        if self.conn(id).is_some() {
            if let Entry::Conn(mut c) = self.entries.remove(id.idx as usize) {
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
        }
    }

    pub(super) fn accept<S: Service>(&mut self, svc: &mut S, key: usize) {
        loop {
            let Some(Entry::Listener(l, index)) = self.entries.get(key) else {
                return;
            };
            let index = *index;
            match l.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let slot = self.entries.vacant_key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(slot), Interest::READABLE)
                    {
                        log::warn!("register failed: {e}");
                        continue;
                    }
                    let conn = self.new_conn(stream, Phase::Open, self.cfg.max_payload);
                    let id = ConnId::new(slot as u32, conn.gen);
                    self.entries.insert(Entry::Conn(Box::new(conn)));
                    self.deliver(
                        svc,
                        Input::Accepted {
                            conn: id,
                            listener: index,
                        },
                    );
                    self.mark_pending(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and let the next event retry.
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }
}
