//! Recovery time of the file store: `FileStore::open` (read, checksum, decode, replay) of a
//! journal of 10 000, 100 000 and 1 000 000 records, in µs per record (goal ≤ 0.3).
//!
//! - A *record* is one [`Change`] (one transition of one job) in the journal; a frame (one
//!   commit) may hold several. The journals hold changes only (no status messages).
//! - The changes are real transitions from the pure state machine: jobs (default specs:
//!   mandatory, Windows Installer exit codes, 3 attempts) each with a history of 5 changes:
//!   offered (the change carrying the spec), started, exit 1603 (failure: queued for attempt
//!   2 with a back-off), started, exit 0 (completed). 64 jobs are in flight at once, their
//!   changes interleaved, as in an agent's journal.
//! - Two layouts: `1/frame`, one change per commit as the ledger writes single steps (the
//!   per-frame costs are all there), and `256/frame`, large batches (what remains is the
//!   per-record cost).
//! - The journals are written by `FileStore` itself, with compaction off
//!   (`FileStoreOptions { compact_after: u64::MAX, per_job: 0 }`), in a staging directory on
//!   tmpfs (`/dev/shm`, where `fdatasync` costs nothing; on the target directory itself if
//!   there is no tmpfs), then copied to `target/jobstate-bench/recovery/` under the current
//!   directory and kept there between runs (a marker file names what was built; every journal
//!   is checked by an untimed open before it is timed). Delete that directory, or set
//!   `JOBSTATE_BENCH_REBUILD=1`, to rebuild.
//! - The journal's layout (file header and frame header lengths) is probed from a store of one
//!   commit; the bench knows the 8-byte frame header (length, CRC of the payload) and the
//!   12-byte one (length, CRC of the length, CRC of the payload).
//! - The page cache is warm: the untimed open reads the journal first. What is measured is the
//!   CPU cost of recovery, not the disk's read speed.
//! - The time of an open excludes dropping the store afterwards. Opens are timed twice: repeated
//!   in this process (the heap warm: memory freed by the previous open is reused), and as the
//!   first open of a fresh process (this bench run again as a child: the heap comes from the
//!   kernel, page faults included), which is what an agent pays when it starts. `met` needs
//!   both within the goal.
//!
//! Then a breakdown over the same journal: read the file; walk the frames and check their
//! CRC-32C (by the `crc32c` crate, as the store does), a pass each; decoding and replaying the
//! records is the open's time less the second pass's. (Journal format 3 writes a job's later
//! changes against its previous one: they decode only against the job table that replay
//! builds, so the two stages are one.)
//!
//! And a baseline (up to 100 000 records): the same records as JSON lines, read and parsed line
//! by line into `serde_json::Value` (and, for reference, into `Record` and replayed: a JSON
//! journal's recovery).
//!
//! Run with `cargo bench --bench recovery` (about a minute; the first run builds the journals,
//! about 5 s more).

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jobstate::chrono::TimeDelta;
use jobstate::store::{Change, Commit, Record, Replay, Revision, Store};
use jobstate::{
    AttemptRef, BootId, Event, EventKind, FileStore, FileStoreOptions, JobId, JobSpec, JobState,
    StateKind, Timestamp, codec, transition,
};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Changes per frame of the two layouts.
const LAYOUTS: [usize; 2] = [1, 256];
/// Jobs in flight at once.
const IN_FLIGHT: usize = 64;
/// The goal, in µs per record.
const GOAL_US: f64 = 0.3;
/// The largest journal whose records are also measured as JSON lines.
const JSON_MAX: usize = 100_000;
/// What the builder writes; a cached journal with another marker is rebuilt.
const MARKER: &str = "jobstate recovery bench journal v4 (journal format 3, trailed frames)";

/// The journal's layout, learned from the store itself (the file format is private to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// The length of the journal's file header.
    header: usize,
    /// The length of a frame's header: payload length (u32 LE) | CRC-32C of the payload
    /// (u32 LE), 8 bytes; or payload length | CRC-32C of the length | CRC-32C of the payload,
    /// 12 bytes.
    frame_header: usize,
    /// The length of a frame's trailer: none, or (journal format 3) the payload length and
    /// its CRC again, 8 bytes.
    trailer: usize,
}

static LAYOUT: OnceLock<Layout> = OnceLock::new();

fn layout() -> Layout {
    *LAYOUT.get().expect("the layout is probed first")
}

/// Writes a store of one commit in `dir` and measures the header and the frame header: what
/// the journal holds beyond the commit's encoded records.
fn probe_layout(dir: &Path) -> Layout {
    let _ = std::fs::remove_dir_all(dir);
    let journal = dir.join("journal");
    let len = || {
        std::fs::metadata(&journal)
            .expect("the probe journal's metadata")
            .len() as usize
    };
    let options = FileStoreOptions {
        compact_after: u64::MAX,
        per_job: 0,
        retention: jobstate::store::Retention::keep_all(),
    };
    let mut store = FileStore::open_with(dir, options).expect("open the probe store");
    let header = len();
    let commit = Commit::new(Revision(0), vec![Changes::new().next_change()]);
    let mut payload = Vec::new();
    codec::encode_commit(&commit, &mut payload).expect("encode the probe commit");
    store.commit(&commit).expect("commit the probe");
    let overhead = len() - header - payload.len();
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    let (frame_header, trailer) = match overhead {
        8 => (8, 0),
        12 => (12, 0),
        20 => (12, 8),
        _ => panic!(
            "frames of {overhead} bytes around the payload: a layout this bench does not know"
        ),
    };
    Layout {
        header,
        frame_header,
        trailer,
    }
}

/// One job in flight and the state its changes have reached.
struct Job {
    spec: JobSpec,
    state: JobState,
    seq: u64,
    /// Exit codes of the attempts, in order: the first fails, the second succeeds.
    exits: u32,
}

/// A stream of real transitions: `IN_FLIGHT` jobs interleaved, each with 5 changes.
struct Changes {
    slots: Vec<Option<Job>>,
    next_slot: usize,
    next_job: usize,
    boot: BootId,
    at: Timestamp,
    since_boot: Duration,
}

impl Changes {
    fn new() -> Self {
        Self {
            slots: (0..IN_FLIGHT).map(|_| None).collect(),
            next_slot: 0,
            next_job: 0,
            boot: BootId::new("3f1c9a52-8e2b-4d7a-9c11-5b0e2f6a7d43").expect("valid boot id"),
            at: "2026-11-21T02:00:00Z".parse().expect("valid time"),
            since_boot: Duration::from_secs(60),
        }
    }

    fn event(&mut self, kind: EventKind) -> Event {
        self.at += TimeDelta::seconds(7);
        self.since_boot += Duration::from_secs(7);
        Event {
            at: self.at,
            boot: self.boot.clone(),
            since_boot: self.since_boot,
            kind,
        }
    }

    /// The next change: the next step of the job in the next slot, or the creation of a new job
    /// in it once the last one completed.
    fn next_change(&mut self) -> Change {
        let slot = self.next_slot;
        self.next_slot = (self.next_slot + 1) % self.slots.len();
        let running = self.slots[slot]
            .as_ref()
            .filter(|job| job.state.kind() != StateKind::Completed);
        let Some(job) = running else {
            let id =
                JobId::new(format!("deploy-{:07}-kb5034441", self.next_job)).expect("valid job id");
            self.next_job += 1;
            let spec = JobSpec::new(id);
            let event = self.event(EventKind::Offered);
            let change = Change {
                job: spec.id().clone(),
                seq: 1,
                spec: Some(spec.clone().into()),
                event,
                state: JobState::initial(),
            };
            self.slots[slot] = Some(Job {
                spec,
                state: JobState::initial(),
                seq: 1,
                exits: 0,
            });
            return change;
        };
        let kind = match &job.state {
            JobState::Queued { .. } => EventKind::AttemptStarted,
            JobState::Running { attempt, .. } => EventKind::ProgramExited {
                attempt: AttemptRef {
                    run: attempt.run,
                    number: attempt.number,
                },
                exit: jobstate::ProgramExit::Code(if job.exits == 0 { 1603 } else { 0 }),
                restart_pending: false,
            },
            other => panic!("unexpected state {:?}", other.kind()),
        };
        let event = self.event(kind);
        let job = self.slots[slot].as_mut().expect("the job in its slot");
        if matches!(event.kind, EventKind::ProgramExited { .. }) {
            job.exits += 1;
        }
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
}

/// The directory of the cached journal of `records` changes, `per_frame` per frame.
fn cache_dir(root: &Path, records: usize, per_frame: usize) -> PathBuf {
    root.join(format!("{records}-{per_frame}"))
}

fn marker(records: usize, per_frame: usize) -> String {
    format!(
        "{MARKER}\njobstate {}\n{:?}\nrecords {records}\nper frame {per_frame}\n",
        env!("CARGO_PKG_VERSION"),
        layout(),
    )
}

/// Writes the journal of `records` changes, `per_frame` per commit, into `dir`.
fn build(dir: &Path, records: usize, per_frame: usize) {
    let shm = Path::new("/dev/shm");
    let staging = if shm.is_dir() {
        shm.join(format!(
            "jobstate-bench-recovery-{}-{records}-{per_frame}",
            std::process::id()
        ))
    } else {
        dir.join("staging")
    };
    let _ = std::fs::remove_dir_all(&staging);
    let started = Instant::now();
    {
        let options = FileStoreOptions {
            compact_after: u64::MAX,
            per_job: 0,
            retention: jobstate::store::Retention::keep_all(),
        };
        let mut store = FileStore::open_with(&staging, options).expect("open the staging store");
        let mut changes = Changes::new();
        let mut revision = Revision(0);
        let mut written = 0;
        while written < records {
            let n = per_frame.min(records - written);
            let batch = (0..n).map(|_| changes.next_change()).collect();
            revision = store
                .commit(&Commit::new(revision, batch))
                .expect("commit to the staging store");
            written += n;
        }
    }
    std::fs::create_dir_all(dir).expect("create the cache directory");
    let tmp = dir.join("journal.tmp");
    std::fs::copy(staging.join("journal"), &tmp).expect("copy the journal");
    std::fs::rename(&tmp, dir.join("journal")).expect("rename the journal into place");
    std::fs::write(dir.join("marker"), marker(records, per_frame)).expect("write the marker");
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "  built {records} records, {per_frame}/frame in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Opens the store in `dir` untimed and counts its records (changes), or says why it cannot.
fn count(dir: &Path) -> Result<usize, String> {
    // Every history kept: the default retention would count finished jobs as tombstones.
    let options = FileStoreOptions {
        retention: jobstate::store::Retention::keep_all(),
        ..FileStoreOptions::default()
    };
    let mut store = FileStore::open_with(dir, options).map_err(|e| e.to_string())?;
    let snapshot = store.load().map_err(|e| e.to_string())?;
    Ok(snapshot.jobs.iter().map(|job| job.history().len()).sum())
}

/// The cached journal of `records` changes, built if missing, stale or damaged.
fn journal(root: &Path, records: usize, per_frame: usize, rebuild: bool) -> PathBuf {
    let dir = cache_dir(root, records, per_frame);
    let fresh =
        std::fs::read_to_string(dir.join("marker")).is_ok_and(|m| m == marker(records, per_frame));
    if rebuild || !fresh || count(&dir) != Ok(records) {
        let _ = std::fs::remove_dir_all(&dir);
        build(&dir, records, per_frame);
        assert_eq!(count(&dir), Ok(records), "the built journal's records");
    }
    dir
}

// CRC-32C (Castagnoli): the store's checksum, by the same crate (its module is private).
use crc32c::{crc32c, crc32c_append};

/// The payloads of the journal's frames, each checked against its CRC-32C (and the length
/// against its own, in the 12-byte frame header). In the 12-byte layout the payload's CRC is
/// salted: it covers the revision the frame commits (u64 LE: the file header's revision, its
/// last 8 bytes, plus one for the first frame, and so on) before the payload.
fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let Layout {
        header,
        frame_header,
        trailer,
    } = layout();
    let mut payloads = Vec::new();
    let mut at = header;
    let mut revision = u64::from_le_bytes(
        bytes[header - 8..header]
            .try_into()
            .expect("the revision in the file header"),
    );
    while at < bytes.len() {
        revision += 1;
        let word = |i: usize| {
            u32::from_le_bytes(
                bytes[i..i + 4]
                    .try_into()
                    .expect("four bytes of a frame header"),
            )
        };
        if frame_header == 12 {
            assert_eq!(
                crc32c(&bytes[at..at + 4]),
                word(at + 4),
                "the CRC of the length of the frame at {at}"
            );
        }
        let len = word(at) as usize;
        let crc = word(at + frame_header - 4);
        let payload = &bytes[at + frame_header..at + frame_header + len];
        let checked = if frame_header == 12 {
            // The salted CRC, as the store computes it: the salt's CRC continued over the
            // payload, without copying them together.
            crc32c_append(crc32c(&revision.to_le_bytes()), payload)
        } else {
            crc32c(payload)
        };
        assert_eq!(checked, crc, "the CRC of the frame at {at}");
        if trailer > 0 {
            let end = at + frame_header + len;
            assert!(
                bytes[end..end + 4] == bytes[at..at + 4]
                    && bytes[end + 4..end + 8] == bytes[at + 8..at + 12],
                "the trailer of the frame at {at}"
            );
        }
        payloads.push(payload);
        at += frame_header + len + trailer;
    }
    payloads
}

/// The costs of the stages of recovery, in seconds: read and CRC are timed as passes over the
/// journal, frame by frame as `FileStore::open` does, each doing the stages before it too; the
/// rest of an open is decoding and replaying.
#[derive(Default, Clone, Copy)]
struct Phases {
    /// `std::fs::read` of the journal.
    read: f64,
    /// Walking the frames and checking each one's CRC-32C.
    crc: f64,
    /// Decoding and replaying the records: the open's fastest time less the CRC pass's.
    replay: f64,
    /// Dropping what the open built: not part of an open (the store keeps it), shown apart.
    drop: f64,
}

impl Phases {
    fn sum(&self) -> f64 {
        self.read + self.crc + self.replay
    }
}

/// How far a pass over the journal goes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Read,
    Crc,
}

/// One pass over `journal` up to `stage`: its time.
fn pass(journal: &Path, stage: Stage) -> f64 {
    let t = Instant::now();
    let bytes = std::fs::read(journal).expect("read the journal");
    if stage >= Stage::Crc {
        black_box(frames(&bytes));
    }
    black_box(&bytes);
    drop(bytes);
    t.elapsed().as_secs_f64()
}

/// The timed opens and the breakdown over the store in `dir`: `reps` rounds, each one an open
/// (the store dropped untimed) and one pass at each stage, so that drift in the machine's speed
/// falls on all alike. Returns the open's median and minimum, and the stage costs.
fn measure(dir: &Path, reps: usize) -> ((f64, f64), Phases) {
    let journal = dir.join("journal");
    let stages = [Stage::Read, Stage::Crc];
    let mut opens = Vec::with_capacity(reps);
    let mut drops = Vec::with_capacity(reps);
    let mut passes: Vec<Vec<f64>> = stages.iter().map(|_| Vec::new()).collect();
    for _ in 0..reps {
        let t = Instant::now();
        let store = black_box(FileStore::open(dir).expect("open the store"));
        opens.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        drop(store);
        drops.push(t.elapsed().as_secs_f64());
        for (runs, &stage) in passes.iter_mut().zip(&stages) {
            runs.push(pass(&journal, stage));
        }
    }
    let min = opens.iter().copied().fold(f64::INFINITY, f64::min);
    // The fastest pass of each stage: the least disturbed by other work on the machine, so
    // that the differences between stages are not mostly noise.
    let m: Vec<f64> = passes
        .iter()
        .map(|runs| runs.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    let phases = Phases {
        read: m[0],
        crc: m[1] - m[0],
        replay: min - m[1],
        drop: median(drops),
    };
    ((median(opens), min), phases)
}

/// The first `records` records of the workload, as the journals hold them (untimed: the JSON
/// baseline's input).
fn records(records: usize) -> Vec<Record> {
    let mut changes = Changes::new();
    (0..records)
        .map(|_| Record::Change(Box::new(changes.next_change())))
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Median (and minimum) seconds of `reps` runs of `f`, whose result is dropped untimed.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let out = black_box(f());
        times.push(t.elapsed().as_secs_f64());
        drop(out);
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    (median(times), min)
}

/// The JSON baselines over `records` written as JSON lines to `path`: µs per record to read and
/// parse into `serde_json::Value`, and to read, parse into `Record` and replay.
fn json_baselines(path: &Path, records: &[Record], reps: usize) -> (f64, f64, f64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create JSON lines"));
    for record in records {
        serde_json::to_writer(&mut out, record).expect("write a JSON line");
        out.write_all(b"\n").expect("write a newline");
    }
    out.flush().expect("flush the JSON lines");
    drop(out);
    let bytes_per_record =
        std::fs::metadata(path).expect("JSON lines metadata").len() as f64 / records.len() as f64;
    let n = records.len() as f64;
    let (value, _) = time(reps, || {
        let bytes = std::fs::read(path).expect("read JSON lines");
        let mut parsed = 0usize;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let value: serde_json::Value = serde_json::from_slice(line).expect("a JSON value");
            black_box(&value);
            parsed += 1;
        }
        assert_eq!(parsed, records.len());
    });
    let (typed, _) = time(reps, || {
        let bytes = std::fs::read(path).expect("read JSON lines");
        let mut replay = Replay::default();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record: Record = serde_json::from_slice(line).expect("a JSON record");
            replay.apply(record).expect("replay a JSON record");
        }
        replay
    });
    let _ = std::fs::remove_file(path);
    (value * 1e6 / n, typed * 1e6 / n, bytes_per_record)
}

/// Set in a child process: the store directory to open once, printing the seconds it took.
const CHILD: &str = "JOBSTATE_BENCH_RECOVERY_OPEN";

/// The time of the first open in a fresh process (this bench, run again with `CHILD` set): the
/// heap then comes from the kernel (page faults), as when an agent starts. The median of
/// `reps` processes.
fn first_open(dir: &Path, reps: usize) -> f64 {
    let exe = std::env::current_exe().expect("the bench's executable");
    let times = (0..reps)
        .map(|_| {
            let out = std::process::Command::new(&exe)
                .env(CHILD, dir)
                .output()
                .expect("run the bench as a child");
            assert!(out.status.success(), "the child open failed: {out:?}");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .expect("the child prints seconds")
        })
        .collect();
    median(times)
}

/// Set alone: the store directory to open warm (once untimed, then 5 timed opens in this
/// process, each store dropped untimed), printing the median seconds. Run by hand, with the
/// same journal built by two builds of the crate, and alternated between them: the ratio of
/// their medians holds on a host whose speed drifts (`benches/README.md`).
const WARM: &str = "JOBSTATE_BENCH_RECOVERY_WARM";

/// Set alone, to `<records>/<changes per frame>` (as `1000000/1`): builds that journal (or
/// finds it built) and prints its directory last, for [`WARM`].
/// `scripts/recovery-against-filing-day` runs it, on this build and on the goal's own.
const JOURNAL_ONLY: &str = "JOBSTATE_BENCH_RECOVERY_JOURNAL";

/// The median seconds of `reps` opens of the store at `dir` after one untimed open.
fn warm_opens(dir: &Path, reps: usize) -> f64 {
    drop(FileStore::open(dir).expect("open the store"));
    let times = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let store = FileStore::open(dir).expect("open the store");
            let took = t.elapsed().as_secs_f64();
            drop(store);
            took
        })
        .collect();
    median(times)
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD) {
        let t = Instant::now();
        let store = FileStore::open(&dir).expect("open the store");
        println!("{}", t.elapsed().as_secs_f64());
        drop(store);
        return;
    }
    if let Some(dir) = std::env::var_os(WARM) {
        println!("{}", warm_opens(Path::new(&dir), 5));
        return;
    }
    let root = std::env::current_dir()
        .expect("the current directory")
        .join("target")
        .join("jobstate-bench")
        .join("recovery");
    let rebuild = std::env::var_os("JOBSTATE_BENCH_REBUILD").is_some_and(|v| v == "1");
    println!("journals: {} (record = one Change)", root.display());
    let probed = probe_layout(&root.join(format!("probe-{}", std::process::id())));
    LAYOUT.set(probed).expect("the layout is probed once");
    if let Ok(which) = std::env::var(JOURNAL_ONLY) {
        let parsed = which
            .split_once('/')
            .and_then(|(r, f)| Some((r.parse().ok()?, f.parse().ok()?)));
        let Some((records, per_frame)) = parsed else {
            panic!("{JOURNAL_ONLY}={which}: expected <records>/<changes per frame>, as 1000000/1")
        };
        println!("{}", journal(&root, records, per_frame, rebuild).display());
        return;
    }
    println!(
        "journal layout: a {}-byte file header, {}-byte frame headers, {}-byte frame trailers",
        probed.header, probed.frame_header, probed.trailer
    );

    struct Row {
        records: usize,
        per_frame: usize,
        journal_bytes: u64,
        open: (f64, f64),
        first: f64,
        phases: Phases,
        json: Option<(f64, f64, f64)>,
    }
    let mut rows = Vec::new();
    for records in SIZES {
        for per_frame in LAYOUTS {
            let dir = journal(&root, records, per_frame, rebuild);
            let journal_bytes = std::fs::metadata(dir.join("journal"))
                .expect("journal metadata")
                .len();
            let reps = match records {
                n if n <= 10_000 => 31,
                n if n <= 100_000 => 11,
                _ => 5,
            };
            // The timed opens (open + recover, the store dropped untimed) and the breakdown.
            let (open, phases) = measure(&dir, reps);
            let first = first_open(&dir, 5);
            // The JSON baseline for the smaller sizes, once per size (the records are the same
            // in both layouts; a million records are 560 MB of JSON).
            let json = (per_frame == LAYOUTS[0] && records <= JSON_MAX).then(|| {
                json_baselines(
                    &root.join(format!("{records}.jsonl")),
                    &self::records(records),
                    reps.min(5),
                )
            });
            let row = Row {
                records,
                per_frame,
                journal_bytes,
                open,
                first,
                phases,
                json,
            };
            let us = |s: f64| s * 1e6 / records as f64;
            println!(
                "  {records:>9} records, {per_frame:>3}/frame: open {:.3} µs/record (median of \
                 {reps}; min {:.3}); first open in a fresh process {:.3}",
                us(row.open.0),
                us(row.open.1),
                us(row.first),
            );
            rows.push(row);
        }
    }

    println!();
    println!(
        "{:>9} {:>7} {:>6} {:>8} {:>10} {:>9} {:>10} {:>8} {:>5}",
        "records",
        "layout",
        "B/rec",
        "open ms",
        "µs/record",
        "min µs/r",
        "fresh µs/r",
        "goal",
        "met"
    );
    for row in &rows {
        let us = |s: f64| s * 1e6 / row.records as f64;
        println!(
            "{:>9} {:>7} {:>6.1} {:>8.1} {:>10.3} {:>9.3} {:>10.3} {:>8} {:>5}",
            row.records,
            format!("{}/fr", row.per_frame),
            (row.journal_bytes as f64 - layout().header as f64) / row.records as f64,
            row.open.0 * 1e3,
            us(row.open.0),
            us(row.open.1),
            us(row.first),
            format!("≤ {GOAL_US}"),
            if us(row.open.0).max(us(row.first)) <= GOAL_US {
                "yes"
            } else {
                "no"
            },
        );
    }

    println!();
    println!(
        "breakdown, µs per record: read and crc as passes over the journal, each stage's cost \
         over the stage before it (fastest pass); decode+replay: the fastest open less the crc \
         pass; open: median, min:"
    );
    println!(
        "{:>9} {:>7} {:>7} {:>7} {:>14} {:>7} {:>13} {:>8}",
        "records", "layout", "read", "crc", "decode+replay", "sum", "open", "(drop)"
    );
    for row in &rows {
        let us = |s: f64| s * 1e6 / row.records as f64;
        let p = &row.phases;
        println!(
            "{:>9} {:>7} {:>7.3} {:>7.3} {:>14.3} {:>7.3} {:>13} {:>8.3}",
            row.records,
            format!("{}/fr", row.per_frame),
            us(p.read),
            us(p.crc),
            us(p.replay),
            us(p.sum()),
            format!("{:.3}, {:.3}", us(row.open.0), us(row.open.1)),
            us(p.drop),
        );
    }

    println!();
    println!("baseline: the same records as JSON lines, read and parsed line by line:");
    println!(
        "{:>9} {:>8} {:>14} {:>22} {:>20} {:>20}",
        "records",
        "B/rec",
        "→ Value µs/r",
        "→ Record+replay µs/r",
        "open 1/fr ÷ Value",
        "open 256/fr ÷ Value"
    );
    for records in SIZES {
        let of = |per_frame: usize| {
            rows.iter()
                .find(|r| r.records == records && r.per_frame == per_frame)
                .expect("a row per size and layout")
        };
        let Some((value, typed, bytes)) = of(LAYOUTS[0]).json else {
            continue;
        };
        let open_us = |row: &Row| row.open.0 * 1e6 / records as f64;
        println!(
            "{records:>9} {bytes:>8.1} {value:>14.3} {typed:>22.3} {:>20.3} {:>20.3}",
            open_us(of(LAYOUTS[0])) / value,
            open_us(of(LAYOUTS[1])) / value,
        );
    }
}
