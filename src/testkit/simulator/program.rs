//! Scripted programs: what a job's program does each time it is launched.

use std::time::Duration;

use crate::core::event::CheckResult;
use crate::core::exit_code::ProgramExit;

/// How the simulator reports a program it terminated (after an
/// [`Effect::Terminate`](crate::Effect::Terminate)): ended by `SIGTERM`.
pub const TERMINATED: ProgramExit = ProgramExit::Signal(15);

/// What a job's program does, launch by launch: the first launch behaves as the first step,
/// the second as the second, and so on; the last step repeats.
///
/// ```
/// use std::time::Duration;
/// use jobstate::testkit::simulator::Program;
///
/// // Fails with 1603 after 5 minutes, then succeeds on the next attempt.
/// let flaky = Program::exits(1603).after(Duration::from_secs(300)).then(Program::exits(0));
/// // An OS upgrade: restarts the machine itself after 40 minutes, no exit code.
/// let upgrade = Program::restarts_machine().after(Duration::from_secs(40 * 60));
/// // A wrapper that reports failure (it never heard the shutdown) while the upgrade it runs
/// // restarts the machine and completes (seed 001).
/// let ntencap = Program::exits_then_restarts(1603);
/// // A feature update that restarts the machine three times before it is done: the detection
/// // check says "not yet" after the first two restarts.
/// let feature_update = Program::restarts_machine_times(3);
/// # let _ = (flaky, upgrade, ntencap, feature_update);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    steps: Vec<Run>,
    /// What the detection check says, check by check (the last repeats); empty: decided by
    /// what the program did.
    checks: Vec<CheckResult>,
}

/// One launch of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) ends: Ends,
    pub(super) after: Duration,
    /// What the detection check says once this launch did its work; `None`: decided by what it
    /// did (a success code, a restart).
    pub(super) installs: Option<bool>,
    /// For a program that restarts the machine: how many restarts its work takes in all (the
    /// machine restarts again by itself after the first, as an upgrade's later phases do).
    pub(super) restarts: u32,
    /// Its exit leaves the operating system saying a restart is pending (a kernel package's
    /// `/run/reboot-required`), until the next boot.
    pub(super) leaves_restart_pending: bool,
}

/// How a launch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ends {
    /// Ends with `exit`; the machine restarts shortly after if `then_restarts`.
    Exits {
        exit: ProgramExit,
        then_restarts: bool,
    },
    /// Restarts the machine itself: no exit code ever arrives.
    RestartsMachine,
    /// Never exits: runs until terminated or a reboot.
    Hangs,
}

impl Program {
    /// Exits with `exit` after 10 minutes (change it with [`after`](Program::after)): an exit
    /// code (a plain `i32`) or a [`ProgramExit::Signal`].
    pub fn exits(exit: impl Into<ProgramExit>) -> Self {
        Self::one(Ends::Exits {
            exit: exit.into(),
            then_restarts: false,
        })
    }

    /// Restarts the machine itself after 20 minutes, without an exit code: an OS upgrade. The
    /// detection check finds it installed after the restart.
    pub fn restarts_machine() -> Self {
        Self::one(Ends::RestartsMachine)
    }

    /// Exits with `code` after 10 minutes, and the machine restarts 30 seconds later: Windows
    /// Installer's 1641 ("restart initiated"), or a wrapper that reports `code` while the
    /// upgrade it started restarts the machine (seed 001). The detection check finds it
    /// installed after the restart.
    /// A [`ProgramExit::Signal`] works too: the program killed by the shutdown's `SIGTERM`.
    pub fn exits_then_restarts(exit: impl Into<ProgramExit>) -> Self {
        Self::one(Ends::Exits {
            exit: exit.into(),
            then_restarts: true,
        })
    }

    /// Never exits: it runs until the agent terminates it (past the job's maximum run time)
    /// or the machine restarts.
    pub fn hangs() -> Self {
        Self::one(Ends::Hangs)
    }

    /// Restarts the machine itself after 20 minutes, and its work goes on to restart the machine
    /// `times` times in all (each later restart 3 minutes after the boot before it), as a
    /// feature update's offline phases do. Until the last restart the detection check says
    /// [`CheckResult::NotYet`]; after it, installed. `times` 0 is taken as 1.
    pub fn restarts_machine_times(times: u32) -> Self {
        let mut program = Self::one(Ends::RestartsMachine);
        if let Some(last) = program.steps.last_mut() {
            last.restarts = times.max(1);
        }
        program
    }

    /// The last step's exit leaves the operating system saying a restart is pending until the
    /// next boot, as a kernel package leaves `/run/reboot-required` on Debian: the session
    /// reports [`RestartPending::Pending`](crate::session::RestartPending::Pending) (before it, and after
    /// the next boot, `NotPending`).
    #[must_use]
    pub fn leaves_restart_pending(mut self) -> Self {
        if let Some(last) = self.steps.last_mut() {
            last.leaves_restart_pending = true;
        }
        self
    }

    /// What the job's detection check says, check by check, whatever the program did: the
    /// first check answers `answers[0]`, the second `answers[1]`, and so on; the last repeats.
    #[must_use]
    pub fn checks_say(mut self, answers: impl IntoIterator<Item = CheckResult>) -> Self {
        self.checks = answers.into_iter().collect();
        self
    }

    /// The scripted answer of the `n`-th check (from 0), if any.
    pub(super) fn check(&self, n: usize) -> Option<CheckResult> {
        let last = self.checks.len().checked_sub(1)?;
        self.checks.get(n.min(last)).copied()
    }

    /// The last step ends after `duration` instead of its default.
    #[must_use]
    pub fn after(mut self, duration: Duration) -> Self {
        if let Some(last) = self.steps.last_mut() {
            last.after = duration;
        }
        self
    }

    /// What the detection check says after the last step did its work. By default: installed
    /// after an exit whose code the job's policy calls a success (with or without a restart),
    /// and after a restart by the program; not installed otherwise.
    #[must_use]
    pub fn installs(mut self, installed: bool) -> Self {
        if let Some(last) = self.steps.last_mut() {
            last.installs = Some(installed);
        }
        self
    }

    /// Appends the steps of `next`: later launches behave as they say.
    #[must_use]
    pub fn then(mut self, next: Program) -> Self {
        self.steps.extend(next.steps);
        if self.checks.is_empty() {
            self.checks = next.checks;
        }
        self
    }

    /// The step of the `launch`-th launch (from 0): the last one repeats.
    pub(super) fn run(&self, launch: usize) -> Run {
        let last = self.steps.len().saturating_sub(1);
        self.steps[launch.min(last)]
    }

    fn one(ends: Ends) -> Self {
        let after = match ends {
            Ends::RestartsMachine => Duration::from_secs(20 * 60),
            _ => Duration::from_secs(10 * 60),
        };
        Self {
            steps: vec![Run {
                ends,
                after,
                installs: None,
                restarts: 1,
                leaves_restart_pending: false,
            }],
            checks: Vec::new(),
        }
    }
}

impl Default for Program {
    /// Exits with 0 after 10 minutes.
    fn default() -> Self {
        Self::exits(0)
    }
}
