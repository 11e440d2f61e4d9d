//! One run: set up the shared state, start a reactor thread per `--threads`,
//! gather their progress once a second (and follow the manager's ring), then
//! merge what they counted into the [`Report`].

use super::cluster::fetch_slots;
use super::driver::{Driver, RingBoard, Routing, Shared, Templates, ThreadResult, VerifyCounts};
use super::spec::KeyDist;
use super::stats::{cpu_seconds, Stats, Tick};
use super::{resolve, rng, Msg, Report, Settings, Target};
use crate::client::manager_call;
use crate::protocol::op;
use crate::ring::Ring;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// CPU seconds (user, system) at an instant.
type CpuMark = ((f64, f64), Instant);

fn fetch_ring(manager: &str) -> Result<Ring, String> {
    let text = manager_call(manager, op::RING, Duration::from_secs(5))
        .map_err(|e| format!("RING from {manager}: {e}"))?;
    Ring::decode(&text).map_err(|e| format!("RING from {manager}: {e}"))
}

/// Runs the load and returns the report.
pub fn run(mut s: Settings) -> Result<Report, String> {
    s.check()?;
    let proto = s.target.proto();
    let (routing, manager) = routing(&s.target)?;
    let board = ring_board(manager.as_deref(), &routing)?;
    let slots = match &s.target {
        Target::RedisCluster(seed) => Some(Arc::new(fetch_slots(seed)?)),
        _ => None,
    };
    let mut target = s.target.describe();
    if let Some(m) = &slots {
        target.push_str(&format!(", {} masters", m.masters.len()));
    }
    let sizes = s.value_size.steps();
    let zipf = match s.key_dist {
        KeyDist::Zipf(theta) => Some(rng::Zipf::new(s.keys, theta)?),
        KeyDist::Uniform | KeyDist::Sequential => None,
    };
    let templates = Templates::new(proto, &sizes, &s.mix);
    let sh = Arc::new(Shared {
        s: s.clone(),
        proto,
        routing,
        board: board.clone(),
        slots,
        sizes,
        zipf,
        templates,
        t0: Instant::now(),
        abort: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel();
    let handles = spawn_threads(&sh, tx)?;
    let mut g = Gather::new(&sh, board.zip(manager));
    g.run(&rx);
    sh.abort.store(true, Ordering::Relaxed);
    let mut failure = g.failure.take();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert("a load thread panicked".to_string());
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut stats = Stats::default();
    let mut verify = VerifyCounts::default();
    let mut broken = 0;
    for r in &g.results {
        stats.merge(&r.stats);
        verify.merge(&r.verify);
        broken += r.broken;
    }
    let cpu = match (g.cpu_start, g.cpu_end) {
        (Some(((u0, s0), t0)), Some(((u1, s1), t1))) => {
            Some((u1 - u0, s1 - s0, t1.duration_since(t0).as_secs_f64()))
        }
        _ => None,
    };
    let verify = (s.verify).then_some(verify);
    Ok(Report {
        target,
        proto,
        settings: s,
        stats,
        verify,
        broken,
        cpu,
        per_second: g.per_second,
    })
}

/// How clients reach `target`, and the manager to take the ring from, if any.
fn routing(target: &Target) -> Result<(Routing, Option<String>), String> {
    Ok(match target {
        Target::Gtstore { manager, contacts } if contacts.is_empty() => {
            (Routing::Aware, manager.clone())
        }
        Target::Gtstore { manager, contacts } => {
            let list = contacts
                .iter()
                .map(|a| Ok((a.clone(), resolve(a)?)))
                .collect::<Result<Vec<_>, String>>()?;
            (Routing::Contacts(list), manager.clone())
        }
        Target::RedisCluster(_) => (Routing::Slots, None),
        Target::Resp(a) | Target::Memcached(a) => {
            (Routing::Contacts(vec![(a.clone(), resolve(a)?)]), None)
        }
    })
}

/// The manager's ring, shared with the threads, when there is a manager.
fn ring_board(manager: Option<&str>, routing: &Routing) -> Result<Option<Arc<RingBoard>>, String> {
    let Some(m) = manager else {
        return Ok(None);
    };
    let ring = fetch_ring(m)?;
    if matches!(routing, Routing::Aware) && ring.serving().is_empty() {
        return Err(format!("the manager at {m} has no serving storage node"));
    }
    Ok(Some(Arc::new(RingBoard {
        epoch: AtomicU64::new(ring.epoch),
        ring: Mutex::new(Arc::new(ring)),
    })))
}

/// Starts one reactor thread per `--threads`, each with its share of the clients.
fn spawn_threads(
    sh: &Arc<Shared>,
    tx: mpsc::Sender<Msg>,
) -> Result<Vec<JoinHandle<Result<(), String>>>, String> {
    let threads = sh.s.threads as u64;
    let clients = sh.s.clients as u64;
    let mut handles = Vec::new();
    for t in 0..threads {
        let first = t * clients / threads;
        let count = (t + 1) * clients / threads - first;
        let (sh, tx) = (sh.clone(), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || -> Result<(), String> {
                let mut reactor = crate::reactor::Reactor::new(crate::reactor::Config::default())
                    .map_err(|e| e.to_string())?;
                let mut d = Driver::new(sh, t as usize, first, count, tx.clone());
                let r = reactor.run(&mut d).map_err(|e| e.to_string());
                if let Err(e) = &r {
                    let _ = tx.send(Msg::Failed(t as usize, format!("reactor: {e}")));
                }
                r
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

/// The main thread's side of a run: what the threads reported so far.
struct Gather {
    sh: Arc<Shared>,
    /// The shared ring and the manager to refresh it from.
    board: Option<(Arc<RingBoard>, String)>,
    warmup: Duration,
    /// Seconds not printed yet: the merged tick and which threads reported it.
    ticks: BTreeMap<u64, (Tick, Vec<bool>)>,
    /// Each thread's last second of load, once its load phase ended.
    done_at: Vec<Option<u64>>,
    next_second: u64,
    per_second: Vec<Tick>,
    results: Vec<ThreadResult>,
    failure: Option<String>,
    cpu_start: Option<CpuMark>,
    cpu_end: Option<CpuMark>,
    finished: usize,
    next_poll: Instant,
}

impl Gather {
    fn new(sh: &Arc<Shared>, board: Option<(Arc<RingBoard>, String)>) -> Gather {
        let warmup = Duration::from_nanos(sh.s.warmup_ns);
        let threads = sh.s.threads;
        Gather {
            sh: sh.clone(),
            board,
            warmup,
            ticks: BTreeMap::new(),
            done_at: vec![None; threads],
            next_second: 1,
            per_second: Vec::new(),
            results: Vec::new(),
            failure: None,
            cpu_start: (warmup.is_zero())
                .then(|| cpu_seconds().map(|c| (c, Instant::now())))
                .flatten(),
            cpu_end: None,
            finished: 0,
            next_poll: sh.t0 + Duration::from_secs(1),
        }
    }

    /// Takes the threads' messages until every thread finished.
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let t0 = self.sh.t0;
        while self.finished < self.sh.s.threads {
            let now = Instant::now();
            let mut wake = now + Duration::from_millis(200);
            if self.cpu_start.is_none() {
                wake = wake.min(t0 + self.warmup);
            }
            if self.board.is_some() {
                wake = wake.min(self.next_poll);
            }
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(msg) => self.on_msg(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.print_ready();
            let now = Instant::now();
            if self.cpu_start.is_none() && now >= t0 + self.warmup {
                self.cpu_start = cpu_seconds().map(|c| (c, now));
            }
            if self.board.is_some() && now >= self.next_poll {
                self.next_poll = now + Duration::from_secs(1);
                self.poll_ring();
            }
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Tick(t, tick) => {
                let threads = self.sh.s.threads;
                let e = self
                    .ticks
                    .entry(tick.second)
                    .or_insert_with(|| (Tick::new(tick.second), vec![false; threads]));
                e.0.merge(&tick);
                e.1[t] = true;
            }
            Msg::LoadDone(t, last) => {
                self.done_at[t] = Some(last);
                if self.done_at.iter().all(|d| d.is_some()) {
                    self.cpu_end = cpu_seconds().map(|c| (c, Instant::now()));
                }
            }
            Msg::Finished(_, r) => {
                self.results.push(*r);
                self.finished += 1;
            }
            Msg::Failed(_, e) => {
                self.failure.get_or_insert(e);
                self.sh.abort.store(true, Ordering::Relaxed);
                self.finished += 1;
            }
        }
    }

    /// Prints every second all threads have reported (or finished before).
    fn print_ready(&mut self) {
        while let Some((_, got)) = self.ticks.get(&self.next_second) {
            let second = self.next_second;
            let ready = got
                .iter()
                .zip(&self.done_at)
                .all(|(g, d)| *g || d.is_some_and(|d| d < second));
            if !ready {
                break;
            }
            let (tick, _) = self.ticks.remove(&second).expect("present");
            if self.sh.s.progress {
                eprintln!("{}", tick.line());
            }
            self.per_second.push(tick);
            self.next_second += 1;
        }
    }

    /// Fetches the manager's ring and publishes it to the threads if it changed.
    fn poll_ring(&mut self) {
        let Some((b, m)) = &self.board else {
            return;
        };
        match fetch_ring(m) {
            Ok(ring) if ring.epoch != b.epoch.load(Ordering::Acquire) => {
                log::info!("ring epoch {} from the manager", ring.epoch);
                let epoch = ring.epoch;
                *b.ring.lock().expect("ring lock") = Arc::new(ring);
                b.epoch.store(epoch, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => log::debug!("{e}"),
        }
    }
}
