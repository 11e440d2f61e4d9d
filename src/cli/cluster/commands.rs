//! The launcher's shell commands: `add`, `drop ID`, `kill ID`, `restart ID`, `nodes`.

use super::{procs, Cluster, Role, START_TIMEOUT};
use crate::cli::shell::Extras;
use crate::cli::status;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Which processes a command may name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Running,
    Dead,
    Any,
}

impl Cluster {
    /// Asks the manager to drop node `id` (op DROP, as admin): a live node hands its data over,
    /// leaves the ring and exits; a node marked down is removed from the ring.
    fn manager_drop(&self, id: u32) -> Result<(), String> {
        let timeout = self.target.timeout;
        let (addr, node) = (&self.manager_addr, id.to_string());
        match crate::client::drop_node(addr, &node, self.secret.as_bytes(), timeout) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("the manager has no node {id}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The launched node with id `arg` (the latest, if it was restarted), which must
    /// be running or dead as `want` says.
    fn find_node(&mut self, arg: &[u8], want: Want) -> Result<usize, String> {
        let id: u32 = std::str::from_utf8(arg)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "ID must be a node id (see nodes)".to_string())?;
        let find = |c: &Cluster| {
            c.procs
                .iter()
                .rposition(|p| p.role == Role::Node && p.id() == Some(id))
        };
        let index = match find(self) {
            Some(i) => i,
            None => {
                if let Ok(st) = self.status() {
                    self.learn_ids(&status::nodes(&st));
                }
                find(self).ok_or_else(|| format!("no launched node has id {id}"))?
            }
        };
        let dead = self.reap(index);
        let p = &self.procs[index];
        match want {
            Want::Running if dead => Err(format!("node {id} is not running ({})", p.state())),
            Want::Dead if !dead => Err(format!(
                "node {id} is running (pid {}); kill it first",
                p.pid
            )),
            _ => Ok(index),
        }
    }

    fn add(&mut self) -> Result<String, String> {
        let i = self.spawn_node()?;
        self.come_up(i)?;
        let p = &self.procs[i];
        Ok(format!("[{}] up (pid {})", p.label(), p.pid))
    }

    /// Waits for the new process `i` to listen and be up; kills it if it does not.
    fn come_up(&mut self, i: usize) -> Result<(), String> {
        let started = self.wait_listening(&[i]).and_then(|_| self.wait_up(&[i]));
        if let Err(e) = started {
            procs::signal(self.procs[i].pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(1);
            while !self.reap(i) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(format!("the node did not come up: {e}"));
        }
        Ok(())
    }

    fn restart(&mut self, arg: &[u8]) -> Result<String, String> {
        let old = self.find_node(arg, Want::Dead)?;
        let p = &self.procs[old];
        let id = p.id();
        let port = p.addr.as_deref().and_then(super::port_of);
        let (Some(port), Some(dir)) = (port, p.data_dir.clone()) else {
            return Err("it never listened; use add".into());
        };
        let i = self.spawn_storage(id, port, dir)?;
        self.come_up(i)?;
        let p = &self.procs[i];
        let mut answer = format!("[{}] up again (pid {})", p.label(), p.pid);
        if let (Some(old), Some(new)) = (id, p.id()) {
            if old != new {
                // It had left the ring (a drop), so the manager took it as a new node.
                answer += &format!("; node {old} had left the ring, so it joined as node {new}");
            }
        }
        Ok(answer)
    }

    fn drop_node(&mut self, arg: &[u8]) -> Result<String, String> {
        let i = self.find_node(arg, Want::Any)?;
        let id = self.procs[i].id().expect("found by id");
        if self.reap(i) {
            // The manager removes a node it has marked down; until then it would
            // wait for a handover that never comes.
            self.wait_marked_down(id)?;
            self.manager_drop(id)?;
            return Ok(format!(
                "node {id} ({}): removed from the ring; its ranges are copied again \
                 from the other replicas",
                self.procs[i].state()
            ));
        }
        self.manager_drop(id)?;
        let p = &self.procs[i];
        Ok(format!(
            "[{}] (pid {}): handing its data over, then leaving",
            p.label(),
            p.pid
        ))
    }

    /// Waits until the manager lists node `id` as down.
    fn wait_marked_down(&self, id: u32) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let st = self.status()?;
            let nodes = status::nodes(&st);
            match nodes.iter().find(|n| n.id == id) {
                None => return Err(format!("node {id} is not in the ring")),
                Some(n) if n.state == "down" => return Ok(()),
                Some(n) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the manager still lists node {id} as {} after {} s",
                        n.state,
                        START_TIMEOUT.as_secs()
                    ))
                }
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn kill(&mut self, arg: &[u8]) -> Result<String, String> {
        let i = self.find_node(arg, Want::Running)?;
        let pid = self.procs[i].pid;
        procs::signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.reap(i) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(format!("[{}] (pid {pid}): killed", self.procs[i].label()))
    }
}

impl Extras for Cluster {
    fn help(&self) -> &str {
        "cluster commands:
  add                  start one more storage node
  drop ID              node ID hands its data over and leaves (the manager's DROP);
                       a dead node is removed from the ring
  kill ID              SIGKILL node ID (crash)
  restart ID           start dead node ID again, on its old port and data
  nodes                the launched processes
"
    }

    fn run(&mut self, cmd: &str, args: &[Vec<u8>], out: &mut dyn Write) -> Option<io::Result<()>> {
        let result = match (cmd, args) {
            ("add", []) => self.add(),
            ("drop", [id]) => self.drop_node(id),
            ("kill", [id]) => self.kill(id),
            ("restart", [id]) => self.restart(id),
            ("nodes", []) => {
                if let Ok(st) = self.status() {
                    self.learn_ids(&status::nodes(&st));
                }
                return Some(out.write_all(self.describe().as_bytes()));
            }
            ("add" | "nodes", _) => Err(format!("usage: {cmd}")),
            ("drop" | "kill" | "restart", _) => Err(format!("usage: {cmd} ID")),
            _ => return None,
        };
        Some(match result {
            Ok(line) => writeln!(out, "{line}"),
            Err(e) => writeln!(out, "error: {e}"),
        })
    }

    fn set_printer(&mut self, printer: Box<dyn rustyline::ExternalPrinter + Send>) {
        *procs::lock(&self.sink.0) = Some(printer);
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn finds_listening_address() {
        let m = "[2026-01-01T00:00:00.000Z INFO  gtstore::listening] gtstore-manager listening on 127.0.0.1:40999";
        assert_eq!(listening_addr(m).as_deref(), Some("127.0.0.1:40999"));
        let s = "[.. INFO gtstore::listening] gtstore-storage listening on 127.0.0.1:35493 (manager 127.0.0.1:40999)";
        assert_eq!(listening_addr(s).as_deref(), Some("127.0.0.1:35493"));
        let r = "[.. INFO gtstore::listening] gtstore-storage RESP listening on 127.0.0.1:6379";
        assert_eq!(listening_addr(r), None);
        assert_eq!(
            listening_addr("listening on 127.0.0.1:7001."),
            Some("127.0.0.1:7001".into())
        );
        assert_eq!(listening_addr("not listening yet"), None);
        assert_eq!(listening_addr("listening on nothing"), None);
        assert_eq!(listening_addr("listening on host:notaport"), None);
        let r = "[.. INFO  gtstore::storage::node] registered with the manager as node 12";
        assert_eq!(registered_id(r), Some(12));
        assert_eq!(registered_id("node 12 joined"), None);
    }

    #[test]
    fn labels_name_the_id_and_the_port() {
        let label = |role, id, port| Label { role, id, port }.to_string();
        assert_eq!(label(Role::Manager, None, Some(7000)), "manager :7000");
        assert_eq!(label(Role::Node, Some(3), Some(7001)), "node 3 :7001");
        assert_eq!(label(Role::Node, None, None), "node ? :?");
    }
}
