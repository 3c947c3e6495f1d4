//! A decade of jobs (issue 12, "no scale cliff"): a file store holding 100,000 finished jobs,
//! each with its whole history (offered, started, launched, exit 0: 4 changes), plus one
//! queued job. Measured, against the goals:
//!
//! - opening it (`FileStore::open` + `Ledger::open`): µs per record (goal ≤ 0.3);
//! - the memory it holds once open, per finished job (goal for a tombstone ≤ 1 KiB), counted
//!   by a counting allocator over one open apart (the timed opens run with the counting off):
//!   with the default retention every finished job is a tombstone (its final change and its
//!   spec), in the store's memory and in the ledger's;
//! - `Ledger::next_runnable` with 100,000 finished jobs (goal ≤ 1 µs);
//! - the compaction pause (goal ≤ 50 ms): the ledger call that compacted while the store was
//!   built (told by the snapshot's change), the journal's bound set so that the store compacts
//!   once, inside a ledger call near the end, when nearly all 100,000 jobs finished since the
//!   last compaction (the store made each a tombstone in the commit that finished it); and
//!   `FileStore::compact` of the store reopened, a store of tombstones (what every later
//!   compaction costs). The slowest other call is printed apart: a pause of the host, or of an
//!   index growing, is not one of compaction.
//!
//! The store is built on tmpfs (`/dev/shm`) where there is one, so that `fdatasync` costs
//! nothing and the figures are the store's CPU cost. `JOBSTATE_SCALE_JOBS` sets the number of
//! jobs (default 100,000). Run with `cargo bench --bench scale` (about a minute).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use jobstate::chrono::{TimeZone, Utc};
use jobstate::report::{Answers, StatusSink};
use jobstate::session::{ExecutionContext, NoticeDelivery, SessionFacts};
use jobstate::{
    BootId, FileStore, FileStoreOptions, JobId, JobSpec, Ledger, ProgramId, StatusMessage,
    UserPresence,
};

/// Counts the bytes allocated and not yet freed, while [`COUNTING`] is set: the opens that are
/// timed run with it off (an atomic add per allocation is no part of what an agent pays), the
/// open whose memory is measured with it on.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

struct Accept;

impl StatusSink for Accept {
    type Error = std::convert::Infallible;
    fn deliver(
        &mut self,
        _batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        answers.accept_all();
        Ok(())
    }
}

fn session() -> SessionFacts {
    SessionFacts {
        boot: BootId::new("scale-boot").expect("a boot id"),
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: Utc
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("a time"),
        since_boot: Duration::from_secs(60),
        programs: Default::default(),
        restart_pending: jobstate::session::RestartPending::Unknown,
    }
}

fn dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        PathBuf::from("target")
    };
    base.join(format!("jobstate-scale-{}", std::process::id()))
}

fn main() {
    let jobs: usize = std::env::var("JOBSTATE_SCALE_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    let build = Instant::now();
    // The journal's bound set so that the store compacts once, inside a ledger call near the
    // end of the build, with nearly every job finished since: the pause an agent pays.
    let options = FileStoreOptions {
        compact_after: 4 * jobs as u64,
        per_job: 0,
        ..FileStoreOptions::default()
    };
    let store = FileStore::open_with(&dir, options).expect("open the store");
    let (mut ledger, _) = Ledger::open(store, session()).expect("open the ledger");
    // The call during which the store compacted (told by the snapshot's change, looked at
    // outside the timed part), and the slowest of the others: a pause of the host or of a
    // table's growth, not of compaction.
    let snapshot = dir.join("snapshot");
    let written = || std::fs::metadata(&snapshot).and_then(|m| m.modified()).ok();
    let mut compacting: Option<Duration> = None;
    let mut slowest_other = Duration::ZERO;
    let mut timed = |f: &mut dyn FnMut()| {
        let before = written();
        let start = Instant::now();
        f();
        let took = start.elapsed();
        if written() != before {
            compacting = Some(compacting.map_or(took, |c| c.max(took)));
        } else {
            slowest_other = slowest_other.max(took);
        }
    };
    for i in 0..jobs {
        let id = JobId::new(format!("job-{i}")).expect("an id");
        timed(&mut || {
            ledger.offer(JobSpec::new(id.clone())).expect("offer");
        });
        let mut attempt = None;
        timed(&mut || attempt = Some(ledger.begin(&id).expect("begin")));
        let attempt = attempt.expect("an attempt");
        // Jobs alone that exit 0 license nothing: only the commits are measured.
        timed(&mut || {
            let _effects = ledger
                .launched(&attempt, ProgramId::new(1000 + i as u32, i as u64))
                .expect("launched");
        });
        timed(&mut || {
            let _effects = ledger.program_exited(&attempt, 0).expect("exit");
        });
        if i % 64 == 63 {
            timed(&mut || {
                ledger.deliver(&mut Accept).expect("deliver");
            });
        }
    }
    let compacting = compacting.expect("the store compacted once while it was built");
    ledger.deliver(&mut Accept).expect("deliver");
    ledger
        .offer(JobSpec::new(JobId::new("the-queued-one").expect("an id")))
        .expect("offer");
    let records = jobs * 4 + 1;
    let built = build.elapsed();
    // What the compaction inside a ledger call wrote.
    let in_ledger = std::fs::metadata(dir.join("snapshot")).map_or(0, |m| m.len()) as f64 / 1e6;
    // Compacted again (untimed: the allocator is busy taking back the ledger just dropped), so
    // that the opens read a snapshot alone.
    let mut store = ledger.into_store();
    store.compact().expect("compact");
    drop(store);

    // The memory an open holds: counted over one open (timed apart, for the counting's cost),
    // the store and the ledger kept until it is read. What it frees that was allocated before
    // (the decoder's caches of recent ids) is a few kilobytes at most.
    let (held, counted_open) = {
        COUNTING.store(true, Ordering::Relaxed);
        let before = live();
        let start = Instant::now();
        let store = FileStore::open(&dir).expect("reopen");
        let (ledger, _) = Ledger::open(store, session()).expect("reopen the ledger");
        let took = start.elapsed();
        let held = live() - before;
        COUNTING.store(false, Ordering::Relaxed);
        drop(ledger);
        (held, took)
    };
    // Open, three times, the allocator not counting; the median.
    let mut opens = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let store = FileStore::open(&dir).expect("reopen");
        let store_opened = start.elapsed();
        let (ledger, _) = Ledger::open(store, session()).expect("reopen the ledger");
        opens.push(start.elapsed());
        eprintln!(
            "  open: the store {:.1} ms, the ledger {:.1} ms",
            store_opened.as_secs_f64() * 1e3,
            (start.elapsed() - store_opened).as_secs_f64() * 1e3
        );
        // next_runnable: finds the one queued job among all the finished ones.
        let calls = 100_000;
        let start = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(ledger.next_runnable());
        }
        let per_call = start.elapsed() / calls;
        std::hint::black_box(&ledger);
        drop(ledger);
        eprintln!("  next_runnable: {:.0} ns a call", per_call.as_nanos());
    }
    // A later compaction: of a store of tombstones.
    let mut store = FileStore::open(&dir).expect("reopen");
    let compact = Instant::now();
    store.compact().expect("compact");
    let steady = compact.elapsed();
    let stored = FileStore::inspect(&dir).expect("inspect").snapshot.jobs;
    let tombstones = stored.iter().filter(|j| j.is_tombstone()).count();
    let snapshot_bytes = std::fs::metadata(dir.join("snapshot")).map_or(0, |m| m.len());
    drop(store);
    opens.sort();
    let open = opens[opens.len() / 2];
    let per_record = open.as_secs_f64() * 1e6 / records as f64;
    // What the store holds now: one record per tombstone (and the queued job's one change).
    let per_stored = open.as_secs_f64() * 1e6 / stored.len() as f64;
    let per_job = held as f64 / jobs as f64;
    println!("scale: {jobs} finished jobs (4 changes each) and one queued, built in {built:.1?}");
    println!(
        "  stored after compaction: {} jobs, {tombstones} of them tombstones; snapshot {:.1} MB ({:.0} bytes a job)",
        stored.len(),
        snapshot_bytes as f64 / 1e6,
        snapshot_bytes as f64 / stored.len() as f64
    );
    println!(
        "  open: {:.1} ms, {per_record:.3} µs per change committed, {per_stored:.3} µs per stored record (goal ≤ 0.3)",
        open.as_secs_f64() * 1e3
    );
    println!(
        "  (the open that counted the memory: {:.1} ms; the counting allocator's atomic add per allocation is not in the timed opens)",
        counted_open.as_secs_f64() * 1e3
    );
    println!(
        "  memory held once open: {:.1} MB, {per_job:.0} bytes per tombstone, store's and ledger's copies together (goal ≤ 1024)",
        held as f64 / 1e6
    );
    println!(
        "  compaction (goal ≤ 50 ms): the ledger call that compacted while building (a snapshot of {in_ledger:.1} MB): {:.1} ms; a later compaction of the reopened store: {:.1} ms",
        compacting.as_secs_f64() * 1e3,
        steady.as_secs_f64() * 1e3,
    );
    println!(
        "  the slowest other ledger call while building: {:.1} ms (the host, or an index growing)",
        slowest_other.as_secs_f64() * 1e3,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
