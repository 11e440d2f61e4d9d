//! The launcher's child processes: starting one from the launcher's own executable,
//! reaping, stopping them all (from the shell's `exit` or from a signal), and what a
//! child does if the launcher dies first.
//!
//! Every pid the launcher started and has not reaped is in a [`Registry`] behind one
//! mutex. Whoever stops the cluster (the main thread leaving the shell, or the signal
//! thread on SIGINT, SIGTERM or SIGHUP) holds that mutex for the whole stop, so the
//! two never race, and reaping anywhere else takes it too. Children are reaped with
//! `waitpid` by pid (their `std::process::Child` handles are dropped at once), so it
//! does not matter which thread reaps.
//!
//! On Linux each child is started with `PR_SET_PDEATHSIG` = SIGKILL: if the launcher
//! dies without stopping them (SIGKILL, a crash), the kernel kills them too. The
//! signal fires when the *thread* that forked the child ends, so children are only
//! started from the launcher's main thread, which lives as long as the launcher.
//! Only the launcher sets it (in the child between fork and exec): a server started
//! by hand (`gtstore storage`) does not die with its shell.

use super::Role;
use crate::client::secret;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a child has to exit after SIGINT before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Locks `m`, whatever a panicking holder left behind.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The launcher's live children and its scratch directory, shared with the signal
/// thread.
#[derive(Default)]
pub(super) struct Registry {
    /// Started, not reaped yet.
    pub live: Vec<(u32, Role)>,
    /// A directory the launcher made for the nodes' data, removed on the way out.
    pub scratch: Option<PathBuf>,
}

/// The registry, shared.
pub(super) type Shared = Arc<Mutex<Registry>>;

/// Starts `gtstore ARGS` (this very executable) in its own process group, with
/// stdout and stderr piped, and registers its pid. The cluster's `secret` goes in
/// the child's environment (`GTSTORE_SECRET`), never in its argv, which every user
/// of the machine can read; an admin secret the launcher's own environment may hold
/// is not passed on, so the manager's admin secret is the cluster secret.
pub(super) fn spawn(
    shared: &Shared,
    role: Role,
    args: &[String],
    secret: &str,
) -> Result<Child, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot tell which program is running: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .env(secret::SECRET_ENV, secret)
        .env_remove(secret::ADMIN_SECRET_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not in the terminal's process group: a Ctrl-C reaches only the launcher.
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: between fork and exec only async-signal-safe calls (prctl,
        // getppid) are made, on no shared state.
        let launcher = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The launcher may have died before the prctl took effect.
                if libc::getppid() != launcher {
                    return Err(io::Error::other("the launcher is gone"));
                }
                Ok(())
            });
        }
    }
    let mut guard = lock(shared);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {} {}: {e}", exe.display(), args[0]))?;
    guard.live.push((child.id(), role));
    Ok(child)
}

/// Reaps `pid` if it has exited (without waiting); forgets it if so.
pub(super) fn reap(shared: &Shared, pid: u32) -> Option<ExitStatus> {
    let mut guard = lock(shared);
    let status = try_wait(pid)?;
    guard.live.retain(|&(p, _)| p != pid);
    Some(status)
}

/// `waitpid(pid, WNOHANG)`: the status if it exited (or is not our child any more).
fn try_wait(pid: u32) -> Option<ExitStatus> {
    let mut status = 0;
    // SAFETY: waitpid on a pid with a valid out pointer.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match r {
        0 => None,
        r if r > 0 => Some(ExitStatus::from_raw(status)),
        // ECHILD: already reaped; treat as gone.
        _ => Some(ExitStatus::from_raw(0)),
    }
}

/// Sends `sig` to `pid`.
pub(super) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2); the pid is a child not yet reaped, so it is still ours.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Stops every live child (the registry must be locked by the caller): the nodes
/// first, while the manager can still hear them go, then the manager; each gets
/// SIGINT, up to [`STOP_GRACE`], then SIGKILL. Returns how each exited. `say` gets
/// a line per process that had to be killed.
pub(super) fn stop_all(reg: &mut Registry, say: &dyn Fn(String)) -> Vec<(u32, ExitStatus)> {
    let mut done = Vec::new();
    for role in [Role::Node, Role::Manager] {
        let group: Vec<u32> = reg
            .live
            .iter()
            .filter(|(_, r)| *r == role)
            .map(|&(p, _)| p)
            .collect();
        // SIGINT, not SIGTERM: to a storage node SIGTERM means "hand your data
        // over and leave the ring"; SIGINT is the servers' "stop now".
        for &pid in &group {
            signal(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut left = group;
        while !left.is_empty() {
            left.retain(|&pid| match try_wait(pid) {
                Some(status) => {
                    done.push((pid, status));
                    false
                }
                None => true,
            });
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in left {
            say(format!(
                "gtstore: pid {pid} still running after SIGINT; killing it"
            ));
            signal(pid, libc::SIGKILL);
            let mut status = 0;
            // SAFETY: waitpid on our child with a valid out pointer.
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            done.push((pid, ExitStatus::from_raw(status)));
        }
    }
    reg.live.clear();
    if let Some(dir) = reg.scratch.take() {
        let _ = std::fs::remove_dir_all(dir);
    }
    done
}

/// The terminal's settings as they were before the line editor changed them, to
/// put back if a signal ends the launcher in the middle of a prompt.
pub(super) struct Terminal(Option<libc::termios>);

impl Terminal {
    /// Saves stdin's terminal settings, if stdin is a terminal.
    pub fn save() -> Terminal {
        // SAFETY: tcgetattr on fd 0 with a zeroed out struct.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            Terminal((libc::tcgetattr(0, &mut t) == 0).then_some(t))
        }
    }

    /// Puts the saved settings back (and turns bracketed paste off again).
    pub fn restore(&self) {
        if let Some(t) = &self.0 {
            // SAFETY: tcsetattr on fd 0 with settings read from it.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
            use std::io::Write;
            let mut out = io::stdout();
            let _ = out.write_all(b"\x1b[?2004l\r\n");
            let _ = out.flush();
        }
    }
}

/// The exit status for a launcher ended by signal `sig` (the shells' convention).
pub(super) fn signal_exit_code(sig: libc::c_int) -> i32 {
    128 + sig
}
