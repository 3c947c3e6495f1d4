//! Feature `tracing`: the spans and events `jobstate::observe` documents, with their names and
//! field values, caught by a small collecting subscriber written here (no `tracing-subscriber`).
//!
//! The subscriber is installed once, as the global default (`Router`), and hands each event to
//! the collector of the thread that emitted it. Not `tracing::subscriber::with_default`: with
//! scoped subscribers, `tracing-core` (0.1.36) caches a callsite's interest as the subscriber
//! of whichever thread hit it first, when only one scoped subscriber is registered: another
//! test's thread (no subscriber) that commits first makes the `transition` callsite "never" for
//! everyone. (Seen under `cargo test --all-features`: a test lost its transitions.) An agent
//! sets a global subscriber and does not meet this.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jobstate::{FileStore, Ledger, MemoryStore, ProgramId};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};

use crate::common::{Reply, answering, job, msi_job, service_session};

/// Field names and values.
type Values = BTreeMap<String, String>;

/// One event as the subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    level: Level,
    fields: BTreeMap<String, String>,
    /// The innermost span entered when it was emitted, and that span's fields.
    span: Option<(String, Values)>,
}

impl Seen {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{} has no field {name}: {self:?}", self.name))
    }
}

/// Records every field as a string: `str`s as they are, numbers in decimal, the rest (values
/// given with `%`, the message) through their `Debug`, which for `%` is their `Display`.
struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.to_string());
    }
}

#[derive(Default)]
struct Collector {
    /// Events of this name only, if set (spans all).
    only: Option<&'static str>,
    next_id: AtomicU64,
    spans: Mutex<HashMap<u64, (String, Values)>>,
    /// The entered spans (the ledger runs on the test's thread only).
    stack: Mutex<Vec<u64>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Subscriber for Collector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "jobstate"
            && !(metadata.is_event() && self.only.is_some_and(|only| metadata.name() != only))
    }
    fn new_span(&self, attributes: &span::Attributes<'_>) -> span::Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        assert_eq!(
            *attributes.metadata().level(),
            Level::DEBUG,
            "spans are DEBUG"
        );
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        self.spans
            .lock()
            .unwrap()
            .insert(id, (attributes.metadata().name().to_string(), fields));
        span::Id::from_u64(id)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = self
            .stack
            .lock()
            .unwrap()
            .last()
            .and_then(|id| self.spans.lock().unwrap().get(id).cloned());
        self.seen.lock().unwrap().push(Seen {
            name: event.metadata().name().to_string(),
            level: *event.metadata().level(),
            fields,
            span,
        });
    }
    fn enter(&self, id: &span::Id) {
        self.stack.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, id: &span::Id) {
        let popped = self.stack.lock().unwrap().pop();
        assert_eq!(popped, Some(id.into_u64()), "spans exit in order");
    }
}

/// Runs `story` with a collecting subscriber as this thread's default, and returns what it saw.
fn collect(story: impl FnOnce()) -> Vec<Seen> {
    collect_only(None, story)
}

/// [`collect`], with only the events named `only` enabled.
fn collect_only(only: Option<&'static str>, story: impl FnOnce()) -> Vec<Seen> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| tracing::subscriber::set_global_default(Router).unwrap());
    let collector = Arc::new(Collector {
        only,
        ..Collector::default()
    });
    CURRENT.with(|current| *current.borrow_mut() = Some(Arc::clone(&collector)));
    story();
    CURRENT.with(|current| *current.borrow_mut() = None);
    collector.seen.lock().unwrap().clone()
}

thread_local! {
    /// The collector of this thread's story, if one runs.
    static CURRENT: RefCell<Option<Arc<Collector>>> = const { RefCell::new(None) };
}

/// The global subscriber: asks, and hands everything to, the current thread's collector.
struct Router;

impl Router {
    fn with<R>(&self, f: impl FnOnce(&Collector) -> R) -> Option<R> {
        CURRENT.with(|current| current.borrow().as_deref().map(f))
    }
}

impl Subscriber for Router {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Asked again at every hit: whether a collector runs depends on the thread.
        if metadata.target() == "jobstate" {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.with(|c| c.enabled(metadata)).unwrap_or(false)
    }
    fn new_span(&self, attributes: &span::Attributes<'_>) -> span::Id {
        self.with(|c| c.new_span(attributes))
            .unwrap_or_else(|| span::Id::from_u64(u64::MAX))
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        self.with(|c| c.event(event));
    }
    fn enter(&self, id: &span::Id) {
        self.with(|c| c.enter(id));
    }
    fn exit(&self, id: &span::Id) {
        self.with(|c| c.exit(id));
    }
}

/// `(name, [(field, value)])`, the fields in the order given.
fn brief(seen: &Seen, fields: &[&str]) -> (String, Vec<String>) {
    (
        seen.name.clone(),
        fields
            .iter()
            .map(|f| format!("{f}={}", seen.field(f)))
            .collect(),
    )
}

fn expect(name: &str, fields: &[&str]) -> (String, Vec<String>) {
    (
        name.to_string(),
        fields.iter().map(|f| f.to_string()).collect(),
    )
}

#[test]
fn a_story_emits_the_documented_events_with_their_fields_in_order() {
    let patch = job("patch");
    let seen = collect(|| {
        let (mut ledger, _effects) =
            Ledger::open(MemoryStore::new(), service_session("boot-a")).unwrap();
        ledger.offer(msi_job(patch.clone())).unwrap();
        let attempt = ledger.begin(&patch).unwrap();
        let effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
        assert!(effects.is_empty());
        let effects = ledger.program_exited(&attempt, 0).unwrap();
        assert!(effects.is_empty());
        let delivery = ledger.deliver(&mut answering(Reply::Accept)).unwrap();
        assert_eq!((delivery.delivered, delivery.pending), (1, 0));
    });

    let transition = [
        "job", "seq", "from", "to", "event", "run", "attempt", "revision",
    ];
    let got: Vec<_> = seen
        .iter()
        .map(|s| match s.name.as_str() {
            "reconciled" => brief(s, &["boot", "jobs", "changed", "effects"]),
            "transition" => brief(s, &transition),
            "effect" => brief(s, &["effect", "job", "run", "attempt", "restart"]),
            "delivery" => brief(
                s,
                &["call", "delivered", "retrying", "dead_lettered", "pending"],
            ),
            _ => brief(s, &[]),
        })
        .collect();
    let want = vec![
        expect(
            "reconciled",
            &["boot=boot-a", "jobs=0", "changed=0", "effects=0"],
        ),
        expect(
            "transition",
            &[
                "job=patch",
                "seq=1",
                "from=none",
                "to=Queued",
                "event=Offered",
                "run=1",
                "attempt=1",
                "revision=1",
            ],
        ),
        expect(
            "transition",
            &[
                "job=patch",
                "seq=2",
                "from=Queued",
                "to=Running",
                "event=AttemptStarted",
                "run=1",
                "attempt=1",
                "revision=2",
            ],
        ),
        expect(
            "effect",
            &[
                "effect=Launch",
                "job=patch",
                "run=1",
                "attempt=1",
                "restart=",
            ],
        ),
        expect(
            "transition",
            &[
                "job=patch",
                "seq=3",
                "from=Running",
                "to=Running",
                "event=Launched",
                "run=1",
                "attempt=1",
                "revision=3",
            ],
        ),
        expect(
            "transition",
            &[
                "job=patch",
                "seq=4",
                "from=Running",
                "to=Completed",
                "event=ProgramExited",
                "run=1",
                "attempt=1",
                "revision=5", // two records: the change and its status message
            ],
        ),
        expect(
            "delivery",
            &[
                "call=answer",
                "delivered=1",
                "retrying=0",
                "dead_lettered=0",
                "pending=0",
            ],
        ),
        expect(
            "delivery",
            &[
                "call=deliver",
                "delivered=1",
                "retrying=0",
                "dead_lettered=0",
                "pending=0",
            ],
        ),
    ];
    assert_eq!(got, want, "every event: {seen:#?}");

    // Levels: transitions, effects and the reconciliation at INFO, delivery counts at DEBUG.
    for s in &seen {
        let level = match s.name.as_str() {
            "delivery" => Level::DEBUG,
            _ => Level::INFO,
        };
        assert_eq!(s.level, level, "{s:?}");
    }

    // Each event inside the span of the call that emitted it, with the job named.
    let spans: Vec<(&str, Option<&str>)> = seen
        .iter()
        .map(|s| {
            let (name, fields) = s.span.as_ref().expect("inside a span");
            (name.as_str(), fields.get("job").map(String::as_str))
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("open", None),
            ("offer", Some("patch")),
            ("begin", Some("patch")),
            ("begin", Some("patch")),
            ("launched", Some("patch")),
            ("program_exited", Some("patch")),
            ("answer", None),
            ("deliver", None),
        ]
    );
    let exited = seen[5].span.as_ref().unwrap();
    assert_eq!(
        (exited.1["run"].as_str(), exited.1["attempt"].as_str()),
        ("1", "1")
    );
}

#[test]
fn a_dead_letter_is_a_warning_with_its_key_and_reason() {
    let seen = collect(|| {
        let (mut ledger, _effects) =
            Ledger::open(MemoryStore::new(), service_session("boot-a")).unwrap();
        crate::common::with_messages(&mut ledger, &["patch"]);
        let delivery = ledger
            .deliver(&mut answering(Reply::Reject("409 aborted")))
            .unwrap();
        assert_eq!(delivery.dead_lettered, 1);
    });
    let dead: Vec<&Seen> = seen.iter().filter(|s| s.name == "dead_letter").collect();
    assert_eq!(dead.len(), 1, "{seen:#?}");
    assert_eq!(dead[0].level, Level::WARN);
    assert_eq!(
        dead[0].field("key"),
        "patch/run 1/attempt 0/Failed",
        "the key's Display"
    );
    assert_eq!(
        dead[0].field("reason"),
        "the receiver rejected it: 409 aborted"
    );
    assert_eq!(dead[0].field("attempts"), "1");
    let cancel = seen
        .iter()
        .find(|s| s.name == "transition" && s.field("event") == "CancelRequested")
        .expect("the cancel's transition");
    assert_eq!(
        (cancel.field("from"), cancel.field("to")),
        ("Queued", "Failed")
    );
}

#[test]
fn an_open_after_a_torn_last_commit_warns_with_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path()).unwrap();
        let (mut ledger, _effects) = Ledger::open(store, service_session("boot-a")).unwrap();
        ledger.offer(msi_job(job("first"))).unwrap();
        ledger.offer(msi_job(job("second"))).unwrap();
    }
    // The last commit torn: its frame cut short by 3 bytes, as by a crash while it was written.
    let journal = dir.path().join("journal");
    let len = std::fs::metadata(&journal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let store = FileStore::open(dir.path()).unwrap();
    let report = jobstate::store::Store::open_report(&store);
    assert_eq!(report.cut.len(), 1, "{report}");
    let seen = collect(|| {
        let (ledger, effects) = Ledger::open(store, service_session("boot-b")).unwrap();
        assert!(effects.is_empty());
        assert_eq!(
            ledger.jobs().count(),
            1,
            "the torn offer was never acknowledged"
        );
    });
    let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["recovery_cut", "reconciled"], "{seen:#?}");
    let cut = &seen[0];
    assert_eq!(cut.level, Level::WARN);
    assert_eq!(cut.field("file"), journal.display().to_string());
    assert_eq!(cut.field("offset"), report.cut[0].offset.to_string());
    assert_eq!(cut.field("bytes"), report.cut[0].bytes.to_string());
    assert_eq!(cut.field("damage"), report.cut[0].damage);
    assert_eq!(cut.span.as_ref().map(|s| s.0.as_str()), Some("open"));
    let reconciled = &seen[1];
    assert_eq!(
        (
            reconciled.field("boot"),
            reconciled.field("jobs"),
            reconciled.field("effects")
        ),
        ("boot-b", "1", "0")
    );
}

#[test]
fn a_subscriber_that_enables_only_transition_events_gets_them_all() {
    let patch = job("patch");
    let seen = collect_only(Some("transition"), || {
        let (mut ledger, _effects) =
            Ledger::open(MemoryStore::new(), service_session("boot-a")).unwrap();
        ledger.offer(msi_job(patch.clone())).unwrap();
        let _effects = ledger.cancel(&patch).unwrap();
    });
    let got: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|s| (s.name.as_str(), s.field("from"), s.field("to")))
        .collect();
    assert_eq!(
        got,
        [
            ("transition", "none", "Queued"),
            ("transition", "Queued", "Failed")
        ]
    );
}
