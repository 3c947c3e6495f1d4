//! A simulated machine and agent for testing a deployment tool's own policies: reboots,
//! crashes, absent users and lost notices in a few lines, around the real
//! [`Ledger`](crate::Ledger) and any [`Store`].
//!
//! A [`Scenario`] says what the world is like (who is logged on, whether shutdown notices
//! arrive, which jobs the site server offers and what their programs do, what happens
//! when) and runs it on a simulated [`Machine`]: a boot identity that changes at every reboot,
//! a clock the simulation controls (the wall clock may jump back after a reboot; the boot's
//! monotonic clock restarts), programs with scripted outcomes ([`Program`]: any exit code, "the
//! program restarts the machine itself", a hang past the maximum run time), an agent that
//! crashes at chosen points ([`CrashPoint`]), and a site server that fails on demand. The run
//! returns an [`Outcome`] to assert on: [`launches`](Outcome::launches),
//! [`state`](Outcome::state), [`reported`](Outcome::reported), the full [`Trace`], and the
//! crate's promises that the run broke ([`Outcome::assert_invariants`]).
//!
//! Everything is deterministic: the same scenario and seed give the same trace. The seed names
//! the boots, and drives the randomized world of [`Chaos`]; [`check`] runs a test over many
//! seeds and prints the seed of a failure (`JOBSTATE_SIM_SEED=<seed>`) to replay it alone.
//!
//! # Seed 000: the upgrade that ran forever
//!
//! An OS upgrade sent as a system background task, with nobody logged on, restarts the machine
//! itself. SMS 1.2 never reported its completion, so the upgrade ran again, forever (KB
//! Q158644). Here it runs once, and its completion reaches the server:
//!
//! ```
//! use jobstate::testkit::simulator::{Program, Scenario};
//! use jobstate::{JobId, JobSpec, RebootBehaviour, StateKind};
//!
//! let upgrade = JobSpec::new(JobId::new("winnt40-upgrade")?).with_reboot(RebootBehaviour::RestartsMachine);
//! let outcome = Scenario::new(0x000)
//!     .background_task() // sent as a system background task
//!     .no_user() // nobody logged on
//!     .job(upgrade.clone(), Program::restarts_machine())
//!     .run_until_idle();
//! assert_eq!(outcome.launches(upgrade.id()), 1); // once, although offered at every start
//! assert_eq!(outcome.reported(upgrade.id()), [StateKind::Completed]);
//! outcome.assert_invariants();
//! # Ok::<(), jobstate::IdError>(())
//! ```
//!
//! # Seed 001: the shutdown message a service never receives
//!
//! The wrapper around an OS upgrade waited for a shutdown message to learn of the restart; run
//! from a service it never got one, marked the job failed, and the agent ran the upgrade again
//! (KB Q164887). Here nothing waits for the message: the new boot identity proves the restart,
//! and the detection check confirms the upgrade:
//!
//! ```
//! use jobstate::testkit::simulator::{Program, Scenario};
//! use jobstate::{JobId, JobSpec, RebootBehaviour, StateKind};
//!
//! let upgrade = JobSpec::new(JobId::new("nt40-upgrade-via-ntencap")?)
//!     .with_reboot(RebootBehaviour::RestartsMachine)
//!     .with_verify_after_reboot(true);
//! let outcome = Scenario::new(0x001)
//!     .service() // run from the agent's service...
//!     .no_notices() // ...which never receives the shutdown message
//!     .job(upgrade.clone(), Program::restarts_machine())
//!     .run_until_idle();
//! assert_eq!(outcome.launches(upgrade.id()), 1);
//! let reported = outcome.reported(upgrade.id());
//! assert_eq!(reported, [StateKind::AwaitingReboot, StateKind::Completed]); // never Failed
//! outcome.assert_invariants();
//! # Ok::<(), jobstate::IdError>(())
//! ```
//!
//! # Every crash point
//!
//! [`Scenario::crash_everywhere`] runs a scenario once for every point at which the agent can
//! crash (before, right after, and between each commit and its effects) and checks each
//! outcome:
//!
//! ```
//! use jobstate::testkit::simulator::{Program, Scenario};
//! use jobstate::{JobId, JobSpec, RebootBehaviour, StateKind};
//!
//! let upgrade = JobSpec::new(JobId::new("os-upgrade")?).with_reboot(RebootBehaviour::RestartsMachine);
//! let points = Scenario::new(7)
//!     .job(upgrade.clone(), Program::restarts_machine())
//!     .crash_everywhere(|outcome| {
//!         assert_eq!(outcome.launches(upgrade.id()), 1);
//!         assert_eq!(outcome.state(upgrade.id()), Some(StateKind::Completed));
//!     });
//! assert!(points >= 9);
//! # Ok::<(), jobstate::IdError>(())
//! ```
//!
//! # A fleet
//!
//! [`Fleet`] runs a scenario on many machines, each with its own seed, reporting to one shared
//! [`Collector`] through a flaky [`Network`] (outages, lost requests, answers lost after the
//! collector stored the messages, retries, overload pauses), and checks that the collector
//! holds exactly one record per status message any machine produced ([`FleetOutcome`]).

use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::Duration;

use crate::core::id::JobId;
use crate::core::presence::UserPresence;
use crate::core::spec::JobSpec;
use crate::report::delivery::DeliveryPolicy;
use crate::session::{ExecutionContext, NoticeDelivery};
use crate::store::{MemoryStore, Store, StoreError};

mod fleet;
mod machine;
mod program;
mod store;
mod trace;

pub use fleet::{Collector, Fleet, FleetFigures, FleetOutcome, MachineSummary, Network};
pub use machine::Machine;
pub use program::{Program, TERMINATED};
pub use store::{CrashPoint, CrashWhen, SimStore};
pub use trace::{Call, End, Happened, Outcome, RebootCause, Trace, TraceLine};

/// The environment variable that makes [`check`] run one seed only: the one a failure printed.
pub const SEED_VAR: &str = "JOBSTATE_SIM_SEED";

/// The environment variable that overrides how many seeds [`check`] runs.
pub const SEEDS_VAR: &str = "JOBSTATE_SIM_SEEDS";

/// Something that happens in the world at a chosen time ([`Scenario::at`]) or now
/// ([`Machine::happen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Happening {
    /// The power is cut: the machine restarts, no shutdown notice, every program dies.
    PowerCut,
    /// Someone restarts the machine (an unrelated, orderly restart: a notice is delivered if
    /// the scenario delivers notices).
    Reboot,
    /// The agent process crashes (its programs live on); it is restarted 5 seconds later.
    AgentCrash,
    /// A user logs on.
    LogOn,
    /// The user logs off.
    LogOff,
    /// Whether a user is logged on becomes unknown.
    UserUnknown,
    /// The wall clock jumps by this much (negative: backwards).
    ClockJump(chrono::TimeDelta),
    /// The site server refuses the next `n` deliveries.
    SinkFails(u32),
    /// The site server goes down until [`Happening::SinkUp`].
    SinkDown,
    /// The site server comes back.
    SinkUp,
    /// The server asks for a rerun of the job.
    Rerun(JobId),
    /// The server cancels the job.
    Cancel(JobId),
    /// An operator abandons the job.
    Abandon(JobId),
}

/// The randomized parts of the world, drawn from the scenario's seed ([`Scenario::chaos`]).
///
/// ```
/// use jobstate::testkit::simulator::Chaos;
/// // Everything but power cuts (which legitimately re-run jobs that never reboot).
/// let chaos = Chaos::all().power_cuts(false);
/// # let _ = chaos;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chaos {
    crashes: bool,
    power_cuts: bool,
    lost_notices: bool,
    clock_jumps: bool,
    user_sessions: bool,
    sink_failures: bool,
    jitter: bool,
    kill_mode: bool,
    lost_restarts: bool,
}

impl Chaos {
    /// Nothing random: the world is as the scenario says.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every kind of randomness on.
    pub fn all() -> Self {
        Self {
            crashes: true,
            power_cuts: true,
            lost_notices: true,
            clock_jumps: true,
            user_sessions: true,
            sink_failures: true,
            jitter: true,
            kill_mode: true,
            lost_restarts: true,
        }
    }

    /// Up to three agent crashes, at random points among the first 24 commits.
    #[must_use]
    pub fn crashes(mut self, on: bool) -> Self {
        self.crashes = on;
        self
    }

    /// Up to two unrelated restarts (power cuts or orderly) in the first 6 hours.
    #[must_use]
    pub fn power_cuts(mut self, on: bool) -> Self {
        self.power_cuts = on;
        self
    }

    /// Each shutdown notice is lost with probability 1/2 (when notices are delivered at all).
    #[must_use]
    pub fn lost_notices(mut self, on: bool) -> Self {
        self.lost_notices = on;
        self
    }

    /// The wall clock jumps back (up to 3 hours) after half the reboots, and perhaps once in
    /// between.
    #[must_use]
    pub fn clock_jumps(mut self, on: bool) -> Self {
        self.clock_jumps = on;
        self
    }

    /// Up to three log-ons and log-offs in the first 8 hours.
    #[must_use]
    pub fn user_sessions(mut self, on: bool) -> Self {
        self.user_sessions = on;
        self
    }

    /// Each delivery to the site server fails with probability 1/4.
    #[must_use]
    pub fn sink_failures(mut self, on: bool) -> Self {
        self.sink_failures = on;
        self
    }

    /// Programs take between half and one and a half times their scripted duration.
    #[must_use]
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// With probability 1/2, an agent crash kills the agent's programs with it (systemd's
    /// default `KillMode=control-group`) instead of leaving them running.
    #[must_use]
    pub fn kill_mode(mut self, on: bool) -> Self {
        self.kill_mode = on;
        self
    }

    /// With probability 1/2, the first restart the agent orders does not happen (a restart
    /// command that fails): the restart deadline must license it again.
    #[must_use]
    pub fn lost_restarts(mut self, on: bool) -> Self {
        self.lost_restarts = on;
        self
    }
}

/// How a new agent process opens the store again ([`Scenario::reopen_with`]).
type Reopen<S> = Rc<dyn Fn(S) -> Result<S, StoreError>>;

/// A world to run a deployment tool's jobs in: a builder, then [`run_until_idle`].
///
/// The defaults: the agent runs as a service, a user is logged on, shutdown notices are
/// delivered, the wall clock does not jump, the site server accepts everything and offers
/// every job again at each agent start, the agent runs one job at a time and restarts the
/// machine 1 minute after a job asks for it, and the run stops after 30 simulated days or
/// 100,000 steps. Time starts at
/// 2026-11-21 02:00 UTC; the agent starts 1 minute after each boot.
///
/// [`run_until_idle`]: Scenario::run_until_idle
pub struct Scenario<S = MemoryStore> {
    seed: u64,
    create: Rc<dyn Fn() -> S>,
    reopen: Option<Reopen<S>>,
    jobs: Vec<(Duration, JobSpec, Program)>,
    happenings: Vec<(Duration, Happening)>,
    crashes: Vec<CrashPoint>,
    user: UserPresence,
    context: ExecutionContext,
    notices: NoticeDelivery,
    clock_reset: Option<Duration>,
    chaos: Chaos,
    reoffer: bool,
    parallel: bool,
    restart_delay: Duration,
    horizon: Duration,
    max_steps: u64,
    programs_die_with_agent: bool,
    ignored_restarts: u32,
    programs_unknown: bool,
    restart_policy: crate::core::restart_policy::RestartPolicy,
    delivery: DeliveryPolicy,
}

impl<S> Clone for Scenario<S> {
    fn clone(&self) -> Self {
        Self {
            seed: self.seed,
            create: Rc::clone(&self.create),
            reopen: self.reopen.clone(),
            jobs: self.jobs.clone(),
            happenings: self.happenings.clone(),
            crashes: self.crashes.clone(),
            user: self.user,
            context: self.context,
            notices: self.notices,
            clock_reset: self.clock_reset,
            chaos: self.chaos,
            reoffer: self.reoffer,
            parallel: self.parallel,
            restart_delay: self.restart_delay,
            horizon: self.horizon,
            max_steps: self.max_steps,
            programs_die_with_agent: self.programs_die_with_agent,
            ignored_restarts: self.ignored_restarts,
            programs_unknown: self.programs_unknown,
            restart_policy: self.restart_policy,
            delivery: self.delivery,
        }
    }
}

impl<S> fmt::Debug for Scenario<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("seed", &self.seed)
            .field("jobs", &self.jobs)
            .field("happenings", &self.happenings)
            .field("crashes", &self.crashes)
            .field("user", &self.user)
            .field("context", &self.context)
            .field("notices", &self.notices)
            .field("chaos", &self.chaos)
            .finish_non_exhaustive()
    }
}

impl Scenario<MemoryStore> {
    /// A scenario with `seed`, over a fresh [`MemoryStore`] for each run.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            create: Rc::new(MemoryStore::new),
            reopen: None,
            jobs: Vec::new(),
            happenings: Vec::new(),
            crashes: Vec::new(),
            user: UserPresence::LoggedOn,
            context: ExecutionContext::Service,
            notices: NoticeDelivery::Delivered,
            clock_reset: None,
            chaos: Chaos::none(),
            reoffer: true,
            parallel: false,
            restart_delay: Duration::from_secs(60),
            horizon: Duration::from_secs(30 * 24 * 3600),
            max_steps: 100_000,
            programs_die_with_agent: false,
            ignored_restarts: 0,
            programs_unknown: false,
            restart_policy: crate::core::restart_policy::RestartPolicy::Immediately,
            delivery: DeliveryPolicy::default(),
        }
    }
}

impl<S: Store> Scenario<S> {
    /// The same scenario over stores made by `create`, called once per run (a run over a
    /// durable store wants a fresh directory each time).
    pub fn with_store<T: Store>(self, create: impl Fn() -> T + 'static) -> Scenario<T> {
        Scenario {
            seed: self.seed,
            create: Rc::new(create),
            reopen: None,
            jobs: self.jobs,
            happenings: self.happenings,
            crashes: self.crashes,
            user: self.user,
            context: self.context,
            notices: self.notices,
            clock_reset: self.clock_reset,
            chaos: self.chaos,
            reoffer: self.reoffer,
            parallel: self.parallel,
            restart_delay: self.restart_delay,
            horizon: self.horizon,
            max_steps: self.max_steps,
            programs_die_with_agent: self.programs_die_with_agent,
            ignored_restarts: self.ignored_restarts,
            programs_unknown: self.programs_unknown,
            restart_policy: self.restart_policy,
            delivery: self.delivery,
        }
    }

    /// At every agent start, the store is reopened with `reopen` (as a new process opens it
    /// from its medium). Without it, the same store value is used again.
    ///
    /// Reopening may fail, as opening a store may: the error is the agent's failure to open its
    /// ledger ([`Error::Store`](crate::Error::Store)): the trace notes the refused open with
    /// the error's message, and the run ends with [`End::AgentFailed`] and a violation that
    /// says so. The store given to `reopen` is gone with it, so the outcome also says that the
    /// store does not load at the end.
    ///
    /// ```
    /// use jobstate::FileStore;
    /// use jobstate::testkit::simulator::Scenario;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let dir = dir.path().to_path_buf();
    /// let scenario = Scenario::new(7)
    ///     .with_store(move || FileStore::open(&dir).unwrap())
    ///     .reopen_with(|store: FileStore| {
    ///         let dir = store.dir().to_path_buf();
    ///         drop(store); // its lock goes with it
    ///         FileStore::open(dir)
    ///     });
    /// scenario.run_until_idle().assert_invariants();
    /// ```
    #[must_use]
    pub fn reopen_with(mut self, reopen: impl Fn(S) -> Result<S, StoreError> + 'static) -> Self {
        self.reopen = Some(Rc::new(reopen));
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The site server offers `spec` from the start; its program behaves as `program`.
    #[must_use]
    pub fn job(self, spec: JobSpec, program: Program) -> Self {
        self.job_at(Duration::ZERO, spec, program)
    }

    /// The site server starts offering `spec` at `after` (simulated time from the start).
    #[must_use]
    pub fn job_at(mut self, after: Duration, spec: JobSpec, program: Program) -> Self {
        self.jobs.push((after, spec, program));
        self
    }

    /// `what` happens at `after` (simulated time from the start).
    #[must_use]
    pub fn at(mut self, after: Duration, what: Happening) -> Self {
        self.happenings.push((after, what));
        self
    }

    /// The agent crashes at `point`.
    #[must_use]
    pub fn crash_at(mut self, point: CrashPoint) -> Self {
        self.crashes.push(point);
        self
    }

    /// Nobody is logged on (until a [`Happening::LogOn`]).
    #[must_use]
    pub fn no_user(mut self) -> Self {
        self.user = UserPresence::NoneLoggedOn;
        self
    }

    /// A user is logged on (the default).
    #[must_use]
    pub fn user_logged_on(mut self) -> Self {
        self.user = UserPresence::LoggedOn;
        self
    }

    /// Whether a user is logged on is unknown.
    #[must_use]
    pub fn user_unknown(mut self) -> Self {
        self.user = UserPresence::Unknown;
        self
    }

    /// The agent runs as a service (the default).
    #[must_use]
    pub fn service(mut self) -> Self {
        self.context = ExecutionContext::Service;
        self
    }

    /// The agent runs as a background task.
    #[must_use]
    pub fn background_task(mut self) -> Self {
        self.context = ExecutionContext::BackgroundTask;
        self
    }

    /// The agent runs in an interactive session.
    #[must_use]
    pub fn interactive(mut self) -> Self {
        self.context = ExecutionContext::Interactive;
        self
    }

    /// Shutdown notices reach the agent before orderly restarts (the default; a power cut
    /// sends none).
    #[must_use]
    pub fn notices(mut self) -> Self {
        self.notices = NoticeDelivery::Delivered;
        self
    }

    /// Shutdown notices never reach the agent (a service that never gets the window message).
    #[must_use]
    pub fn no_notices(mut self) -> Self {
        self.notices = NoticeDelivery::NotDelivered;
        self
    }

    /// After every reboot the wall clock is `by` further behind (a reset clock).
    #[must_use]
    pub fn clock_resets_on_reboot(mut self, by: Duration) -> Self {
        self.clock_reset = Some(by);
        self
    }

    /// Randomizes parts of the world from the seed.
    #[must_use]
    pub fn chaos(mut self, chaos: Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// Whether the site server offers every job again at each agent start (the default,
    /// as SMS did until it heard of a completion), or only once.
    #[must_use]
    #[doc(alias = "readvertise")]
    pub fn reoffer(mut self, again: bool) -> Self {
        self.reoffer = again;
        self
    }

    /// Whether the agent starts every job that may run at once, instead of one at a time and
    /// none while a restart is scheduled (the default, as SMS's Package Command Manager did). In
    /// parallel, a restart for one job kills the programs of the others.
    #[must_use]
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// How long the agent waits before restarting the machine for a job (default 1 minute).
    #[must_use]
    pub fn restart_delay(mut self, delay: Duration) -> Self {
        self.restart_delay = delay;
        self
    }

    /// Stops the run at this simulated time (default 30 days).
    #[must_use]
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// An agent crash kills the agent's programs with it (systemd's default
    /// `KillMode=control-group`): nobody hears their end, and the next agent finds them gone.
    /// By default they live on, and their exit statuses reach the next agent (as a wrapper that
    /// records them would).
    #[must_use]
    pub fn programs_die_with_agent(mut self) -> Self {
        self.programs_die_with_agent = true;
        self
    }

    /// The first `n` restarts the agent orders do not happen (a restart command that fails, a
    /// user who cancels it): a restart that never comes.
    #[must_use]
    pub fn restarts_fail(mut self, n: u32) -> Self {
        self.ignored_restarts = n;
        self
    }

    /// The session cannot tell whether programs are alive
    /// ([`LivePrograms::Unknown`](crate::session::LivePrograms::Unknown)); by default it can.
    #[must_use]
    pub fn program_status_unknown(mut self) -> Self {
        self.programs_unknown = true;
        self
    }

    /// The agent's default restart policy (given at every start of the agent): by default
    /// [`RestartPolicy::Immediately`](crate::RestartPolicy::Immediately).
    #[must_use]
    pub fn restart_policy(mut self, policy: crate::core::restart_policy::RestartPolicy) -> Self {
        self.restart_policy = policy;
        self
    }

    /// How the agent delivers status messages: batches, back-offs, give-up bounds (given at
    /// every start of the agent): by default [`DeliveryPolicy::default`].
    #[must_use]
    pub fn delivery_policy(mut self, policy: DeliveryPolicy) -> Self {
        self.delivery = policy;
        self
    }

    /// Stops the run after this many steps (default 100,000).
    #[must_use]
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = steps;
        self
    }

    /// A machine ready to run the scenario, for tests that step through it.
    pub fn build(&self) -> Machine<S> {
        Machine::new(self.clone())
    }

    /// Runs the scenario until nothing more can happen.
    pub fn run_until_idle(&self) -> Outcome {
        self.build().run_until_idle()
    }

    /// Every crash point of the scenario, with the call that makes its commit: the commits of
    /// one run without further crashes, each in the three ways of [`CrashWhen`].
    pub fn crash_points(&self) -> Vec<(CrashPoint, Call)> {
        let outcome = self.run_until_idle();
        let planned: Vec<u64> = self.crashes.iter().map(|p| p.commit).collect();
        let mut points = Vec::new();
        for (commit, call) in outcome.trace().commits() {
            if planned.contains(&commit) {
                continue;
            }
            for when in CrashWhen::ALL {
                points.push((CrashPoint { commit, when }, call.clone()));
            }
        }
        points
    }

    /// Runs the scenario once per crash point (see [`crash_points`](Scenario::crash_points)),
    /// with the agent crashing there, and hands each outcome to `check`. A panic in `check` is
    /// reported with the crash point, the seed and the end of the trace. Returns how many
    /// points ran.
    pub fn for_each_crash_point(&self, mut check: impl FnMut(CrashPoint, &Outcome)) -> usize {
        let points = self.crash_points();
        for (point, call) in &points {
            let outcome = self.clone().crash_at(*point).run_until_idle();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(*point, &outcome))) {
                eprintln!(
                    "simulator: the check failed with the agent crashing {point} ({call}), seed {}; trace (end):\n{}",
                    self.seed,
                    outcome.trace().tail(40)
                );
                panic!(
                    "simulator: crash {point} ({call}), seed {}: {}",
                    self.seed,
                    message(&panic)
                );
            }
        }
        points.len()
    }

    /// [`for_each_crash_point`](Scenario::for_each_crash_point) for checks that need only the
    /// outcome. Returns how many crash points ran.
    pub fn crash_everywhere(&self, mut check: impl FnMut(&Outcome)) -> usize {
        self.for_each_crash_point(|_, outcome| check(outcome))
    }
}

/// Runs `test` on `seeds` scenarios with every kind of [`Chaos`], seeds 0, 1, 2, ... If
/// `JOBSTATE_SIM_SEED` is set, runs that seed only; `JOBSTATE_SIM_SEEDS` overrides the count.
///
/// A failing seed is printed with the end of its last run's trace, and the test panics with
/// `JOBSTATE_SIM_SEED=<seed>`: set it to replay exactly that run. Returns how many seeds ran.
///
/// ```
/// use jobstate::testkit::simulator::{check, Chaos, Program};
/// use jobstate::{JobId, JobSpec, RebootBehaviour, StateKind};
///
/// let upgrade = JobSpec::new(JobId::new("os-upgrade").unwrap())
///     .with_reboot(RebootBehaviour::RestartsMachine)
///     .with_verify_after_reboot(true);
/// check(20, |scenario| {
///     let outcome = scenario.job(upgrade.clone(), Program::restarts_machine()).run_until_idle();
///     outcome.assert_invariants();
///     // Once, unless its program died with a crashed agent before it restarted the machine
///     // (that attempt ended without a result, and the check found nothing: it runs again).
///     let died = outcome.trace().lines().iter().filter(|l| {
///         matches!(l.what, jobstate::testkit::simulator::Happened::KilledWithAgent { .. })
///     });
///     assert!(outcome.launches(upgrade.id()) <= 1 + died.count());
/// });
/// ```
pub fn check(seeds: u64, test: impl Fn(Scenario)) -> u64 {
    if let Some(seed) = env_u64(SEED_VAR) {
        return check_seeds([seed], test);
    }
    check_seeds(0..env_u64(SEEDS_VAR).unwrap_or(seeds), test)
}

/// [`check`] over chosen seeds (the environment variables are not read).
pub fn check_seeds(seeds: impl IntoIterator<Item = u64>, test: impl Fn(Scenario)) -> u64 {
    let mut ran = 0;
    for seed in seeds {
        LAST_TRACE.with(|t| t.borrow_mut().take());
        let scenario = Scenario::new(seed).chaos(Chaos::all());
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| test(scenario))) {
            let trace = LAST_TRACE.with(|t| t.borrow_mut().take());
            if let Some(trace) = trace {
                eprintln!(
                    "simulator: seed {seed}, trace of its last run (end):\n{}",
                    trace.tail(60)
                );
            }
            eprintln!("simulator: seed {seed} failed; replay it with {SEED_VAR}={seed}");
            let text = format!(
                "simulator: seed {seed} failed: {}\nreplay it alone with {SEED_VAR}={seed}",
                message(&panic)
            );
            resume_unwind(Box::new(text));
        }
        ran += 1;
    }
    ran
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

fn message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

thread_local! {
    /// The trace of the last run on this thread, for [`check`] to print on failure.
    static LAST_TRACE: RefCell<Option<Trace>> = const { RefCell::new(None) };
}

fn remember(trace: &Trace) {
    LAST_TRACE.with(|t| *t.borrow_mut() = Some(trace.clone()));
}

/// SplitMix64: a tiny, seedable, deterministic generator.
#[derive(Debug, Clone, Default)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x6A09_E667_F3BC_C909)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An independent generator, seeded from this one.
    fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}
