//! Durable commit throughput of the file store against the disk's own append + `fdatasync`
//! rate, measured in one run, in one directory, on the same file system.
//!
//! - `raw`: `write_all` + `File::sync_data` of one record to a plain file opened for append;
//!   the record is as long as the single store's mean frame (frame header + the encoded change:
//!   the journal's growth per commit, measured in the warm-up).
//! - `single`: `Store::commit` of one change through `FileStore`: one frame, one `fdatasync`.
//! - `batch-8`, `batch-64`: one `Commit` of 8 / 64 changes (8 / 64 different jobs, each moving
//!   one step): one frame, one `fdatasync`.
//! - `raw-8`, `raw-64`: `raw` with records as long as the frames of `batch-8` / `batch-64`: what
//!   the disk itself charges for the larger frames.
//!
//! The changes are real transitions from the pure state machine: a pool of 64 optional jobs,
//! each cycling `Queued -> Running` (attempt started), `Running -> Completed` (exit 0),
//! `Completed -> Queued` (rerun); a commit takes the next step of the next job(s). Commits carry
//! changes only (no status messages). The stores are opened with compaction off, so that every
//! timed commit is exactly one frame and one `fdatasync`.
//!
//! Only the `Store::commit` call (or the raw append + sync) is timed; building the changes is
//! not. The modes run in rounds of `ROUND` each, interleaved (the order rotating every round),
//! so that drift in the disk's speed (other users, write-back) falls on all of them alike. Each
//! ratio is printed three ways: pooled over the whole run; the median of the per-round ratios
//! (each round's store figure over the same round's raw figure); and from the median latencies
//! (the least sensitive to the stalls other users' IO causes). Goals: single ÷ raw ≥ 0.95,
//! batch-8 transitions/s ÷ raw ≥ 6.
//!
//! Last, for information, the same operations on tmpfs (`/dev/shm`, where `fdatasync` does
//! nothing): the store's CPU cost per commit, apart from the disk.
//!
//! Run with `cargo bench --bench durability` (about 25 s). `JOBSTATE_BENCH_SECS=<s>` sets the
//! time per mode (default 3). The directory is `target/jobstate-bench/` under the current
//! directory (the package root under `cargo bench`), removed afterwards; the file system type
//! is printed: on tmpfs `fdatasync` does nothing and the figures mean nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobstate::chrono::TimeDelta;
use jobstate::store::{Change, Commit, Revision, Store};
use jobstate::{
    AttemptRef, BootId, Event, EventKind, FileStore, FileStoreOptions, JobId, JobSpec, JobState,
    StateKind, Timestamp, transition,
};

/// Jobs in the pool: a batch of 64 moves 64 different jobs.
const POOL: usize = 64;
/// Cycles of the whole pool (start, exit 0, rerun) in the warm-up.
const WARM_UP_CYCLES: usize = 4;
/// One round of one mode.
const ROUND: Duration = Duration::from_millis(250);

/// What a round measures. The three raw modes append records of the size of the frames of the
/// three store modes: `raw` is the baseline of every ratio; `raw-8` and `raw-64` show what the
/// disk itself charges for the larger frames of the batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raw,
    Single,
    Batch8,
    Batch64,
    Raw8,
    Raw64,
    /// The SQLite store (feature `sqlite`), one change per commit.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    SqliteSingle,
    /// The SQLite store, eight changes per commit.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    SqliteBatch8,
}

impl Mode {
    #[cfg(not(feature = "sqlite"))]
    const ALL: &'static [Mode] = &[
        Mode::Raw,
        Mode::Single,
        Mode::Batch8,
        Mode::Batch64,
        Mode::Raw8,
        Mode::Raw64,
    ];
    #[cfg(feature = "sqlite")]
    const ALL: &'static [Mode] = &[
        Mode::Raw,
        Mode::Single,
        Mode::Batch8,
        Mode::Batch64,
        Mode::Raw8,
        Mode::Raw64,
        Mode::SqliteSingle,
        Mode::SqliteBatch8,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Single => "single",
            Mode::Batch8 => "batch-8",
            Mode::Batch64 => "batch-64",
            Mode::Raw8 => "raw-8",
            Mode::Raw64 => "raw-64",
            Mode::SqliteSingle => "sqlite",
            Mode::SqliteBatch8 => "sqlite-8",
        }
    }

    /// Changes per commit (1 for the raw modes: one record per append).
    fn changes(self) -> usize {
        match self {
            Mode::Batch8 | Mode::SqliteBatch8 => 8,
            Mode::Batch64 => 64,
            _ => 1,
        }
    }

    fn index(self) -> usize {
        Mode::ALL
            .iter()
            .position(|&m| m == self)
            .expect("every mode is in ALL")
    }
}

/// One job of the pool and the state its changes have reached.
struct Job {
    spec: JobSpec,
    state: JobState,
    seq: u64,
}

/// Real transitions for a pool of jobs, one step of one job at a time.
struct Pool {
    jobs: Vec<Job>,
    next: usize,
    boot: BootId,
    at: Timestamp,
    since_boot: Duration,
}

impl Pool {
    fn new(size: usize) -> Self {
        let jobs = (0..size)
            .map(|i| {
                let id = JobId::new(format!("deploy-{i:07}-kb5034441")).expect("valid job id");
                Job {
                    spec: JobSpec::new(id).with_mandatory(false),
                    state: JobState::initial(),
                    seq: 0,
                }
            })
            .collect();
        Self {
            jobs,
            next: 0,
            boot: BootId::new("3f1c9a52-8e2b-4d7a-9c11-5b0e2f6a7d43").expect("valid boot id"),
            at: "2026-11-21T02:00:00Z".parse().expect("valid time"),
            since_boot: Duration::from_secs(60),
        }
    }

    fn event(&mut self, kind: EventKind) -> Event {
        self.at += TimeDelta::milliseconds(1500);
        self.since_boot += Duration::from_millis(1500);
        Event {
            at: self.at,
            boot: self.boot.clone(),
            since_boot: self.since_boot,
            kind,
        }
    }

    /// The changes that create every job (`seq` 1): the untimed setup commit.
    fn creations(&mut self) -> Vec<Change> {
        let event = self.event(EventKind::Offered);
        self.jobs
            .iter_mut()
            .map(|job| {
                job.seq = 1;
                Change {
                    job: job.spec.id().clone(),
                    seq: 1,
                    spec: Some(job.spec.clone().into()),
                    event: event.clone(),
                    state: job.state.clone(),
                }
            })
            .collect()
    }

    /// The next step of the next job: start, exit 0 (completed), rerun, start, ...
    fn step(&mut self) -> Change {
        let i = self.next;
        self.next = (self.next + 1) % self.jobs.len();
        let kind = match self.jobs[i].state.kind() {
            StateKind::Queued => EventKind::AttemptStarted,
            StateKind::Running => {
                let attempt = self.jobs[i].state.attempt().expect("a running attempt");
                EventKind::ProgramExited {
                    attempt: AttemptRef {
                        run: attempt.run,
                        number: attempt.number,
                    },
                    exit: jobstate::ProgramExit::Code(0),
                    restart_pending: false,
                }
            }
            _ => EventKind::RerunRequested,
        };
        let event = self.event(kind);
        let job = &mut self.jobs[i];
        let state = transition(&job.spec, &job.state, &event)
            .expect("a valid transition")
            .state
            .expect("the transition changes the state");
        job.seq += 1;
        job.state = state.clone();
        Change {
            job: job.spec.id().clone(),
            seq: job.seq,
            spec: None,
            event,
            state,
        }
    }

    fn steps(&mut self, n: usize) -> Vec<Change> {
        (0..n).map(|_| self.step()).collect()
    }
}

/// A store with its pool and revision, and the files whose growth is its bytes written.
struct Durable {
    store: Box<dyn Store>,
    pool: Pool,
    revision: Revision,
    files: Vec<PathBuf>,
}

impl Durable {
    fn open(dir: &Path) -> Self {
        let options = FileStoreOptions {
            compact_after: u64::MAX,
            per_job: 0,
            retention: jobstate::store::Retention::keep_all(),
        };
        let store = FileStore::open_with(dir, options).expect("open the file store");
        Self::with(Box::new(store), vec![dir.join("journal")])
    }

    /// The SQLite store, in a database file in the same directory as the others.
    #[cfg(feature = "sqlite")]
    fn sqlite(path: &Path) -> Self {
        let store = jobstate::store::SqliteStore::open(path).expect("open the SQLite store");
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        Self::with(Box::new(store), vec![path.to_path_buf(), wal])
    }

    fn with(mut store: Box<dyn Store>, files: Vec<PathBuf>) -> Self {
        let mut pool = Pool::new(POOL);
        let revision = store
            .commit(&Commit::new(Revision(0), pool.creations()))
            .expect("commit the creations");
        Self {
            store,
            pool,
            revision,
            files,
        }
    }

    /// The bytes of its files (a SQLite WAL is reset at checkpoints: the growth then reads 0).
    fn journal_len(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// What one mode measured: operations, changes, time inside the timed calls, latencies.
#[derive(Default)]
struct Tally {
    commits: u64,
    changes: u64,
    busy: Duration,
    latencies: Vec<Duration>,
    /// Journal bytes written (store modes) or bytes appended (raw).
    bytes: u64,
    /// Per round: commits per second.
    rounds: Vec<f64>,
}

impl Tally {
    fn commits_per_sec(&self) -> f64 {
        self.commits as f64 / self.busy.as_secs_f64()
    }

    fn changes_per_sec(&self) -> f64 {
        self.changes as f64 / self.busy.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// A plain file opened for append, and the record appended to it.
struct Raw {
    file: File,
    record: Vec<u8>,
}

impl Raw {
    fn open(path: &Path, len: usize) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open a raw file");
        Self {
            file,
            record: vec![0xA5u8; len],
        }
    }
}

fn raw_round(raw: &mut Raw, tally: &mut Tally) {
    let Raw { file, record } = raw;
    let (mut commits, mut busy) = (0u64, Duration::ZERO);
    let round = Instant::now();
    while round.elapsed() < ROUND {
        let start = Instant::now();
        file.write_all(record).expect("append to the raw file");
        file.sync_data().expect("fdatasync the raw file");
        let took = start.elapsed();
        busy += took;
        commits += 1;
        tally.latencies.push(took);
    }
    tally.commits += commits;
    tally.changes += commits;
    tally.busy += busy;
    tally.bytes += commits * record.len() as u64;
    tally.rounds.push(commits as f64 / busy.as_secs_f64());
}

fn store_round(durable: &mut Durable, per_commit: usize, tally: &mut Tally) {
    let (mut commits, mut busy) = (0u64, Duration::ZERO);
    let before = durable.journal_len();
    let round = Instant::now();
    while round.elapsed() < ROUND {
        let commit = Commit::new(durable.revision, durable.pool.steps(per_commit));
        let start = Instant::now();
        let revision = durable.store.commit(&commit).expect("a durable commit");
        let took = start.elapsed();
        durable.revision = revision;
        busy += took;
        commits += 1;
        tally.latencies.push(took);
    }
    tally.commits += commits;
    tally.changes += commits * per_commit as u64;
    tally.busy += busy;
    tally.bytes += durable.journal_len().saturating_sub(before);
    tally.rounds.push(commits as f64 / busy.as_secs_f64());
}

/// The type of the file system holding `path`, from `/proc/self/mounts` (Linux).
fn fs_type(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "unknown".into();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{kind} ({device} on {mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

/// The cost of the same operations where `fdatasync` does nothing (tmpfs, `/dev/shm`), to
/// show what the store adds to a commit in CPU alone. Informational: not in the ratios.
fn cpu_cost(lens: [usize; 3]) {
    let shm = Path::new("/dev/shm");
    if !fs_type(shm).starts_with("tmpfs") {
        return;
    }
    let root = shm.join(format!("jobstate-bench-durability-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("create the tmpfs directory");
    println!();
    println!("on tmpfs (fdatasync does nothing), µs per op: the CPU cost alone");
    for (len, per_commit) in lens.into_iter().zip([1, 8, 64]) {
        let mut raw = Raw::open(&root.join(format!("raw-{per_commit}")), len);
        let mut durable = Durable::open(&root.join(format!("store-{per_commit}")));
        let (mut raw_tally, mut store_tally) = (Tally::default(), Tally::default());
        for _ in 0..2 {
            raw_round(&mut raw, &mut raw_tally);
            store_round(&mut durable, per_commit, &mut store_tally);
        }
        let raw_us = raw_tally.busy.as_secs_f64() * 1e6 / raw_tally.commits as f64;
        let store_us = store_tally.busy.as_secs_f64() * 1e6 / store_tally.commits as f64;
        println!(
            "  {per_commit:>2} change(s)/commit: raw append of {len} B {raw_us:>6.2}, \
             Store::commit {store_us:>6.2}, the store's own cost {:>6.2} ({:.2} per change)",
            store_us - raw_us,
            (store_us - raw_us) / per_commit as f64,
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let per_mode = std::env::var("JOBSTATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_secs(3), Duration::from_secs_f64);
    let rounds = (per_mode.as_secs_f64() / ROUND.as_secs_f64())
        .ceil()
        .max(1.0) as usize;

    let root = std::env::current_dir()
        .expect("the current directory")
        .join("target")
        .join("jobstate-bench")
        .join(format!("durability-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("create the bench directory");
    println!("directory: {}", root.display());
    println!("file system: {}", fs_type(&root));

    let mut single = Durable::open(&root.join("single"));
    let mut batch8 = Durable::open(&root.join("batch8"));
    let mut batch64 = Durable::open(&root.join("batch64"));
    #[cfg(feature = "sqlite")]
    let (mut sqlite, mut sqlite8) = (
        Some(Durable::sqlite(&root.join("single.sqlite"))),
        Some(Durable::sqlite(&root.join("batch8.sqlite"))),
    );
    #[cfg(not(feature = "sqlite"))]
    let (mut sqlite, mut sqlite8): (Option<Durable>, Option<Durable>) = (None, None);

    // A short warm-up of every mode (not counted), of whole cycles of the pool (every job through
    // start, exit 0 and rerun, `WARM_UP_CYCLES` times). Each raw record is as long as the mean
    // frame of its store mode during the warm-up (the journal's growth per commit).
    let frame_len = |durable: &mut Durable, per_commit: usize| {
        let commits = WARM_UP_CYCLES * 3 * POOL / per_commit;
        let before = durable.journal_len();
        for _ in 0..commits {
            let commit = Commit::new(durable.revision, durable.pool.steps(per_commit));
            durable.revision = durable.store.commit(&commit).expect("a durable commit");
        }
        ((durable.journal_len() - before) / commits as u64) as usize
    };
    let lens = [
        frame_len(&mut single, 1),
        frame_len(&mut batch8, 8),
        frame_len(&mut batch64, 64),
    ];
    let mut raws: Vec<Raw> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| Raw::open(&root.join(format!("raw-{i}")), len))
        .collect();
    for raw in &mut raws {
        raw_round(raw, &mut Tally::default());
    }

    let mut tallies: Vec<Tally> = Mode::ALL.iter().map(|_| Tally::default()).collect();
    println!(
        "{rounds} rounds of {} ms per mode, {} modes interleaved ...",
        ROUND.as_millis(),
        Mode::ALL.len()
    );
    for round in 0..rounds {
        for k in 0..Mode::ALL.len() {
            let index = (round + k) % Mode::ALL.len();
            let tally = &mut tallies[index];
            match Mode::ALL[index] {
                Mode::Raw => raw_round(&mut raws[0], tally),
                Mode::Raw8 => raw_round(&mut raws[1], tally),
                Mode::Raw64 => raw_round(&mut raws[2], tally),
                Mode::Single => store_round(&mut single, 1, tally),
                Mode::Batch8 => store_round(&mut batch8, 8, tally),
                Mode::Batch64 => store_round(&mut batch64, 64, tally),
                Mode::SqliteSingle => {
                    store_round(sqlite.as_mut().expect("the sqlite feature"), 1, tally)
                }
                Mode::SqliteBatch8 => {
                    store_round(sqlite8.as_mut().expect("the sqlite feature"), 8, tally)
                }
            }
        }
    }

    println!();
    println!(
        "{:<9} {:>9} {:>8} {:>11} {:>14} {:>9} {:>9}",
        "mode", "bytes/op", "ops", "commits/s", "transitions/s", "p50 µs", "p99 µs"
    );
    let mut p50s = Vec::new();
    for (mode, tally) in Mode::ALL.iter().zip(tallies.iter_mut()) {
        let p50 = tally.percentile(0.5);
        p50s.push(p50.as_secs_f64());
        let p99 = tally.percentile(0.99);
        println!(
            "{:<9} {:>9.0} {:>8} {:>11.0} {:>14.0} {:>9.1} {:>9.1}",
            mode.name(),
            tally.bytes as f64 / tally.commits as f64,
            tally.commits,
            tally.commits_per_sec(),
            tally.changes_per_sec(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
        );
    }
    println!(
        "(ops: commits, or raw appends; bytes/op: the journal's growth per commit, or the raw \
         record; commits/s and transitions/s count only the time inside the timed calls)"
    );

    // The ratio of `over`'s rate to `base`'s (transitions/s when `transitions`, else
    // commits/s, over appends/s): pooled over the run, the median of the per-round ratios, and
    // from the median latencies (the least sensitive to stalls caused by other users' IO).
    let ratio = |over: Mode, base: Mode, transitions: bool| {
        let (o, b) = (&tallies[over.index()], &tallies[base.index()]);
        let k = if transitions {
            over.changes() as f64
        } else {
            1.0
        };
        let pooled = o.commits_per_sec() * k / b.commits_per_sec();
        let per_round = o.rounds.iter().zip(&b.rounds).map(|(o, b)| o * k / b);
        let p50 = p50s[base.index()] * k / p50s[over.index()];
        (pooled, median(per_round.collect()), p50)
    };
    println!();
    println!(
        "{:<32} {:>7} {:>13} {:>9} {:>7}",
        "ratio", "pooled", "median/round", "from p50", "goal"
    );
    let rows = [
        (
            "single commits/s ÷ raw",
            Mode::Single,
            Mode::Raw,
            false,
            "≥ 0.95",
        ),
        (
            "batch-8 transitions/s ÷ raw",
            Mode::Batch8,
            Mode::Raw,
            true,
            "≥ 6",
        ),
        (
            "batch-64 transitions/s ÷ raw",
            Mode::Batch64,
            Mode::Raw,
            true,
            "-",
        ),
        (
            "batch-8 commits/s ÷ raw-8",
            Mode::Batch8,
            Mode::Raw8,
            false,
            "-",
        ),
        (
            "batch-64 commits/s ÷ raw-64",
            Mode::Batch64,
            Mode::Raw64,
            false,
            "-",
        ),
    ];
    #[cfg(feature = "sqlite")]
    let rows = {
        let mut rows = rows.to_vec();
        rows.extend([
            (
                "sqlite commits/s ÷ raw",
                Mode::SqliteSingle,
                Mode::Raw,
                false,
                "-",
            ),
            (
                "sqlite ÷ file store (single)",
                Mode::SqliteSingle,
                Mode::Single,
                false,
                "-",
            ),
            (
                "sqlite-8 transitions/s ÷ raw",
                Mode::SqliteBatch8,
                Mode::Raw,
                true,
                "-",
            ),
        ]);
        rows
    };
    for (label, over, base, transitions, goal) in rows {
        let (pooled, per_round, p50) = ratio(over, base, transitions);
        println!("{label:<32} {pooled:>7.3} {per_round:>13.3} {p50:>9.3} {goal:>7}");
    }

    drop((single, batch8, batch64, raws, sqlite, sqlite8));
    cpu_cost(lens);
    if let Err(e) = std::fs::remove_dir_all(&root) {
        eprintln!("could not remove {}: {e}", root.display());
    }
}
