//! `JobSpec` as a configuration format: the README's example, the defaults, the refusals, and
//! exit statuses (codes and signals) through the ledger; how an exit status and an exit-code
//! table are written.

use std::time::Duration;

use jobstate::{
    ExitCodePolicy, ExitOutcome, FailureReason, JobSpec, JobState, ProgramExit, RebootBehaviour,
    RetryPolicy, RunCondition, StateKind, codec,
};

use crate::common::*;

/// The first ```json block of the README's "Job specs as configuration" section.
fn readme_example() -> String {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Job specs as configuration")
        .nth(1)
        .expect("the README has the section");
    let block = section.split("```json").nth(1).expect("a json block");
    block
        .split("```")
        .next()
        .expect("a closed block")
        .to_owned()
}

#[test]
fn the_readme_example_parses_to_the_spec_it_describes() {
    let spec: JobSpec = serde_json::from_str(&readme_example()).unwrap();
    let built = JobSpec::new(job("os-upgrade-24h2"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_exit_codes(
            ExitCodePolicy::new(ExitOutcome::Failure)
                .with_code(0, ExitOutcome::Success)
                .with_code(194, ExitOutcome::SuccessRestartRequired),
        )
        .with_max_run_time(Duration::from_secs(4 * 3600))
        .with_verify_after_reboot(true)
        .with_restart_policy(Some(jobstate::RestartPolicy::Window(
            jobstate::MaintenanceWindow::new(2, 0, Duration::from_secs(2 * 3600)).unwrap(),
        )));
    assert_eq!(spec, built);
}

#[test]
fn only_the_id_is_required_and_the_defaults_are_the_builders() {
    let spec: JobSpec = serde_json::from_str(r#"{"id":"kb2"}"#).unwrap();
    assert_eq!(spec, JobSpec::new(job("kb2")));
    assert!(spec.is_mandatory());
    assert_eq!(spec.run_condition(), RunCondition::Always);
    assert_eq!(spec.reboot(), RebootBehaviour::Never);
    assert_eq!(spec.max_run_time(), Duration::from_secs(7200));
    // On Unix the default table is Unix's: 3010 & 0xff = 194 and apt's 100 are failures.
    if cfg!(unix) {
        assert_eq!(spec.exit_codes(), &ExitCodePolicy::unix());
        for code in [194, 105, 82, 100, 1, 255] {
            assert_eq!(spec.exit_codes().outcome(code), ExitOutcome::Failure);
        }
        assert_eq!(spec.exit_codes().outcome(0), ExitOutcome::Success);
    }
}

#[test]
fn every_spec_is_written_with_every_field_and_read_back_equal() {
    let specs = [
        JobSpec::new(job("a")),
        JobSpec::new(job("b"))
            .with_mandatory(false)
            .with_run_condition(RunCondition::OnlyWithoutUser)
            .with_reboot(RebootBehaviour::MayRequest)
            .with_exit_codes(ExitCodePolicy::windows_installer())
            .with_retry(RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_millis(1500),
                multiplier: 3,
                max_backoff: Duration::from_secs(86_400 + 1),
            })
            .with_max_run_time(Duration::new(3, 7))
            .with_max_reboots(9)
            .with_failure_grace(Duration::ZERO)
            .with_restart_deadline(Duration::from_secs(90))
            .with_terminate_grace(Duration::from_secs(1)),
    ];
    for spec in specs {
        let text = serde_json::to_string(&spec).unwrap();
        for field in [
            "\"id\"",
            "\"mandatory\"",
            "\"run_condition\"",
            "\"reboot\"",
            "\"exit_codes\"",
            "\"retry\"",
            "\"max_run_time\"",
            "\"verify_after_reboot\"",
            "\"max_reboots\"",
            "\"failure_grace\"",
            "\"restart_deadline\"",
            "\"terminate_grace\"",
            "\"otherwise\"",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        assert!(!text.contains("secs"), "durations are text: {text}");
        let back: JobSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec, "{text}");
    }
}

#[test]
fn unknown_fields_wrong_names_and_bad_values_are_refused_with_a_clear_error() {
    let refused = |text: &str, says: &str| {
        let error = serde_json::from_str::<JobSpec>(text)
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{text}: {error}");
    };
    refused(r#"{"mandatory": true}"#, "missing field `id`");
    refused(
        r#"{"id":"a","mandatroy":false}"#,
        "unknown field `mandatroy`",
    );
    refused(
        r#"{"id":"a","reboot":"RestartsMachine"}"#,
        "unknown variant `RestartsMachine`",
    );
    refused(r#"{"id":"a","max_run_time":7200}"#, "expected a string");
    refused(r#"{"id":"a","max_run_time":"2 hours"}"#, "\"90s\"");
    refused(
        r#"{"id":"a","max_run_time":"90"}"#,
        "a number without a unit",
    );
    refused(
        r#"{"id":"a","retry":{"attempts":2}}"#,
        "unknown field `attempts`",
    );
    refused(
        r#"{"id":"a","exit_codes":"msi"}"#,
        "unknown exit-code table \"msi\"",
    );
    refused(
        r#"{"id":"a","exit_codes":{"zero":"success"}}"#,
        "is not an exit code",
    );
    refused(
        r#"{"id":"a","exit_codes":{"0":"succes"}}"#,
        "unknown variant `succes`",
    );
    refused(
        r#"{"id":"a","exit_codes":{"0":"success","0":"failure"}}"#,
        "given twice",
    );
    refused(
        r#"{"id":"a","exit_codes":12}"#,
        "\"unix\", \"windows_installer\", or a map",
    );
    refused(r#"{"id":""}"#, "empty");
}

#[test]
fn floors_apply_to_a_spec_read_from_text_as_to_one_built_in_code() {
    let spec: JobSpec = serde_json::from_str(
        r#"{"id":"a","retry":{"max_attempts":0},"max_reboots":0,"restart_deadline":"0s"}"#,
    )
    .unwrap();
    assert_eq!(spec.retry().max_attempts, 1);
    assert_eq!(spec.max_reboots(), 1);
    assert_eq!(spec.restart_deadline(), Duration::from_secs(1));
}

#[test]
fn a_spec_survives_the_binary_journal_encoding() {
    let spec: JobSpec = serde_json::from_str(&readme_example()).unwrap();
    let record = jobstate::store::Record::Change(Box::new(jobstate::store::Change {
        job: spec.id().clone(),
        seq: 1,
        spec: Some(spec.clone().into()),
        event: jobstate::Event {
            at: t0(),
            boot: boot("b1"),
            since_boot: Duration::ZERO,
            kind: jobstate::EventKind::Offered,
        },
        state: JobState::initial(),
    }));
    let bytes = codec::encode(&record).unwrap();
    let jobstate::store::Record::Change(change) = codec::decode(&bytes).unwrap() else {
        panic!("a change decodes as a change");
    };
    assert_eq!(change.spec.as_deref(), Some(&spec));
}

#[test]
fn a_signal_fails_the_attempt_with_its_own_reason_and_the_retry_policy_applies() {
    let spec = JobSpec::new(job("tool")).with_retry(RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    });
    let (mut ledger, _) =
        jobstate::Ledger::open(jobstate::MemoryStore::new(), service_session("b1")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger
        .program_exited(&attempt, ProgramExit::Signal(9))
        .unwrap();
    let JobState::Queued { last_failure, .. } = ledger.job(spec.id()).unwrap().state() else {
        panic!("a signal leaves the run to its retry policy");
    };
    assert_eq!(last_failure, &Some(FailureReason::Signal(9)));
    // The second attempt is killed too: the run fails, and says how.
    ledger.session_mut().now = t0() + chrono::TimeDelta::hours(2);
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger
        .program_exited(&attempt, ProgramExit::Signal(15))
        .unwrap();
    let JobState::Failed { reason, .. } = ledger.job(spec.id()).unwrap().state() else {
        panic!("no attempts left");
    };
    assert_eq!(reason, &FailureReason::Signal(15));
    let reports = take_reports(&mut ledger);
    let failed = reports
        .iter()
        .find(|m| m.key.state == StateKind::Failed)
        .unwrap();
    assert_eq!(failed.exit, Some(ProgramExit::Signal(15)));
    // A signal is never looked up in the table, even one that calls every code a success.
    let lenient =
        JobSpec::new(job("lenient")).with_exit_codes(ExitCodePolicy::new(ExitOutcome::Success));
    ledger.offer(lenient.clone()).unwrap();
    let attempt = ledger.begin(lenient.id()).unwrap();
    let _effects = ledger
        .program_exited(&attempt, ProgramExit::Signal(6))
        .unwrap();
    assert_ne!(
        ledger.job(lenient.id()).unwrap().state().kind(),
        StateKind::Completed
    );
}

#[cfg(unix)]
#[test]
fn a_real_childs_exit_status_maps_without_loss() {
    use std::process::Command;
    // A spawning test (`file_store::SPAWNING`): no store of another test reopens meanwhile.
    let _serial = crate::file_store::spawning();
    let status =
        |script: &str| ProgramExit::from(Command::new("sh").args(["-c", script]).status().unwrap());
    assert_eq!(status("exit 0"), ProgramExit::Code(0));
    assert_eq!(status("exit 194"), ProgramExit::Code(194));
    assert_eq!(status("kill -TERM $$"), ProgramExit::Signal(15));
    assert_eq!(status("kill -KILL $$"), ProgramExit::Signal(9));
}

/// How an exit status reads in messages and the inspection tool (cargo-mutants: `Display`
/// made to print nothing went unnoticed).
#[test]
fn an_exit_status_reads_as_its_code_or_signal() {
    assert_eq!(ProgramExit::Code(1603).to_string(), "exit code 1603");
    assert_eq!(ProgramExit::Code(-1).to_string(), "exit code -1");
    assert_eq!(ProgramExit::Signal(9).to_string(), "signal 9");
}

/// The text form of an exit-code table announces its length (each listed code and
/// `otherwise`) to a serializer, which may write it before the entries, as formats of
/// definite-length maps do (cargo-mutants: the count made `len × 1` went unnoticed, since JSON
/// ignores it).
#[test]
fn an_exit_code_table_announces_the_length_of_its_text_form() {
    for (policy, codes) in [
        (ExitCodePolicy::new(ExitOutcome::Failure), 0),
        (ExitCodePolicy::unix(), 1),
        (
            ExitCodePolicy::new(ExitOutcome::Failure)
                .with_code(0, ExitOutcome::Success)
                .with_code(194, ExitOutcome::SuccessRestartRequired)
                .with_code(3010, ExitOutcome::SuccessRestartRequired),
            3,
        ),
    ] {
        let mut counted = map_counter::Counter::default();
        serde::Serialize::serialize(&policy, &mut counted).unwrap();
        assert_eq!(counted.announced, Some(codes + 1), "{policy:?}");
        assert_eq!(counted.entries, codes + 1, "{policy:?}");
    }
}

/// A human-readable serializer of one map of strings to unit variants (an exit-code table's
/// text form) that records the length it was announced and the entries it was given.
mod map_counter {
    use serde::ser::{self, Impossible, Serialize, SerializeMap};

    #[derive(Debug)]
    pub struct Refused;

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not a map of strings to unit variants")
        }
    }

    impl std::error::Error for Refused {}

    impl ser::Error for Refused {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Refused
        }
    }

    /// The map's announced length and its entries; its keys (strings) and values (unit
    /// variants) go through the same serializer.
    #[derive(Debug, Default)]
    pub struct Counter {
        pub announced: Option<usize>,
        pub entries: usize,
    }

    macro_rules! refuse {
        ($($name:ident($($t:ty),*);)*) => {
            $(fn $name(self, $(_: $t),*) -> Result<(), Refused> { Err(Refused) })*
        };
    }

    impl ser::Serializer for &mut Counter {
        type Ok = ();
        type Error = Refused;
        type SerializeSeq = Impossible<(), Refused>;
        type SerializeTuple = Impossible<(), Refused>;
        type SerializeTupleStruct = Impossible<(), Refused>;
        type SerializeTupleVariant = Impossible<(), Refused>;
        type SerializeMap = Self;
        type SerializeStruct = Impossible<(), Refused>;
        type SerializeStructVariant = Impossible<(), Refused>;

        fn serialize_map(self, len: Option<usize>) -> Result<Self, Refused> {
            self.announced = len;
            Ok(self)
        }
        fn serialize_str(self, _: &str) -> Result<(), Refused> {
            Ok(())
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<(), Refused> {
            Ok(())
        }
        refuse! {
            serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
            serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
            serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
            serialize_bytes(&[u8]); serialize_none(); serialize_unit();
            serialize_unit_struct(&'static str);
        }
        fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Refused> {
            Err(Refused)
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<(), Refused> {
            Err(Refused)
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Refused> {
            Err(Refused)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Refused> {
            Err(Refused)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Refused> {
            Err(Refused)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Refused> {
            Err(Refused)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Refused> {
            Err(Refused)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Refused> {
            Err(Refused)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Refused> {
            Err(Refused)
        }
    }

    impl SerializeMap for &mut Counter {
        type Ok = ();
        type Error = Refused;
        fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Refused> {
            key.serialize(&mut **self)
        }
        fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Refused> {
            self.entries += 1;
            value.serialize(&mut **self)
        }
        fn end(self) -> Result<(), Refused> {
            Ok(())
        }
    }
}

/// The floors that keep a job from never running or never waiting: at least one attempt, at
/// least one reboot before the reboot-loop bound, a restart deadline of at least a second, and
/// a back-off that never shrinks below its first wait nor grows past its longest, whatever the
/// multiplier or the attempt number. Through the builders and through the text form. (No
/// cargo-mutants mutant reaches `max`/`min` floors: these assertions pin them.)
#[test]
fn the_floors_keep_every_job_attempted_and_every_wait_bounded() {
    let built = JobSpec::new(job("j"))
        .with_retry(RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        })
        .with_max_reboots(0)
        .with_restart_deadline(Duration::ZERO);
    let read: JobSpec = serde_json::from_str(
        r#"{"id":"j","retry":{"max_attempts":0,"initial_backoff":"1m","multiplier":2,"max_backoff":"1h"},"max_reboots":0,"restart_deadline":"0s"}"#,
    )
    .unwrap();
    for spec in [&built, &read] {
        assert_eq!(spec.retry().max_attempts, 1, "{spec:?}");
        assert_eq!(spec.max_reboots(), 1, "{spec:?}");
        assert_eq!(spec.restart_deadline(), Duration::from_secs(1), "{spec:?}");
    }
    let flat = RetryPolicy {
        multiplier: 0,
        ..RetryPolicy::default()
    };
    for attempt in [0, 1, 2, 5, u32::MAX] {
        assert_eq!(flat.backoff(attempt), flat.initial_backoff, "{attempt}");
    }
    let default = RetryPolicy::default();
    assert_eq!(default.backoff(0), default.initial_backoff);
    assert_eq!(default.backoff(2), 2 * default.initial_backoff);
    assert_eq!(default.backoff(40), default.max_backoff);
    assert_eq!(default.backoff(u32::MAX), default.max_backoff);
}
