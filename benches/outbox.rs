//! Outbox throughput: status messages committed (with their transitions) and delivered per
//! second.
//!
//! - `commit`: one `cancel` per message: a transition and its status message in one commit.
//! - `deliver/null`: the delivery step alone (batches of 64, acknowledgements committed) to a
//!   sink that accepts at once: the ledger's and the store's share of delivery.
//! - `deliver/json_lines`: the same into `JsonLinesSink`, which appends and `fdatasync`s each
//!   batch on the disk under the system's temporary directory.
//! - `deliver/per_message`: a sink that answers each message on its own (one in ten "retry",
//!   the others "accept"): the cost of per-message answers and back-offs.
//! - `deliver/http_loopback` (feature `http`): `HttpSink`, one POST per message over a kept-alive
//!   connection, to a minimal server on loopback that answers 200 at once.
//!
//! All on the memory store, whose commits are not durable: the figures are the ledger's cost, to
//! be read beside the durable stores' benchmarks.

use std::convert::Infallible;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jobstate::report::{Answers, JsonLinesSink, StatusSink};
use jobstate::session::{ExecutionContext, NoticeDelivery, SessionFacts};
use jobstate::{BootId, JobId, JobSpec, Ledger, MemoryStore, StatusMessage, UserPresence};

const MESSAGES: usize = 256;

type MemLedger = Ledger<MemoryStore, SessionFacts>;

fn session() -> SessionFacts {
    SessionFacts {
        boot: BootId::new("bench-boot").expect("valid boot id"),
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: "2026-11-21T02:00:00Z".parse().expect("valid time"),
        since_boot: Duration::from_secs(60),
        programs: Default::default(),
        restart_pending: jobstate::session::RestartPending::Unknown,
    }
}

/// A ledger with `MESSAGES` queued jobs (and an empty outbox).
fn queued() -> (MemLedger, Vec<JobId>) {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session()).expect("open");
    let ids: Vec<JobId> = (0..MESSAGES)
        .map(|i| JobId::new(format!("job-{i}")).expect("valid job id"))
        .collect();
    for id in &ids {
        ledger.offer(JobSpec::new(id.clone())).expect("offer");
    }
    (ledger, ids)
}

/// A ledger with `MESSAGES` pending status messages.
fn pending() -> MemLedger {
    let (mut ledger, ids) = queued();
    for id in &ids {
        // A queued job's cancel licenses nothing: it only commits a status message.
        let _effects = ledger.cancel(id).expect("cancel");
    }
    ledger
}

struct Null;

impl StatusSink for Null {
    type Error = Infallible;
    fn deliver(
        &mut self,
        _batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        answers.accept_all();
        Ok(())
    }
}

/// Answers each message on its own: every tenth "retry", the others "accept".
struct PerMessage;

impl StatusSink for PerMessage {
    type Error = Infallible;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        for message in batch {
            if message.key.job.as_str().ends_with('9') {
                answers.retry(&message.key, "HTTP 500 busy");
            } else {
                answers.accept(&message.key);
            }
        }
        Ok(())
    }
}

/// A minimal HTTP server on loopback: reads each request (headers and `Content-Length` body)
/// and answers `200` at once, keeping connections alive.
#[cfg(feature = "http")]
fn loopback_server() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(read_half) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(read_half);
                let mut stream = stream;
                let mut line = String::new();
                loop {
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err()
                        || stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn outbox(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));

    group.bench_function("commit", |b| {
        b.iter_batched(
            queued,
            |(mut ledger, ids)| {
                for id in &ids {
                    // A queued job's cancel licenses nothing: it only commits a message.
                    let _effects = ledger.cancel(id).expect("cancel");
                }
                ledger
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("deliver/null", |b| {
        b.iter_batched(
            pending,
            |mut ledger| {
                let delivery = ledger.deliver(&mut Null).expect("deliver");
                assert_eq!(delivery.delivered, MESSAGES);
                ledger
            },
            BatchSize::LargeInput,
        )
    });

    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let mut sink = JsonLinesSink::open(dir.join("status.jsonl")).expect("sink");
    group.bench_function("deliver/json_lines", |b| {
        b.iter_batched(
            pending,
            |mut ledger| {
                let delivery = ledger.deliver(&mut sink).expect("deliver");
                assert_eq!(delivery.delivered, MESSAGES);
                ledger
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("deliver/per_message", |b| {
        b.iter_batched(
            pending,
            |mut ledger| {
                let delivery = ledger.deliver(&mut PerMessage).expect("deliver");
                assert_eq!(delivery.delivered + delivery.retrying, MESSAGES);
                ledger
            },
            BatchSize::LargeInput,
        )
    });

    #[cfg(feature = "http")]
    {
        let addr = loopback_server();
        let mut sink =
            jobstate::report::HttpSink::new(&format!("http://{addr}/status")).expect("a valid URL");
        group.bench_function("deliver/http_loopback", |b| {
            b.iter_batched(
                pending,
                |mut ledger| {
                    let delivery = ledger.deliver(&mut sink).expect("deliver");
                    assert_eq!(delivery.delivered, MESSAGES, "{:?}", delivery.failure);
                    ledger
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
    drop(tmp);
}

criterion_group!(benches, outbox);
criterion_main!(benches);
