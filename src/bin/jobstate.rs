//! `jobstate`: looks at a store, read-only, while an agent may hold it.
//!
//! ```text
//! jobstate STORE                 jobs by state, the outbox, the dead letters, what recovery found
//! jobstate STORE --job ID        one job's timeline across boots
//! jobstate ... --json            the same as one JSON document
//! ```
//!
//! `STORE` is a file store's directory, or (feature `sqlite`) a SQLite store's database file.
//! Nothing is locked, created, cut or removed (see `FileStore::inspect`, `SqliteStore::inspect`).
//! Exit status: 0, 1 when the store cannot be read (the message says why), 2 on bad arguments.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jobstate::store::{Inspection, JobRecord, StoreError};
use jobstate::{FileStore, JobId, StateKind};
use serde_json::{Value, json};

const USAGE: &str = "usage: jobstate STORE [--job ID] [--json]
  STORE   a file store's directory, or a SQLite store's database file (feature sqlite)
  --job   print one job's timeline across boots
  --json  print JSON";

struct Args {
    store: PathBuf,
    job: Option<JobId>,
    json: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut store, mut job, mut json) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--job" => {
                let id = args.next().ok_or("--job needs a job id")?;
                job = Some(JobId::new(id).map_err(|e| e.to_string())?);
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            path if store.is_none() => store = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra}")),
        }
    }
    Ok(Args {
        store: store.ok_or("no STORE given")?,
        job,
        json,
    })
}

/// Which kind of store is at `path`, and a read-only look at it.
fn inspect(path: &Path) -> Result<(&'static str, Inspection), StoreError> {
    if path.is_dir() {
        return Ok(("file store", FileStore::inspect(path)?));
    }
    #[cfg(feature = "sqlite")]
    {
        Ok(("SQLite store", jobstate::store::SqliteStore::inspect(path)?))
    }
    #[cfg(not(feature = "sqlite"))]
    Err(StoreError::Io {
        context: format!("inspecting {}", path.display()),
        source: std::io::Error::other(
            "not a directory (a file store); a SQLite store needs jobstate built with the sqlite feature",
        ),
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(why) => {
            if why.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("jobstate: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (kind, inspection) = match inspect(&args.store) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("jobstate: {}: {error}", args.store.display());
            return ExitCode::from(1);
        }
    };
    let snapshot = &inspection.snapshot;
    let job = match &args.job {
        Some(id) => match snapshot.jobs.iter().find(|j| j.id() == id) {
            Some(job) => Some(job),
            None => {
                eprintln!("jobstate: no job {id} in {}", args.store.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let mut out = String::new();
    if args.json {
        let document = match job {
            Some(job) => job_json(job, true),
            None => store_json(&args.store, kind, &inspection),
        };
        let _ = writeln!(out, "{document:#}");
    } else {
        match job {
            Some(job) => print_timeline(&mut out, job),
            None => print_store(&mut out, &args.store, kind, &inspection),
        }
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    ExitCode::SUCCESS
}

fn job_json(job: &JobRecord, history: bool) -> Value {
    let mut value = json!({
        "id": job.id().as_str(),
        "state": job.state().kind().to_string(),
        "mandatory": job.spec().is_mandatory(),
        "detail": job.state(),
    });
    if history {
        value["spec"] = json!(job.spec());
        // Changes before it were compacted away by the store's retention (1: none were).
        value["first_seq"] = json!(job.first_seq());
        value["history"] = json!(job.history());
    }
    value
}

fn store_json(path: &Path, kind: &str, inspection: &Inspection) -> Value {
    let snapshot = &inspection.snapshot;
    json!({
        "store": path.display().to_string(),
        "kind": kind,
        "revision": snapshot.revision.0,
        "recovery": {
            "clean": inspection.report.is_clean(),
            "report": inspection.report.to_string(),
        },
        "jobs": snapshot.jobs.iter().map(|j| job_json(j, false)).collect::<Vec<_>>(),
        "outbox": snapshot.outbox,
        "dead_letters": snapshot.dead_letters.iter().map(|l| json!({
            "message": l.message,
            "note": l.note,
            "why": l.note.reason.to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn print_store(out: &mut String, path: &Path, kind: &str, inspection: &Inspection) {
    let snapshot = &inspection.snapshot;
    let _ = writeln!(
        out,
        "{} ({kind}, revision {})",
        path.display(),
        snapshot.revision
    );
    let _ = writeln!(out, "recovery: {}", inspection.report);
    for state in [
        StateKind::Running,
        StateKind::AwaitingReboot,
        StateKind::Queued,
        StateKind::Failed,
        StateKind::Completed,
    ] {
        let jobs: Vec<&JobRecord> = snapshot
            .jobs
            .iter()
            .filter(|j| j.state().kind() == state)
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{state}: {}", jobs.len());
        for job in jobs {
            let mandatory = if job.spec().is_mandatory() {
                "mandatory"
            } else {
                "optional"
            };
            let last = job.history().last();
            let since = last.map(|e| e.event.at.to_rfc3339()).unwrap_or_default();
            let boot = last.map(|e| e.event.boot.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<24} {mandatory:<9} since {since} (boot {boot})",
                job.id().as_str()
            );
        }
    }
    let _ = writeln!(out, "outbox: {} pending", snapshot.outbox.len());
    for message in &snapshot.outbox {
        let _ = writeln!(out, "  {}  ({})", message.key, message.at.to_rfc3339());
    }
    let _ = writeln!(out, "dead letters: {}", snapshot.dead_letters.len());
    for letter in &snapshot.dead_letters {
        let _ = writeln!(
            out,
            "  {}  {} (given up on {}, after {} failures)",
            letter.message.key,
            letter.note.reason,
            letter.note.at.to_rfc3339(),
            letter.note.attempts
        );
    }
}

fn print_timeline(out: &mut String, job: &JobRecord) {
    let _ = writeln!(
        out,
        "{} ({}, now {})",
        job.id(),
        if job.spec().is_mandatory() {
            "mandatory"
        } else {
            "optional"
        },
        job.state().kind()
    );
    if job.first_seq() > 1 {
        let _ = writeln!(
            out,
            "  (changes 1 to {} compacted away by the store's retention{})",
            job.first_seq() - 1,
            if job.is_tombstone() {
                ": a tombstone"
            } else {
                ""
            }
        );
    }
    let mut boot = None;
    for entry in job.history() {
        if boot != Some(&entry.event.boot) {
            boot = Some(&entry.event.boot);
            let _ = writeln!(out, "boot {}", entry.event.boot);
        }
        let _ = writeln!(
            out,
            "  {:>4}  {}  {:<18} -> {}",
            entry.seq,
            entry.event.at.to_rfc3339(),
            entry.event.kind.name().to_string(),
            entry.state.kind()
        );
    }
}
