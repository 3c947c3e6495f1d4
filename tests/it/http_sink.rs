//! The HTTP sink (feature `http`) against a real loopback server written here on `std::net`,
//! with faults injected per request: a connection dropped after the server stored the message, a
//! response slower than the sink's timeout, 500s, 429 with `Retry-After`, garbage, the server
//! down for a while, 4xx. Real ledgers drive it; every key must reach the server (none lost),
//! duplicates only from the faults that cause them.
//!
//! With `JOBSTATE_COLLECTOR_URL` set, the server also forwards each message it stores to that
//! collector (counting it stored only on a 2xx) and the tests check the collector's count.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use jobstate::report::{DeadLetterReason, HttpSink, HttpSinkError, HttpSinkOptions};
use jobstate::{Ledger, MemoryStore, StatusMessage};

use crate::common::*;

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    /// Names lower-cased, values as sent (UTF-8, lossily).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with one request.
#[derive(Debug, Clone)]
enum Fault {
    /// Store it, answer 200.
    None,
    /// Store it, then close the connection without answering.
    DropAfterStore,
    /// Store it, then answer 200 after this wait.
    SlowAfterStore(Duration),
    /// Answer this status, with these headers, without storing.
    Status(u16, Vec<(&'static str, String)>, &'static str),
    /// Answer something that is not HTTP, without storing, and close.
    Garbage,
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::DropAfterStore => "drop",
            Fault::SlowAfterStore(_) => "slow",
            Fault::Status(429, ..) => "429",
            Fault::Status(503, ..) => "503",
            Fault::Status(500..=599, ..) => "5xx",
            Fault::Status(400..=499, ..) => "4xx",
            Fault::Status(..) => "other status",
            Fault::Garbage => "garbage",
        }
    }
}

/// Picks the fault for a request from its index (0-based, over the server's life), its key and
/// how many times that key was seen before.
type Rule = Box<dyn Fn(usize, &str, usize) -> Fault + Send>;

/// A collector the server forwards stored messages to (`JOBSTATE_COLLECTOR_URL`).
struct Collector {
    url: String,
    agent: ureq::Agent,
}

impl Collector {
    fn from_env() -> Option<Self> {
        let url = std::env::var("JOBSTATE_COLLECTOR_URL").ok()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Some(Self { url, agent })
    }

    /// Forwards `request` as it came; whether the collector answered 2xx.
    fn forward(&self, request: &Request) -> bool {
        let mut post = self.agent.post(&self.url);
        for name in ["content-type", "idempotency-key"] {
            if let Some(value) = request.header(name) {
                let value = ureq::http::HeaderValue::from_bytes(value.as_bytes()).unwrap();
                post = post.header(name, value);
            }
        }
        match post.send(&request.body[..]) {
            Ok(response) => response.status().is_success(),
            Err(e) => {
                report_figures(&format!(
                    "http_sink: forwarding to the collector failed: {e}"
                ));
                false
            }
        }
    }

    /// The collector's `(records, duplicates)` for jobs named with `prefix`.
    fn count(&self, prefix: &str) -> (u64, u64) {
        let url = format!(
            "{}/count?job_prefix={prefix}",
            self.url.trim_end_matches('/')
        );
        let mut response = self.agent.get(&url).call().expect("collector count");
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        let body = response.body_mut().read_to_vec().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            json["records"].as_u64().expect("records"),
            json["duplicates"].as_u64().unwrap_or(0),
        )
    }
}

/// What the server knows, shared by its threads.
struct Shared {
    rule: Mutex<Rule>,
    /// Key → times stored.
    stored: Mutex<HashMap<String, usize>>,
    /// Key → requests seen.
    seen: Mutex<HashMap<String, usize>>,
    requests: AtomicUsize,
    /// The keys stored by a request the sink never heard the answer to (dropped, too slow).
    unheard: Mutex<Vec<String>>,
    /// Connections accepted.
    accepted: AtomicUsize,
    /// The first requests, whole, for the format checks.
    kept: Mutex<Vec<Request>>,
    /// The faults applied (not `None`): (key, kind).
    faults: Mutex<Vec<(String, &'static str)>>,
    /// Open connections, to cut when the server goes down.
    connections: Mutex<Vec<TcpStream>>,
    collector: Option<Collector>,
}

const KEEP: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Stores `request` under `key` (forwarding it to the collector first, if there is one);
    /// whether it is stored.
    fn store(&self, key: &str, request: &Request) -> bool {
        if let Some(collector) = &self.collector
            && !collector.forward(request)
        {
            return false;
        }
        *lock(&self.stored).entry(key.to_string()).or_default() += 1;
        true
    }
}

/// A loopback status server: a thread accepting connections, a thread per connection (HTTP/1.1
/// keep-alive).
struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Server {
    fn start(rule: impl Fn(usize, &str, usize) -> Fault + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut server = Server {
            addr: listener.local_addr().unwrap(),
            shared: Arc::new(Shared {
                rule: Mutex::new(Box::new(rule)),
                stored: Mutex::default(),
                seen: Mutex::default(),
                requests: AtomicUsize::new(0),
                accepted: AtomicUsize::new(0),
                unheard: Mutex::default(),
                kept: Mutex::default(),
                faults: Mutex::default(),
                connections: Mutex::default(),
                collector: Collector::from_env(),
            }),
            accepting: None,
        };
        server.accept_on(listener);
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accept_on(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let stopped = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        shared.accepted.fetch_add(1, Ordering::SeqCst);
                        stream.set_nonblocking(false).unwrap();
                        stream.set_nodelay(true).unwrap();
                        if let Ok(clone) = stream.try_clone() {
                            lock(&shared.connections).push(clone);
                        }
                        let shared = Arc::clone(&shared);
                        thread::spawn(move || serve(stream, &shared));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            // The listener is dropped here: the port is closed.
        });
        self.accepting = Some((stop, handle));
    }

    /// Closes the port and cuts every open connection.
    fn down(&mut self) {
        if let Some((stop, handle)) = self.accepting.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().unwrap();
        }
        for connection in lock(&self.shared.connections).drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// Listens again, on the same port.
    fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("the same port again");
        self.accept_on(listener);
    }

    fn stored(&self) -> HashMap<String, usize> {
        lock(&self.shared.stored).clone()
    }

    fn faults(&self) -> Vec<(String, &'static str)> {
        lock(&self.shared.faults).clone()
    }

    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.down();
    }
}

/// Reads one request; `None` at the end of the connection or on a malformed request.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &str) -> bool {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).is_ok()
}

/// Serves one connection until it ends (or a fault ends it).
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while let Some(request) = read_request(&mut reader) {
        let index = shared.requests.fetch_add(1, Ordering::SeqCst);
        let key = request.header("idempotency-key").unwrap_or("").to_string();
        let seen = {
            let mut seen = lock(&shared.seen);
            let count = seen.entry(key.clone()).or_default();
            *count += 1;
            *count - 1
        };
        {
            let mut kept = lock(&shared.kept);
            if kept.len() < KEEP {
                kept.push(request.clone());
            }
        }
        let fault = (lock(&shared.rule))(index, &key, seen);
        if !matches!(fault, Fault::None) {
            lock(&shared.faults).push((key.clone(), fault.kind()));
        }
        let go_on = match fault {
            Fault::None => {
                if shared.store(&key, &request) {
                    respond(&mut stream, 200, &[], "stored")
                } else {
                    respond(&mut stream, 502, &[], "the collector did not store it")
                }
            }
            Fault::DropAfterStore => {
                if shared.store(&key, &request) {
                    lock(&shared.unheard).push(key.clone());
                }
                false
            }
            Fault::SlowAfterStore(wait) => {
                if shared.store(&key, &request) {
                    lock(&shared.unheard).push(key.clone());
                }
                thread::sleep(wait);
                let _ = respond(&mut stream, 200, &[], "stored, slowly");
                false
            }
            Fault::Status(status, headers, body) => respond(&mut stream, status, &headers, body),
            Fault::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n");
                false
            }
        };
        if !go_on {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A ledger with one status message (a cancel) for each of `names`.
fn ledger_with(names: &[String]) -> MemLedger {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("boot-a")).unwrap();
    for name in names {
        ledger.offer(msi_job(job(name))).unwrap();
        let _effects = ledger.cancel(&job(name)).unwrap();
    }
    ledger
}

/// What one call of `deliver` did, as the drain loop saw it.
#[derive(Debug)]
struct Round {
    failure: Option<HttpSinkError>,
    /// How far the ledger's clock was moved after it (to the next due time).
    wait: Option<Duration>,
    /// The kinds of the faults the server applied during it.
    faults: Vec<&'static str>,
    delivered: usize,
}

/// Calls `deliver` until the outbox is empty, moving the session's clock to each next due time;
/// `before(round, server)` runs before each call.
fn drain(
    ledger: &mut MemLedger,
    sink: &mut HttpSink,
    server: &mut Server,
    mut before: impl FnMut(usize, &mut Server),
) -> Vec<Round> {
    let mut rounds = Vec::new();
    for round in 0..1_000 {
        before(round, server);
        let faults_before = server.faults().len();
        let delivery = ledger.deliver(&mut *sink).unwrap();
        let faults = server.faults()[faults_before..]
            .iter()
            .map(|(_, kind)| *kind)
            .collect();
        let now = ledger.session().now;
        let wait = delivery
            .retry_at
            .map(|at| (at - now).to_std().unwrap_or_default());
        if let Some(at) = delivery.retry_at {
            ledger.session_mut().now = at;
        }
        rounds.push(Round {
            failure: delivery.failure,
            wait,
            faults,
            delivered: delivery.delivered,
        });
        if ledger.outbox().next().is_none() {
            return rounds;
        }
    }
    panic!("the outbox never drained: {rounds:#?}");
}

fn names(prefix: &str, n: usize, name: impl Fn(usize) -> String) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{}", name(i))).collect()
}

/// Checks the collector (if there is one) holds `expected` distinct records for `prefix`.
fn check_collector(server: &Server, prefix: &str, expected: usize) {
    if let Some(collector) = &server.shared.collector {
        let (records, duplicates) = collector.count(prefix);
        report_figures(&format!(
            "http_sink collector {prefix}: {records} records, {duplicates} duplicates dropped"
        ));
        assert_eq!(
            records, expected as u64,
            "the collector's records for {prefix}"
        );
    }
}

#[test]
fn each_message_is_one_post_with_the_key_in_a_header_and_the_body() {
    let prefix = format!("http-format-{}-", std::process::id());
    let mut names = names(&prefix, 5, |i| format!("job-{i}"));
    names.push(format!("{prefix}café")); // a job id outside ASCII: UTF-8 bytes in the header
    let mut ledger = ledger_with(&names);
    let messages: Vec<StatusMessage> = ledger.outbox().cloned().collect();
    let mut server = Server::start(|_, _, _| Fault::None);
    let options = HttpSinkOptions::default()
        .with_user_agent("agent-test/1")
        .with_header("X-Site", "lab-7")
        .with_header("Authorization", "Bearer t0ken");
    let mut sink = HttpSink::new_with(&server.url("/agent/status?site=7"), options).unwrap();
    let rounds = drain(&mut ledger, &mut sink, &mut server, |_, _| {});
    assert_eq!(rounds.len(), 1);
    assert_eq!(rounds[0].delivered, names.len());

    let kept = lock(&server.shared.kept).clone();
    assert_eq!(kept.len(), messages.len(), "one request per message");
    for (request, message) in kept.iter().zip(&messages) {
        let key = message.key.to_string();
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/agent/status?site=7");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(request.header("user-agent"), Some("agent-test/1"));
        assert_eq!(request.header("x-site"), Some("lab-7"));
        assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let expected = serde_json::json!({
            "idempotency_key": key,
            "message": serde_json::to_value(message).unwrap(),
        });
        assert_eq!(body, expected);
        // The message in the body reads back as the message sent.
        let back: StatusMessage = serde_json::from_value(body["message"].clone()).unwrap();
        assert_eq!(&back, message);
    }
    check_collector(&server, &prefix, names.len());
}

#[test]
fn a_bad_url_or_header_is_a_typed_error_at_construction() {
    for url in [
        "",
        "status.example",
        "/status",
        "ftp://site.example/",
        "http://",
        "http://a b/",
    ] {
        match HttpSink::new(url) {
            Err(e @ HttpSinkError::InvalidUrl { .. }) => {
                assert!(e.to_string().contains("give an absolute http://"), "{e}")
            }
            other => panic!("{url:?}: {other:?}"),
        }
    }
    let bad_name = HttpSinkOptions::default().with_header("X Site", "lab");
    assert!(matches!(
        HttpSink::new_with("http://127.0.0.1:9/", bad_name),
        Err(HttpSinkError::InvalidHeader { .. })
    ));
    let bad_value = HttpSinkOptions::default().with_header("X-Site", "lab\r\nX-Evil: 1");
    assert!(matches!(
        HttpSink::new_with("http://127.0.0.1:9/", bad_value),
        Err(HttpSinkError::InvalidHeader { .. })
    ));
    let bad_agent = HttpSinkOptions::default().with_user_agent("agent\n");
    assert!(matches!(
        HttpSink::new_with("http://127.0.0.1:9/", bad_agent),
        Err(HttpSinkError::InvalidHeader { .. })
    ));
}

/// The request indices of the one-off faults of the fault test.
const DROPS: [usize; 2] = [20, 140];
const SLOW: usize = 60;
const TOO_MANY: usize = 90;
const GARBAGE: usize = 170;
const UNAVAILABLE: usize = 210;

#[test]
fn every_message_reaches_the_server_through_faults_duplicates_only_from_them() {
    const N: usize = 400;
    let timeout = Duration::from_secs(1);
    let prefix = format!("http-faults-{}-", std::process::id());
    // Every 50th job is refused for good (422); every 40th is redirected on its first request;
    // every 25th fails with a 500 on its first two.
    let names = names(&prefix, N, |i| match i {
        _ if i % 50 == 7 => format!("{i:04}-reject"),
        _ if i % 40 == 3 => format!("{i:04}-moved"),
        _ if i % 25 == 11 => format!("{i:04}-flaky"),
        _ => format!("{i:04}"),
    });
    let rejected: HashSet<String> = names
        .iter()
        .filter(|n| n.ends_with("-reject"))
        .cloned()
        .collect();
    let mut ledger = ledger_with(&names);
    let keys: HashMap<String, String> = ledger
        .outbox()
        .map(|m| (m.key.to_string(), m.key.job.to_string()))
        .collect();
    assert_eq!(keys.len(), N);

    // The one-off faults, each on the first request from its index on that is not refused.
    let slow = timeout * 3;
    let one_offs = Mutex::new(vec![
        (DROPS[0], Fault::DropAfterStore),
        (SLOW, Fault::SlowAfterStore(slow)),
        (
            TOO_MANY,
            Fault::Status(429, vec![("Retry-After", "2".into())], "slow down"),
        ),
        (DROPS[1], Fault::DropAfterStore),
        (GARBAGE, Fault::Garbage),
        // An HTTP date, read against the response's `Date`: 5 s.
        (
            UNAVAILABLE,
            Fault::Status(
                503,
                vec![
                    ("Date", "Sun, 06 Nov 1994 08:49:37 GMT".into()),
                    ("Retry-After", "Sun, 06 Nov 1994 08:49:42 GMT".into()),
                ],
                "maintenance",
            ),
        ),
    ]);
    let mut server = Server::start(move |index, key, seen| {
        if key.contains("-reject/") {
            return Fault::Status(422, Vec::new(), "unknown deployment");
        }
        {
            let mut one_offs = lock(&one_offs);
            if one_offs.first().is_some_and(|(at, _)| index >= *at) {
                return one_offs.remove(0).1;
            }
        }
        if index % 37 == 36 {
            return Fault::Status(500, Vec::new(), "database busy");
        }
        if key.contains("-moved/") && seen == 0 {
            let to = "http://elsewhere.example/status".to_string();
            return Fault::Status(302, vec![("Location", to)], "");
        }
        if key.contains("-flaky/") && seen < 2 {
            return Fault::Status(500, Vec::new(), "flaky");
        }
        Fault::None
    });
    let options = HttpSinkOptions::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_request_timeout(timeout);
    let mut sink = HttpSink::new_with(&server.url("/status"), options).unwrap();

    // The server is down from the 4th round to the 6th (port closed, then open again).
    let started = Instant::now();
    let rounds = drain(
        &mut ledger,
        &mut sink,
        &mut server,
        |round, server| match round {
            3 => server.down(),
            6 => server.up(),
            _ => {}
        },
    );
    let elapsed = started.elapsed();

    // Each fault had its effect on the sink.
    let failure_of = |kind: &str| -> Vec<&Round> {
        rounds.iter().filter(|r| r.faults.contains(&kind)).collect()
    };
    for round in failure_of("drop") {
        assert!(
            matches!(round.failure, Some(HttpSinkError::ConnectionLost { .. })),
            "{round:?}"
        );
    }
    for round in failure_of("slow") {
        assert!(
            matches!(round.failure, Some(HttpSinkError::Timeout { .. })),
            "{round:?}"
        );
    }
    for round in failure_of("garbage") {
        assert!(
            matches!(round.failure, Some(HttpSinkError::NotHttp { .. })),
            "{round:?}"
        );
    }
    for round in failure_of("429") {
        assert!(round.failure.is_none(), "{round:?}");
        assert_eq!(
            round.wait,
            Some(Duration::from_secs(2)),
            "Retry-After: 2 honoured"
        );
    }
    for round in failure_of("503") {
        assert!(round.failure.is_none(), "{round:?}");
        assert_eq!(
            round.wait,
            Some(Duration::from_secs(5)),
            "an HTTP-date Retry-After"
        );
    }
    for kind in [
        "drop",
        "slow",
        "garbage",
        "429",
        "503",
        "5xx",
        "4xx",
        "other status",
    ] {
        assert!(!failure_of(kind).is_empty(), "no {kind} fault was injected");
    }
    let down = &rounds[3..6];
    assert!(
        down.iter().all(|r| matches!(
            r.failure,
            Some(HttpSinkError::Unreachable { .. } | HttpSinkError::ConnectionLost { .. })
        )),
        "{down:#?}"
    );
    assert!(
        down.iter()
            .any(|r| matches!(r.failure, Some(HttpSinkError::Unreachable { .. }))),
        "{down:#?}"
    );
    let unreachable = rounds
        .iter()
        .find_map(|r| match &r.failure {
            Some(e @ HttpSinkError::Unreachable { .. }) => Some(e.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(
        unreachable.contains("check that the server runs"),
        "{unreachable}"
    );

    // Every key reached the server but the rejected ones, which are dead letters.
    let stored = server.stored();
    let lost: Vec<&String> = keys
        .iter()
        .filter(|(key, job)| !rejected.contains(*job) && !stored.contains_key(*key))
        .map(|(key, _)| key)
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    let letters: HashMap<String, String> = ledger
        .dead_letters()
        .map(|l| (l.message.key.job.to_string(), l.note.reason.to_string()))
        .collect();
    assert_eq!(
        letters.keys().cloned().collect::<HashSet<_>>(),
        rejected,
        "the 4xx, and only them, are dead letters"
    );
    for letter in ledger.dead_letters() {
        assert!(
            matches!(&letter.note.reason, DeadLetterReason::Rejected { reason }
                if reason == "HTTP 422 Unprocessable Entity: unknown deployment"),
            "{letter:?}"
        );
    }
    assert!(stored.keys().all(|k| !k.contains("-reject/")));

    // Duplicates only from the faults that cause them (the server stored, the sink never
    // heard): one each.
    let causes: Vec<String> = lock(&server.shared.unheard).clone();
    assert_eq!(causes.len(), 3, "2 drops and 1 slow answer, each stored");
    let duplicated: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    let duplicates: usize = duplicated.iter().map(|(_, n)| *n - 1).sum();
    assert_eq!(duplicates, causes.len(), "{duplicated:?} vs {causes:?}");
    assert!(
        duplicated
            .iter()
            .all(|(key, n)| **n == 2 && causes.contains(key))
    );
    assert_eq!(ledger.outbox().count(), 0);

    let failures = rounds.iter().filter(|r| r.failure.is_some()).count();
    report_figures(&format!(
        "http_sink faults: {N} messages, {} requests in {} rounds ({failures} sink errors) in \
         {:.1} s: {} stored, {duplicates} duplicates (from {} drops and slow answers), {} \
         dead letters (4xx), 0 lost",
        server.requests(),
        rounds.len(),
        elapsed.as_secs_f64(),
        stored.len(),
        causes.len(),
        letters.len(),
    ));
    check_collector(&server, &prefix, stored.len());
}

#[test]
fn a_clean_run_on_loopback_loses_nothing_and_duplicates_nothing() {
    const N: usize = 2_000;
    let prefix = format!("http-clean-{}-", std::process::id());
    let names = names(&prefix, N, |i| format!("{i:05}"));
    let mut ledger = ledger_with(&names);
    let mut server = Server::start(|_, _, _| Fault::None);
    let mut sink = HttpSink::new(&server.url("/status")).unwrap();
    let started = Instant::now();
    let rounds = drain(&mut ledger, &mut sink, &mut server, |_, _| {});
    let elapsed = started.elapsed();
    assert_eq!(rounds.len(), 1, "{:?}", rounds[0]);
    let stored = server.stored();
    assert_eq!(stored.len(), N);
    let duplicates: usize = stored.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0);
    report_figures(&format!(
        "http_sink clean run: {N} messages in {:.2} s: {:.0} messages/s through the HTTP sink on \
         loopback over {} connection(s){}, {duplicates} duplicates, 0 lost",
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64(),
        server.shared.accepted.load(Ordering::SeqCst),
        if server.shared.collector.is_some() {
            " (each forwarded to the collector)"
        } else {
            ""
        },
    ));
    check_collector(&server, &prefix, N);
}
