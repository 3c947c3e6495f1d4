//! Two costs an agent pays per job step: the pure state machine, and one durable commit.
//!
//! Run with `cargo bench --bench transitions` (about 10 s: short warm-up and measurement).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jobstate::session::{NoticeDelivery, SessionFacts};
use jobstate::{
    Attempt, AttemptRef, BootId, Event, EventKind, JobId, JobSpec, JobState, Ledger, MemoryStore,
    UserPresence, transition,
};

/// One pure `transition` call: `Running` + `ProgramExited { code: 0 }` -> `Completed` (with its
/// status message). Inputs are built once, outside the timed loop.
fn pure_transition(c: &mut Criterion) {
    let spec = JobSpec::new(JobId::new("patch-kb123").expect("valid job id"));
    let boot = BootId::new("boot-1").expect("valid boot id");
    let at = "2026-11-21T02:00:00Z".parse().expect("valid time");
    let running = JobState::Running {
        attempt: Attempt {
            run: 1,
            number: 1,
            boot: boot.clone(),
            started_at: at,
            started_since_boot: std::time::Duration::from_secs(60),
        },
        launch: jobstate::Launch::Recorded(jobstate::ProgramId::new(4242, 1)),
        shutdown_notice_at: None,
        terminate: None,
        provisional: None,
    };
    let exited = Event {
        at,
        boot,
        since_boot: std::time::Duration::from_secs(120),
        kind: EventKind::ProgramExited {
            attempt: AttemptRef { run: 1, number: 1 },
            exit: jobstate::ProgramExit::Code(0),
            restart_pending: false,
        },
    };
    c.bench_function("pure_transition/running_exit0_completed", |b| {
        b.iter(|| transition(black_box(&spec), black_box(&running), black_box(&exited)))
    });
}

/// One ledger commit on the memory store: `Ledger::begin` on a ledger holding one queued job.
/// `begin` commits exactly one change (`Queued -> Running`, encoded and checked by the store).
/// Each measured op gets a fresh ledger from the untimed setup, so the store does not grow
/// across iterations and the cost measured is that of a single commit; the ledger is returned
/// so that dropping it is not timed either.
fn ledger_commit(c: &mut Criterion) {
    let id = JobId::new("os-upgrade").expect("valid job id");
    let session = service_session();
    let setup = || {
        let (mut ledger, _) =
            Ledger::open(MemoryStore::new(), session.clone()).expect("open an empty store");
        ledger
            .offer(JobSpec::new(id.clone()))
            .expect("offer a new job");
        ledger
    };
    c.bench_function("ledger_commit/begin_memory_store", |b| {
        b.iter_batched(
            setup,
            |mut ledger| {
                black_box(ledger.begin(black_box(&id)).expect("begin commits Running"));
                ledger
            },
            BatchSize::SmallInput,
        )
    });
}

/// `Ledger::job` among 10,000 jobs with sequential ids (`job-0` … `job-9999`), as a site server
/// names them: a hash that spreads such ids badly makes every lookup walk long probe chains.
fn ledger_lookup(c: &mut Criterion) {
    let session = service_session();
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session).expect("open an empty store");
    let ids: Vec<JobId> = (0..10_000)
        .map(|n| JobId::new(format!("job-{n}")).expect("valid job id"))
        .collect();
    for id in &ids {
        ledger
            .offer(JobSpec::new(id.clone()))
            .expect("offer a new job");
    }
    let mut n = 0;
    c.bench_function("ledger_job/10k_sequential_ids", |b| {
        b.iter(|| {
            n = (n + 7919) % ids.len();
            black_box(ledger.job(black_box(&ids[n])))
        })
    });
}

/// `Ledger::next_runnable` with 100,000 completed jobs (tombstones) and one queued job: the
/// ledger asks only its unfinished jobs.
fn next_runnable_among_tombstones(c: &mut Criterion) {
    let session = service_session();
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session).expect("open an empty store");
    for n in 0..100_000 {
        let id = JobId::new(format!("done-{n}")).expect("valid job id");
        ledger
            .offer(JobSpec::new(id.clone()))
            .expect("offer a new job");
        let attempt = ledger.begin(&id).expect("begin");
        // A job alone with exit 0 completes and licenses nothing: only the tombstones matter.
        let _effects = ledger
            .program_exited(&attempt, 0)
            .expect("exit 0 completes");
    }
    ledger
        .offer(JobSpec::new(JobId::new("queued").expect("valid job id")))
        .expect("offer");
    c.bench_function("next_runnable/100k_tombstones_1_queued", |b| {
        b.iter(|| black_box(ledger.next_runnable()))
    });
}

/// A service with nobody logged on, in boot 1.
fn service_session() -> SessionFacts {
    SessionFacts {
        boot: BootId::new("boot-1").expect("valid boot id"),
        user: UserPresence::NoneLoggedOn,
        context: jobstate::session::ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: "2026-11-21T02:00:00Z".parse().expect("valid time"),
        since_boot: std::time::Duration::from_secs(60),
        programs: Default::default(),
        restart_pending: jobstate::session::RestartPending::Unknown,
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = pure_transition, ledger_commit, ledger_lookup, next_runnable_among_tombstones
}
criterion_main!(benches);
