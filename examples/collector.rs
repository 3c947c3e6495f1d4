//! A status collector: the server side of the at-least-once promise.
//!
//! An agent delivers each status message *at least once*: it keeps a message in its outbox until
//! a receiver acknowledges it, so a lost answer, a timeout or a crash of either side makes it send
//! the same message again. Nothing is lost only if the receiver keeps its half of the bargain:
//!
//! 1. **Drop duplicates by key.** Every message carries its idempotency key (`StatusKey`, written
//!    with its `Display`: `job/run 1/attempt 1/Completed`). The table's primary key is that
//!    string and each message is written with
//!    `INSERT INTO status (...) VALUES (...) ON CONFLICT (key) DO NOTHING`: a second copy, however
//!    late and however many collectors receive it at once, changes nothing, and is answered
//!    `{"stored": false, "duplicate": true}` so the agent stops sending it.
//! 2. **Answer only after the commit is durable.** `200` is the acknowledgement the agent removes
//!    the message on; it is sent only once the row (or the proof that it exists already) is
//!    committed: SQLite in WAL mode with `synchronous=FULL`, PostgreSQL with
//!    `synchronous_commit` on (the collector turns it on if the server has it off). A collector
//!    that crashes before answering loses nothing: the agent sends again.
//! 3. **Never answer "stored" to what was not stored.** A database error is answered `503` with
//!    `Retry-After: 5`: the agent keeps the message and retries; a malformed request is `400`, a
//!    body over 1 MiB is `413` (an HTTP sink answers a 4xx "rejected for good", and the ledger
//!    keeps the message as a dead letter, visible, never dropped).
//!
//! The wire format (one request per message, the one the crate's HTTP sink, feature `http`,
//! speaks):
//!
//! ```text
//! POST <any path> HTTP/1.1
//! Content-Type: application/json
//! Idempotency-Key: <StatusKey as Display>
//!
//! {"idempotency_key": "<the same key>", "message": <StatusMessage as serde_json writes it>}
//! ```
//!
//! The key in the header, the key in the body and the key of the message itself must agree
//! (`400` otherwise). `GET /count?job_prefix=P` answers `{"records": n, "duplicates": d}`: the
//! rows whose job id starts with `P`, and the duplicate posts for such jobs dropped since this
//! collector started.
//!
//! Backends, behind the small `Backend` trait:
//!
//! - **SQLite** (the default): one database file, one connection behind a mutex; enough for a
//!   site.
//! - **PostgreSQL**, for a fleet: through a `psql` child process (no driver crate): each statement
//!   is written on its standard input followed by `\echo <marker>`, and its standard output read
//!   up to the marker; the insert answers `stored=1` or `stored=0`, so a missing answer is an
//!   error, never a duplicate. Several collectors may share one database: the primary key decides
//!   which copy is stored, and the table is created under an advisory lock (two
//!   `CREATE TABLE IF NOT EXISTS` at once fail in PostgreSQL).
//!
//! Run it:
//!
//! ```text
//! cargo run --example collector --features sqlite                 # a self-contained demo
//! cargo run --example collector --features sqlite -- \
//!     --listen 127.0.0.1:8080 --db sqlite:/var/lib/collector/status.db
//! cargo run --example collector --features sqlite -- \
//!     --listen 0.0.0.0:8080 --db 'postgres:host=/run/postgresql dbname=status'
//! cargo run --example collector --features sqlite -- --post http://127.0.0.1:8080
//! ```
//!
//! The demo starts the collector on `127.0.0.1:0` with a SQLite file in a private temporary
//! directory, makes status messages with a real `Ledger` (jobs completed, failed, cancelled),
//! posts each of them three times from three connections at once and once more afterwards, sends
//! a few malformed requests, and prints the table: one row per key, every other copy dropped.
//! `--post URL` runs the same checks against a collector already running, and
//! `--post URL1 --post URL2` against several sharing one database, two connections to each at
//! once (see `scripts/collector-postgres-test`). `--listen` prints the bound address first, then serves
//! until killed. This is an example: it speaks plain HTTP (put TLS and authentication in front
//! of it) and runs one thread per connection (at most 64 at once).

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobstate::session::{
    ExecutionContext, LivePrograms, NoticeDelivery, RestartPending, SessionFacts,
};
use jobstate::{
    BootId, JobId, JobSpec, Ledger, MemoryStore, NextJob, ProgramId, RetryPolicy, StatusMessage,
    UserPresence, chrono,
};
use serde::Deserialize;
use serde_json::json;

/// The largest body accepted (`413` above it).
const MAX_BODY: usize = 1 << 20;
/// The longest request line or header line (`414` / `431` above it).
const MAX_LINE: usize = 8 * 1024;
/// The most header lines in one request (`431` above it).
const MAX_HEADERS: usize = 100;
/// The most connections served at once (`503` to the next one).
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may stay silent.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one database statement may take before the collector gives up on it (`503`).
const DB_TIMEOUT: Duration = Duration::from_secs(15);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => demo(),
        Some("--listen") | Some("--db") => serve_from_args(&args),
        Some("--post") => post_from_args(&args),
        Some(_) => Err(USAGE.into()),
    };
    if let Err(e) = result {
        eprintln!("collector: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: collector                    (a self-contained demo)\n       \
     collector --listen ADDR --db sqlite:PATH|postgres:CONNINFO\n       \
     collector --post http://HOST:PORT [--post http://HOST:PORT ...] [--job-prefix PREFIX]";

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// One status message, as a row of the `status` table.
struct Row {
    key: String,
    job: String,
    run: u32,
    attempt: u32,
    state: String,
    body: String,
    received_at: String,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserted {
    /// A new row, committed.
    Stored,
    /// The key was there already: nothing changed.
    Duplicate,
}

/// Where the rows go. Each method returns only once its effect is committed durably; an error
/// means "not known to be stored", and the collector answers `503`.
trait Backend: Send {
    /// `INSERT ... ON CONFLICT (key) DO NOTHING`, committed.
    fn insert(&mut self, row: &Row) -> Result<Inserted, String>;
    /// The rows whose job id starts with `job_prefix`.
    fn count(&mut self, job_prefix: &str) -> Result<u64, String>;
    /// For the log: which database.
    fn describe(&self) -> String;
}

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS status (
    key TEXT PRIMARY KEY NOT NULL,
    job TEXT NOT NULL,
    run INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_job ON status (job);";

/// A SQLite database file: WAL, `synchronous=FULL` (a commit is on disk when `execute` returns),
/// one connection.
struct Sqlite {
    conn: rusqlite::Connection,
    path: String,
}

impl Sqlite {
    fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SQLITE_SCHEMA)?;
        Ok(Self {
            conn,
            path: path.display().to_string(),
        })
    }
}

impl Backend for Sqlite {
    fn insert(&mut self, row: &Row) -> Result<Inserted, String> {
        let changed = self
            .conn
            .execute(
                "INSERT INTO status (key, job, run, attempt, state, body, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key) DO NOTHING",
                rusqlite::params![
                    row.key,
                    row.job,
                    row.run,
                    row.attempt,
                    row.state,
                    row.body,
                    row.received_at
                ],
            )
            .map_err(|e| format!("sqlite: {e}"))?;
        Ok(if changed == 1 {
            Inserted::Stored
        } else {
            Inserted::Duplicate
        })
    }

    fn count(&mut self, job_prefix: &str) -> Result<u64, String> {
        self.conn
            .query_row(
                "SELECT count(*) FROM status WHERE substr(job, 1, length(?1)) = ?1",
                [job_prefix],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| format!("sqlite: {e}"))
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path)
    }
}

/// PostgreSQL through a `psql` child process, started on first use and again after any error.
///
/// psql runs with `-v ON_ERROR_STOP=1`, so an SQL error ends it: its output ends before the
/// marker, and the statement is reported as failed (`503`). In autocommit mode psql prints a
/// statement's result once the server has committed it.
struct Postgres {
    conninfo: String,
    psql: Option<Psql>,
    sequence: u64,
}

struct Psql {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<io::Result<String>>,
}

/// Run when psql starts. `CREATE TABLE IF NOT EXISTS` is not safe when two sessions run it at
/// once (the second fails on a catalog unique index): collectors starting together take an
/// advisory lock first.
const POSTGRES_SCHEMA: &str = "SET client_min_messages = warning;
BEGIN;
SELECT pg_advisory_xact_lock(hashtext('jobstate-collector schema'));
CREATE TABLE IF NOT EXISTS status (
    key text PRIMARY KEY,
    job text NOT NULL,
    run bigint NOT NULL,
    attempt bigint NOT NULL,
    state text NOT NULL,
    body text NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS status_job ON status (job);
COMMIT;
SELECT set_config('synchronous_commit', 'on', false)
    WHERE current_setting('synchronous_commit') = 'off';";

impl Postgres {
    fn new(conninfo: &str) -> Self {
        Self {
            conninfo: conninfo.to_owned(),
            psql: None,
            sequence: 0,
        }
    }

    /// Runs `sql` (one or more statements) and returns the lines it printed, or an error if
    /// psql ended, failed or took longer than [`DB_TIMEOUT`].
    fn run(&mut self, sql: &str) -> Result<Vec<String>, String> {
        if self.psql.is_none() {
            let psql = self.spawn()?;
            self.psql = Some(psql);
            if let Err(e) = self.exchange(POSTGRES_SCHEMA) {
                self.stop();
                return Err(e);
            }
        }
        match self.exchange(sql) {
            Ok(lines) => Ok(lines),
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    fn spawn(&self) -> Result<Psql, String> {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&self.conninfo)
            .env("PGAPPNAME", "jobstate-collector")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start psql: {e}"))?;
        let stdin = child.stdin.take().ok_or("psql has no stdin")?;
        let stdout = child.stdout.take().ok_or("psql has no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Psql {
            child,
            stdin,
            lines,
        })
    }

    fn exchange(&mut self, sql: &str) -> Result<Vec<String>, String> {
        self.sequence += 1;
        let marker = format!(
            "jobstate-collector-{}-{}",
            std::process::id(),
            self.sequence
        );
        let psql = self.psql.as_mut().ok_or("psql is not running")?;
        let script = format!("{sql}\n\\echo {marker}\n");
        psql.stdin
            .write_all(script.as_bytes())
            .and_then(|()| psql.stdin.flush())
            .map_err(|e| format!("psql: cannot write: {e}"))?;
        let deadline = Instant::now() + DB_TIMEOUT;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match psql.lines.recv_timeout(left) {
                Ok(Ok(line)) if line == marker => return Ok(lines),
                Ok(Ok(line)) => lines.push(line),
                Ok(Err(e)) => return Err(format!("psql: cannot read: {e}")),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("psql ended (see its error above)".into());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("psql: no answer within {DB_TIMEOUT:?}"));
                }
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut psql) = self.psql.take() {
            let _ = psql.child.kill();
            let _ = psql.child.wait();
        }
    }

    /// The one answer line `name=<number>` of a statement.
    fn number(lines: &[String], name: &str) -> Result<u64, String> {
        let found: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{name}=")))
            .collect();
        match found.as_slice() {
            [line] => line[name.len() + 1..]
                .trim()
                .parse()
                .map_err(|e| format!("psql: bad answer {line:?}: {e}")),
            _ => Err(format!("psql: expected one {name}= line, got {lines:?}")),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `s` as a PostgreSQL dollar-quoted literal: no escapes inside, the tag chosen so that it does
/// not occur in `s`. psql passes dollar-quoted text through untouched (no variable
/// substitution, no backslash commands).
fn pg_literal(s: &str) -> String {
    let mut n = 0u32;
    loop {
        let tag = format!("$j{n}$");
        if !s.contains(&tag) {
            return format!("{tag}{s}{tag}");
        }
        n += 1;
    }
}

impl Backend for Postgres {
    fn insert(&mut self, row: &Row) -> Result<Inserted, String> {
        if [&row.key, &row.job, &row.state, &row.body, &row.received_at]
            .iter()
            .any(|s| s.contains('\0'))
        {
            return Err("a NUL character cannot be stored in PostgreSQL text".into());
        }
        let sql = format!(
            "WITH ins AS (INSERT INTO status (key, job, run, attempt, state, body, received_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}::timestamptz) \
             ON CONFLICT (key) DO NOTHING RETURNING 1) \
             SELECT 'stored=' || count(*) FROM ins;",
            pg_literal(&row.key),
            pg_literal(&row.job),
            row.run,
            row.attempt,
            pg_literal(&row.state),
            pg_literal(&row.body),
            pg_literal(&row.received_at),
        );
        let lines = self.run(&sql)?;
        match Self::number(&lines, "stored")? {
            1 => Ok(Inserted::Stored),
            0 => Ok(Inserted::Duplicate),
            n => Err(format!("psql: {n} rows inserted for one key")),
        }
    }

    fn count(&mut self, job_prefix: &str) -> Result<u64, String> {
        if job_prefix.contains('\0') {
            return Ok(0); // no job id holds a NUL
        }
        let p = pg_literal(job_prefix);
        let sql =
            format!("SELECT 'count=' || count(*) FROM status WHERE left(job, length({p})) = {p};");
        let lines = self.run(&sql)?;
        Self::number(&lines, "count")
    }

    fn describe(&self) -> String {
        format!("postgres:{}", self.conninfo)
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server
// ---------------------------------------------------------------------------------------------

/// The collector's shared state.
struct Collector {
    backend: Mutex<Box<dyn Backend>>,
    /// Duplicate posts dropped since start, per job id.
    duplicates: Mutex<HashMap<String, u64>>,
    connections: AtomicUsize,
}

/// Locks a mutex even if a thread panicked while holding it (the data stays consistent: every
/// change under these locks is a single step).
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Collector {
    fn new(backend: Box<dyn Backend>) -> Self {
        Self {
            backend: Mutex::new(backend),
            duplicates: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
        }
    }
}

/// Accepts connections until the listener fails for good; one thread per connection.
fn serve(listener: TcpListener, collector: Arc<Collector>) {
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                eprintln!("collector: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if collector.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            collector.connections.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = write_response(&mut stream, &Response::busy(), true);
            continue;
        }
        let collector = Arc::clone(&collector);
        let spawned = std::thread::Builder::new()
            .name("collector-conn".into())
            .spawn(move || {
                connection(stream, &collector);
                collector.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("collector: cannot start a thread: {e}");
        }
    }
}

/// Serves one connection: requests one after the other until the client closes, asks to close,
/// or sends something malformed.
fn connection(stream: TcpStream, collector: &Collector) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(reader_stream) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader_stream);
    let mut writer = stream;
    loop {
        match read_request(&mut reader, &mut writer) {
            Ok(request) => {
                let response = handle(collector, &request);
                if write_response(&mut writer, &response, request.close).is_err() || request.close {
                    return;
                }
            }
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status, why)) => {
                let response = Response::error(status, why);
                if write_response(&mut writer, &response, true).is_ok() {
                    linger(&mut writer, &mut reader);
                }
                return;
            }
        }
    }
}

/// Closes after an error answer without resetting the connection: stop sending, then read and
/// drop what the client still sends for a moment, so that it reads the answer.
fn linger(writer: &mut TcpStream, reader: &mut BufReader<TcpStream>) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut reader.take(MAX_BODY as u64), &mut io::sink());
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Close the connection after answering.
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum ReadError {
    /// The client closed, went silent or the connection failed: nothing to answer.
    Closed,
    /// Answer with this status and close.
    Bad(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

fn bad(status: u16, why: impl Into<String>) -> ReadError {
    ReadError::Bad(status, why.into())
}

/// Reads one line of at most [`MAX_LINE`] bytes, without its CRLF (or LF). `Ok(None)` at a clean
/// end of stream before any byte.
fn read_line(reader: &mut BufReader<TcpStream>, status: u16) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            return Err(bad(status, "line too long"));
        }
        return Err(ReadError::Closed); // the stream ended in the middle of a line
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| bad(400, "a request line or header is not UTF-8"))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Request, ReadError> {
    // The request line (a client may send empty lines before it).
    let mut line = String::new();
    for _ in 0..4 {
        match read_line(reader, 414)? {
            None => return Err(ReadError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                line = l;
                break;
            }
        }
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(400, "malformed request line"));
    };
    if !is_token(method) || target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad(400, "malformed request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(bad(505, "only HTTP/1.0 and 1.1")),
        _ => return Err(bad(400, "malformed request line")),
    };

    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, 431)? else {
            return Err(ReadError::Closed);
        };
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad(431, "too many headers"));
        }
        if line.starts_with([' ', '\t']) {
            return Err(bad(400, "folded header lines are not accepted"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(400, "a header line has no colon"));
        };
        if !is_token(name) {
            return Err(bad(400, "malformed header name"));
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }

    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
        close: http10,
    };
    if let Some(connection) = request.header("connection").map(str::to_owned) {
        for token in connection.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") {
                request.close = true;
            } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                request.close = false;
            }
        }
    }
    if request.header("transfer-encoding").is_some() {
        return Err(bad(
            501,
            "Transfer-Encoding is not supported: send Content-Length",
        ));
    }
    let mut length: Option<usize> = None;
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(400, "malformed Content-Length"));
        }
        let n = match value.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            _ => return Err(bad(413, format!("the body is over {MAX_BODY} bytes"))),
        };
        if length.is_some_and(|l| l != n) {
            return Err(bad(400, "conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > 0 {
        if request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

struct Response {
    status: u16,
    body: serde_json::Value,
    retry_after: Option<u32>,
    allow: Option<&'static str>,
}

impl Response {
    fn ok(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            body,
            retry_after: None,
            allow: None,
        }
    }

    fn error(status: u16, why: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": why.into() }),
            retry_after: None,
            allow: None,
        }
    }

    /// `503`: not stored, send it again later.
    fn unavailable(why: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::error(503, why)
        }
    }

    fn busy() -> Self {
        Self::unavailable("too many connections")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn write_response(stream: &mut TcpStream, response: &Response, close: bool) -> io::Result<()> {
    let body = response.body.to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        body.len()
    );
    if let Some(seconds) = response.retry_after {
        head.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    if let Some(allow) = response.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    head.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    head.push_str(&body);
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

fn handle(collector: &Collector, request: &Request) -> Response {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    match request.method.as_str() {
        "POST" => post(collector, request),
        "GET" if path == "/count" => count(collector, query),
        "GET" if path == "/" || path == "/health" => {
            let backend = lock(&collector.backend).describe();
            Response::ok(json!({ "collector": "jobstate", "backend": backend }))
        }
        "GET" => Response::error(404, "GET /count?job_prefix=P or POST a status message"),
        _ => Response {
            allow: Some("GET, POST"),
            ..Response::error(405, "only GET and POST")
        },
    }
}

/// The body of a post.
#[derive(Deserialize)]
struct Post {
    idempotency_key: String,
    message: StatusMessage,
}

fn post(collector: &Collector, request: &Request) -> Response {
    let json = request
        .header("content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Response::error(415, "Content-Type must be application/json");
    }
    let Some(header_key) = request.header("idempotency-key") else {
        return Response::error(400, "no Idempotency-Key header");
    };
    let post: Post = match serde_json::from_slice(&request.body) {
        Ok(p) => p,
        Err(e) => return Response::error(400, format!("the body is not a status post: {e}")),
    };
    let message = &post.message;
    let key = message.key.to_string();
    if post.idempotency_key != key || header_key != key {
        return Response::error(
            400,
            format!(
                "the keys disagree: header {header_key:?}, idempotency_key {:?}, message {key:?}",
                post.idempotency_key
            ),
        );
    }
    let body = match serde_json::to_string(message) {
        Ok(b) => b,
        Err(e) => return Response::error(400, format!("cannot write the message: {e}")),
    };
    let row = Row {
        job: message.key.job.to_string(),
        run: message.key.run,
        attempt: message.key.attempt,
        state: message.key.state.to_string(),
        body,
        received_at: now_rfc3339(),
        key,
    };
    let inserted = lock(&collector.backend).insert(&row);
    match inserted {
        Ok(Inserted::Stored) => Response::ok(json!({ "stored": true })),
        Ok(Inserted::Duplicate) => {
            *lock(&collector.duplicates).entry(row.job).or_default() += 1;
            Response::ok(json!({ "stored": false, "duplicate": true }))
        }
        Err(e) => {
            eprintln!("collector: not stored ({}): {e}", row.key);
            Response::unavailable(format!("not stored, send it again: {e}"))
        }
    }
}

fn count(collector: &Collector, query: &str) -> Response {
    let mut prefix = String::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "job_prefix" {
            match percent_decode(value) {
                Some(p) => prefix = p,
                None => return Response::error(400, "malformed job_prefix"),
            }
        }
    }
    let records = lock(&collector.backend).count(&prefix);
    let duplicates: u64 = lock(&collector.duplicates)
        .iter()
        .filter(|(job, _)| job.starts_with(&prefix))
        .map(|(_, n)| n)
        .sum();
    match records {
        Ok(records) => Response::ok(json!({ "records": records, "duplicates": duplicates })),
        Err(e) => Response::unavailable(format!("cannot count: {e}")),
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms write it) of a query value; `None` if an
/// escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, since.subsec_nanos())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

fn open_backend(db: &str) -> Result<Box<dyn Backend>, Box<dyn Error>> {
    if let Some(path) = db.strip_prefix("sqlite:") {
        return Ok(Box::new(Sqlite::open(Path::new(path))?));
    }
    if let Some(conninfo) = db.strip_prefix("postgres:") {
        let mut postgres = Postgres::new(conninfo);
        // Connect and create the table now, so that a wrong conninfo shows at once.
        postgres.count("")?;
        return Ok(Box::new(postgres));
    }
    Err(format!("--db {db:?}: give sqlite:PATH or postgres:CONNINFO").into())
}

fn serve_from_args(args: &[String]) -> Result<(), Box<dyn Error>> {
    let (mut listen, mut db) = (None, None);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--listen" => listen = Some(value.clone()),
            "--db" => db = Some(value.clone()),
            _ => return Err(USAGE.into()),
        }
    }
    let (Some(listen), Some(db)) = (listen, db) else {
        return Err(USAGE.into());
    };
    let backend = open_backend(&db)?;
    let describe = backend.describe();
    let listener = TcpListener::bind(&listen)?;
    // First line on stdout: the bound address, for scripts (`--listen 127.0.0.1:0`).
    println!("listening on http://{}", listener.local_addr()?);
    eprintln!("collector: storing into {describe}");
    serve(listener, Arc::new(Collector::new(backend)));
    Ok(())
}

fn post_from_args(args: &[String]) -> Result<(), Box<dyn Error>> {
    let mut addrs = Vec::new();
    let mut prefix = None;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--post" => {
                let authority = value
                    .strip_prefix("http://")
                    .ok_or("--post takes http://HOST:PORT")?
                    .trim_end_matches('/');
                let addr = authority
                    .to_socket_addrs()?
                    .next()
                    .ok_or("--post: the host has no address")?;
                addrs.push(addr);
            }
            "--job-prefix" => prefix = Some(value.clone()),
            _ => return Err(USAGE.into()),
        }
    }
    if addrs.is_empty() {
        return Err(USAGE.into());
    }
    let prefix = prefix.unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        format!("check-{}-{secs}-", std::process::id())
    });
    let figures = check_collector(&addrs, &prefix)?;
    figures.print();
    figures.verdict()
}

/// The demo: a collector on SQLite in a temporary directory, driven by the checks.
fn demo() -> Result<(), Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("status.db");
    let collector = Arc::new(Collector::new(Box::new(Sqlite::open(&db)?)));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    println!(
        "collector listening on http://{addr}, storing into a SQLite file (WAL, synchronous=FULL)"
    );
    let server = Arc::clone(&collector);
    std::thread::spawn(move || serve(listener, server));

    let figures = check_collector(&[addr], "demo-")?;
    figures.print();

    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut select = reader.prepare("SELECT key, state, received_at FROM status ORDER BY key")?;
    let rows: Vec<(String, String, String)> = select
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let distinct: i64 =
        reader.query_row("SELECT count(DISTINCT key) FROM status", [], |r| r.get(0))?;
    println!(
        "\nthe status table ({} rows, {distinct} distinct keys):",
        rows.len()
    );
    for (key, state, received_at) in &rows {
        println!("  {key:<48} {state:<10} {received_at}");
    }
    if rows.len() as i64 != distinct || rows.len() != figures.messages {
        return Err("the table does not hold exactly one row per message".into());
    }
    figures.verdict()
}

// ---------------------------------------------------------------------------------------------
// The checks (a plain std::net client)
// ---------------------------------------------------------------------------------------------

/// Status messages made by a real ledger: two jobs completed, one failed (exit code 3, no
/// retry), one cancelled while queued. Job ids start with `prefix`.
fn ledger_messages(prefix: &str) -> Result<Vec<StatusMessage>, Box<dyn Error>> {
    let session = SessionFacts {
        boot: BootId::new("boot-collector-demo")?,
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::BackgroundTask,
        notices: NoticeDelivery::NotDelivered,
        now: "2026-03-02T09:00:00Z".parse()?,
        since_boot: Duration::from_secs(60),
        programs: LivePrograms::Unknown,
        restart_pending: RestartPending::Unknown,
    };
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session)?;
    let id = |name: &str| JobId::new(format!("{prefix}{name}"));
    ledger.offer(JobSpec::new(id("security-patch")?))?;
    ledger.offer(JobSpec::new(id("driver-update")?).with_retry(RetryPolicy::none()))?;
    ledger.offer(JobSpec::new(id("office suite")?).with_mandatory(false))?;
    ledger.offer(JobSpec::new(id("font-pack")?).with_mandatory(false))?;
    // Jobs that never restart the machine and have no check license nothing: these calls only
    // fill the outbox, which is what this demonstration delivers.
    let _effects = ledger.cancel(&id("font-pack")?)?;
    let mut pid = 700;
    while let NextJob::Run(job) = ledger.next_runnable() {
        let attempt = ledger.begin(&job)?;
        pid += 1;
        let _effects = ledger.launched(&attempt, ProgramId::new(pid, 1_000))?;
        ledger.session_mut().now += chrono::TimeDelta::minutes(3);
        let exit = if job == id("driver-update")? { 3 } else { 0 };
        let _effects = ledger.program_exited(&attempt, exit)?;
    }
    let messages: Vec<StatusMessage> = ledger.outbox().cloned().collect();
    if messages.len() != 4 {
        return Err(format!(
            "expected 4 status messages, the ledger made {}",
            messages.len()
        )
        .into());
    }
    Ok(messages)
}

/// What the checks saw.
struct Figures {
    /// Collectors posted to (sharing one database).
    collectors: usize,
    /// Connections posting every message at once.
    senders: usize,
    /// Distinct messages.
    messages: usize,
    /// Posts sent, all copies.
    posts: usize,
    /// Answers `{"stored": true}`.
    stored: usize,
    /// Answers `{"stored": false, "duplicate": true}`.
    duplicate_answers: usize,
    /// `503` answers (retried).
    retried: usize,
    /// `GET /count` for the prefix.
    records: u64,
    duplicates: u64,
    /// Malformed requests refused with the expected 4xx, out of those sent.
    refused: (usize, usize),
    elapsed: Duration,
}

impl Figures {
    fn print(&self) {
        let collectors = match self.collectors {
            1 => String::new(),
            n => format!(" to {n} collectors sharing one database"),
        };
        println!(
            "posted {} messages {} times in all{collectors} ({} connections at once, then one copy \
             again): {} stored, {} answered duplicate, {} retried after 503",
            self.messages,
            self.posts,
            self.senders,
            self.stored,
            self.duplicate_answers,
            self.retried
        );
        println!(
            "GET /count: records {} (distinct keys {}), duplicates dropped {} (expected {})",
            self.records,
            self.messages,
            self.duplicates,
            self.posts - self.messages
        );
        println!(
            "malformed requests refused: {} of {}; elapsed {:.0?}",
            self.refused.0, self.refused.1, self.elapsed
        );
    }

    /// `Ok` if the collector kept the promise: one row per key, every other copy dropped and
    /// answered as a duplicate, every malformed request refused.
    fn verdict(&self) -> Result<(), Box<dyn Error>> {
        let extra = self.posts - self.messages;
        let kept = self.stored == self.messages
            && self.duplicate_answers == extra
            && self.records == self.messages as u64
            && self.duplicates == extra as u64
            && self.refused.0 == self.refused.1;
        if kept {
            println!("collector: the promise holds: one row per key, duplicates dropped");
            Ok(())
        } else {
            Err("the collector broke the promise (see the figures above)".into())
        }
    }
}

/// One HTTP/1.1 connection (keep-alive).
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Self> {
        let writer = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        writer.set_read_timeout(Some(Duration::from_secs(60)))?;
        writer.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// Sends raw bytes and reads one response: its status and body.
    fn raw(&mut self, request: &[u8]) -> io::Result<(u16, String)> {
        self.writer.write_all(request)?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = 0;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(invalid("the answer ended in its head"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("Content-Length"))?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn post(&mut self, key: &str, body: &str) -> io::Result<(u16, String)> {
        let request = format!(
            "POST /status HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n\
             Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.raw(request.as_bytes())
    }

    fn get(&mut self, target: &str) -> io::Result<(u16, String)> {
        self.raw(format!("GET {target} HTTP/1.1\r\nHost: collector\r\n\r\n").as_bytes())
    }
}

/// What one post was answered.
enum Answer {
    Stored,
    Duplicate,
}

/// Posts one message as an agent's sink does: again after a pause while the answer is `503`.
fn post_until_answered(
    client: &mut Client,
    message: &StatusMessage,
    retried: &mut usize,
) -> Result<Answer, String> {
    let key = message.key.to_string();
    let body = json!({ "idempotency_key": key, "message": message }).to_string();
    for _ in 0..50 {
        let (status, answer) = client.post(&key, &body).map_err(|e| format!("post: {e}"))?;
        match status {
            200 => {
                let answer: serde_json::Value =
                    serde_json::from_str(&answer).map_err(|e| format!("answer: {e}"))?;
                return match (&answer["stored"], &answer["duplicate"]) {
                    (serde_json::Value::Bool(true), _) => Ok(Answer::Stored),
                    (serde_json::Value::Bool(false), serde_json::Value::Bool(true)) => {
                        Ok(Answer::Duplicate)
                    }
                    _ => Err(format!("unexpected answer {answer}")),
                };
            }
            503 => {
                *retried += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => return Err(format!("post {key}: {status} {answer}")),
        }
    }
    Err(format!("post {key}: still 503 after 50 tries"))
}

/// Posts the ledger's messages to the collectors at `addrs` (several collectors sharing one
/// database, as in a fleet; often just one): three connections or two per collector at once,
/// each posting every message, then one copy again; sends malformed requests; reads the counts
/// (records from each collector, which must agree; duplicates summed over the collectors).
fn check_collector(addrs: &[SocketAddr], prefix: &str) -> Result<Figures, Box<dyn Error>> {
    let started = Instant::now();
    let messages = Arc::new(ledger_messages(prefix)?);
    let senders: Vec<_> = (0..(2 * addrs.len()).max(3))
        .map(|i| {
            let messages = Arc::clone(&messages);
            let addr = addrs[i % addrs.len()];
            std::thread::spawn(move || -> Result<(Vec<Answer>, usize), String> {
                let mut client = Client::connect(addr).map_err(|e| format!("connect: {e}"))?;
                let mut retried = 0;
                let answers = messages
                    .iter()
                    .map(|m| post_until_answered(&mut client, m, &mut retried))
                    .collect::<Result<_, _>>()?;
                Ok((answers, retried))
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut retried = 0;
    for sender in senders {
        let (a, r) = sender.join().map_err(|_| "a sender panicked")??;
        answers.extend(a);
        retried += r;
    }
    let last = addrs[addrs.len() - 1];
    answers.push(post_until_answered(
        &mut Client::connect(last)?,
        &messages[0],
        &mut retried,
    )?);

    let refused = check_refusals(addrs[0], &messages[0])?;

    let mut records = Vec::new();
    let mut duplicates = 0;
    for addr in addrs {
        let target = format!("/count?job_prefix={}", percent_encode(prefix));
        let (status, body) = Client::connect(*addr)?.get(&target)?;
        if status != 200 {
            return Err(format!("GET /count from {addr}: {status} {body}").into());
        }
        let counts: serde_json::Value = serde_json::from_str(&body)?;
        let number = |name: &str| {
            counts[name]
                .as_u64()
                .ok_or_else(|| format!("GET /count from {addr}: no {name} in {body}"))
        };
        records.push(number("records")?);
        duplicates += number("duplicates")?;
    }
    if records.iter().any(|&r| r != records[0]) {
        return Err(format!("the collectors count different records: {records:?}").into());
    }
    Ok(Figures {
        collectors: addrs.len(),
        senders: (2 * addrs.len()).max(3),
        messages: messages.len(),
        posts: answers.len(),
        stored: answers
            .iter()
            .filter(|a| matches!(a, Answer::Stored))
            .count(),
        duplicate_answers: answers
            .iter()
            .filter(|a| matches!(a, Answer::Duplicate))
            .count(),
        retried,
        records: records[0],
        duplicates,
        refused,
        elapsed: started.elapsed(),
    })
}

/// Sends requests the collector must refuse, each on a fresh connection; returns how many were
/// refused with the expected status, out of how many sent. None of them may store anything.
fn check_refusals(
    addr: SocketAddr,
    message: &StatusMessage,
) -> Result<(usize, usize), Box<dyn Error>> {
    let key = message.key.to_string();
    let good = json!({ "idempotency_key": key, "message": message }).to_string();
    let wrong_key = json!({ "idempotency_key": "another key", "message": message }).to_string();
    let post = |headers: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: c\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let json_key = format!("Content-Type: application/json\r\nIdempotency-Key: {key}\r\n");
    let cases: Vec<(u16, String)> = vec![
        (400, "NONSENSE\r\n\r\n".into()),
        (400, "GET / HTTP/1.1\r\nno colon here\r\n\r\n".into()),
        (400, post(&json_key, "{not json")),
        (400, post(&json_key, &wrong_key)),
        (
            400,
            post(
                "Content-Type: application/json\r\nIdempotency-Key: another key\r\n",
                &good,
            ),
        ),
        (400, post("Content-Type: application/json\r\n", &good)),
        (415, post(&format!("Idempotency-Key: {key}\r\n"), &good)),
        (
            413,
            format!("POST / HTTP/1.1\r\nHost: c\r\n{json_key}Content-Length: 2000000\r\n\r\n"),
        ),
        (
            400,
            format!("POST / HTTP/1.1\r\nHost: c\r\n{json_key}Content-Length: -1\r\n\r\n"),
        ),
        (505, "GET / HTTP/2.0\r\n\r\n".into()),
        (
            404,
            "GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
        ),
    ];
    let mut refused = 0;
    for (expected, request) in &cases {
        let mut client = Client::connect(addr)?;
        match client.raw(request.as_bytes()) {
            Ok((status, _)) if status == *expected => refused += 1,
            Ok((status, body)) => {
                eprintln!(
                    "collector check: {request:?} answered {status} {body}, expected {expected}"
                )
            }
            Err(e) => eprintln!("collector check: {request:?}: {e}"),
        }
    }
    Ok((refused, cases.len()))
}
