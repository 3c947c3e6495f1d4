//! A fleet: many simulated machines reporting to one shared collector through a flaky network
//! ([`Fleet`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::trace::expected_reports;
use super::{End, Happened, Rng, Scenario};
#[cfg(doc)]
use super::{Machine, SimStore};
use crate::core::effect::{StatusKey, StatusMessage};
use crate::report::delivery::Answers;
use crate::store::{MemoryStore, Store};

/// The network between a fleet's machines and its collector: what goes wrong, per delivery
/// request, with chances in percent, drawn from each machine's seed.
///
/// ```
/// use std::time::Duration;
/// use jobstate::testkit::simulator::Network;
/// // Half the answers lost after the collector stored the messages, and nothing else.
/// let network = Network::reliable().loses_answers(50);
/// // The flaky default, with longer outages.
/// let stormy = Network::flaky().outages(5, Duration::from_secs(24 * 3600), Duration::from_secs(6 * 3600));
/// # let _ = (network, stormy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    loses_requests: u64,
    loses_answers: u64,
    retries: u64,
    overloads: u64,
    outages: u32,
    outages_within: Duration,
    longest_outage: Duration,
}

impl Default for Network {
    /// [`Network::flaky`].
    fn default() -> Self {
        Self::flaky()
    }
}

impl Network {
    /// Nothing goes wrong: every request reaches the collector, and every answer the agent.
    pub fn reliable() -> Self {
        Self {
            loses_requests: 0,
            loses_answers: 0,
            retries: 0,
            overloads: 0,
            outages: 0,
            outages_within: Duration::ZERO,
            longest_outage: Duration::ZERO,
        }
    }

    /// A bad day: 10 % of requests lost before the collector, 10 % of answers lost after it
    /// stored the messages, 10 % of messages answered "retry" (half of them with a wait of up to
    /// 10 minutes), 5 % of requests met by an overloaded collector (a pause of 1 to 10 minutes
    /// after part of the batch), and up to 3 outages of up to 2 hours in the first 12 hours.
    pub fn flaky() -> Self {
        Self {
            loses_requests: 10,
            loses_answers: 10,
            retries: 10,
            overloads: 5,
            outages: 3,
            outages_within: Duration::from_secs(12 * 3600),
            longest_outage: Duration::from_secs(2 * 3600),
        }
    }

    /// This share of requests (in percent) is lost before the collector sees it: the sink
    /// returns `Err`.
    #[must_use]
    pub fn loses_requests(mut self, percent: u64) -> Self {
        self.loses_requests = percent.min(100);
        self
    }

    /// This share of answers (in percent) is lost after the collector handled the request (and
    /// stored what it accepted): the sink returns `Err`, and the agent sends the messages again.
    #[must_use]
    pub fn loses_answers(mut self, percent: u64) -> Self {
        self.loses_answers = percent.min(100);
        self
    }

    /// This share of the messages the collector does not hold yet (in percent) is answered
    /// "retry"; half of those with a wait of up to 10 minutes.
    #[must_use]
    pub fn retries(mut self, percent: u64) -> Self {
        self.retries = percent.min(100);
        self
    }

    /// This share of requests (in percent) meets an overloaded collector: it takes the batch up
    /// to a random message, then asks for a pause of 1 to 10 minutes.
    #[must_use]
    pub fn overloads(mut self, percent: u64) -> Self {
        self.overloads = percent.min(100);
        self
    }

    /// Up to `n` outages (the network down for every machine), each starting within `within`
    /// of the fleet's start and lasting up to `longest`.
    #[must_use]
    pub fn outages(mut self, n: u32, within: Duration, longest: Duration) -> Self {
        self.outages = n;
        self.outages_within = within;
        self.longest_outage = longest;
        self
    }

    /// The fleet's outages, from its seed: start and end, in simulated time.
    fn outage_windows(&self, seed: u64) -> Vec<(Duration, Duration)> {
        let mut rng = Rng::new(seed ^ 0x6E65_7477_6F72_6B21);
        let within = self.outages_within.as_secs();
        let longest = self.longest_outage.as_secs();
        (0..rng.below(u64::from(self.outages) + 1))
            .map(|_| {
                let start = rng.below(within);
                let length = 1 + rng.below(longest);
                (
                    Duration::from_secs(start),
                    Duration::from_secs(start + length),
                )
            })
            .collect()
    }
}

/// The fleet's site server: one record per status message, per machine; duplicates dropped by
/// key and counted.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    records: Vec<BTreeMap<StatusKey, StatusMessage>>,
    duplicates: u64,
}

impl Collector {
    fn new(machines: usize) -> Self {
        Self {
            records: vec![BTreeMap::new(); machines],
            duplicates: 0,
        }
    }

    /// Whether it holds the message with `key` from machine `machine`.
    pub fn holds(&self, machine: usize, key: &StatusKey) -> bool {
        self.records
            .get(machine)
            .is_some_and(|r| r.contains_key(key))
    }

    /// The messages it holds from machine `machine`, by key: one record per key.
    pub fn records(&self, machine: usize) -> impl Iterator<Item = &StatusMessage> {
        self.records
            .get(machine)
            .into_iter()
            .flat_map(|r| r.values())
    }

    /// How many records it holds, over all machines.
    pub fn len(&self) -> usize {
        self.records.iter().map(BTreeMap::len).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many messages it received again and dropped (it held their key already).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Stores `message` from `machine`; says whether it was new.
    fn store(&mut self, machine: usize, message: &StatusMessage) -> bool {
        if self.holds(machine, &message.key) {
            self.duplicates += 1;
            return false;
        }
        if let Some(records) = self.records.get_mut(machine) {
            records.insert(message.key.clone(), message.clone());
        }
        true
    }
}

/// What the network did, counted over the fleet.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    requests: u64,
    down: u64,
    lost_requests: u64,
    lost_answers: u64,
    retries: u64,
    retries_after: u64,
    pauses: u64,
}

#[derive(Debug, Clone)]
struct Shared {
    collector: Collector,
    traffic: Traffic,
}

/// One machine's end of the network: what its site server forwards through.
#[derive(Debug)]
pub(super) struct Link {
    machine: usize,
    network: Network,
    outages: Rc<[(Duration, Duration)]>,
    rng: Rng,
    shared: Rc<RefCell<Shared>>,
}

impl Link {
    /// One delivery request at `now` (simulated time): through the network to the collector
    /// and, perhaps, back. Messages the collector receives (new or duplicate) go to `received`.
    pub(super) fn exchange(
        &mut self,
        now: Duration,
        batch: &[StatusMessage],
        answers: &mut Answers,
        received: &mut Vec<StatusMessage>,
    ) -> Result<(), String> {
        let mut shared = self.shared.borrow_mut();
        let Shared { collector, traffic } = &mut *shared;
        traffic.requests += 1;
        if self
            .outages
            .iter()
            .any(|(from, to)| *from <= now && now < *to)
        {
            traffic.down += 1;
            return Err("the network is down".into());
        }
        let net = self.network;
        if self.rng.chance(net.loses_requests) {
            traffic.lost_requests += 1;
            return Err("the network lost the request".into());
        }
        let overload_at = self
            .rng
            .chance(net.overloads)
            .then(|| self.rng.below(batch.len() as u64 + 1) as usize);
        // The collector's answers, which reach the agent only if the network carries them back.
        let mut given = Answers::for_batch(batch);
        for (i, message) in batch.iter().enumerate() {
            if overload_at == Some(i) {
                break;
            }
            if !collector.holds(self.machine, &message.key) && self.rng.chance(net.retries) {
                traffic.retries += 1;
                if self.rng.chance(50) {
                    traffic.retries_after += 1;
                    let after = Duration::from_secs(1 + self.rng.below(600));
                    given.retry_after(&message.key, after, "503 busy, try again later");
                } else {
                    given.retry(&message.key, "503 busy");
                }
                continue;
            }
            collector.store(self.machine, message);
            received.push(message.clone());
            given.accept(&message.key);
        }
        if overload_at.is_some() {
            traffic.pauses += 1;
            given.pause(Some(Duration::from_secs(60 + self.rng.below(540))));
        }
        if self.rng.chance(net.loses_answers) {
            traffic.lost_answers += 1;
            return Err("the network lost the answer".into());
        }
        for key in given.offered() {
            if let Some(answer) = given.get(key) {
                answers.answer(key, answer.clone());
            }
        }
        if let Some(after) = given.pause_asked() {
            answers.pause(after);
        }
        Ok(())
    }
}

/// Many simulated machines, each running a [`Scenario`] with a seed of its own, reporting to one
/// shared [`Collector`] through a [`Network`].
///
/// Each machine of a [`Fleet`] runs the fleet's [`Scenario`] with a seed of its own: its own
/// agent, store, jobs, crashes and reboots, exactly as a single simulated [`Machine`] does. Its
/// site server forwards every delivery request through the fleet's [`Network`] to the one
/// [`Collector`], which keeps one record per status message and drops duplicates by key (per
/// machine: the site server knows which client a report comes from, as a real one does by its
/// connection; a [`StatusKey`] names no machine).
///
/// The network, per delivery request, seeded and deterministic: is down for stretches (the
/// same stretches for every machine: the fleet shares one time axis, every machine starting at
/// the same instant); loses the request before the collector sees it; loses the answer after
/// the collector stored the messages (the agent sends them again: the collector must see a
/// duplicate, never miss one); answers "retry" for some messages (with or without a wait); and
/// is overloaded (the collector takes part of the batch and asks the agent to pause).
///
/// Nothing links the machines but the collector, and the collector's answer to a request
/// depends only on that request, the machine's own earlier requests and the time, so the fleet
/// runs its machines one after another: the result is the one an interleaved run would give,
/// and memory stays small (a machine's trace is summarized, then dropped).
///
/// At the end [`FleetOutcome`] compares, machine by machine, what the collector holds with what
/// the machine produced, seen three ways that do not trust the ledger alone: the keys of the
/// status messages in the commits its store acknowledged ([`SimStore::reported`]), the keys its
/// jobs' final histories call for, and the keys its trace says reached the server. It lists
/// every key lost, every key the collector holds that no machine produced, every message left
/// pending, and every dead letter (accounted for: kept in the store, never held by the
/// collector).
///
/// ```
/// use jobstate::testkit::simulator::{Chaos, Fleet, Network, Program, Scenario};
/// use jobstate::{ExitCodePolicy, JobId, JobSpec, RebootBehaviour};
///
/// let upgrade = JobSpec::new(JobId::new("os-upgrade")?)
///     .with_reboot(RebootBehaviour::RestartsMachine)
///     .with_verify_after_reboot(true);
/// let installer = JobSpec::new(JobId::new("msi-installer")?)
///     .with_exit_codes(ExitCodePolicy::windows_installer()) // 3010: restart required
///     .with_reboot(RebootBehaviour::MayRequest);
/// let machine = Scenario::new(42)
///     .chaos(Chaos::all().sink_failures(false)) // the network fails instead
///     .job(upgrade, Program::restarts_machine())
///     .job(installer, Program::exits(3010));
/// let outcome = Fleet::new(5, machine).network(Network::flaky()).run();
/// outcome.assert_delivered(); // one record per key produced, none unexpected, none pending
/// let figures = outcome.figures();
/// assert_eq!((figures.machines, figures.lost, figures.unexpected), (5, 0, 0));
/// assert_eq!(figures.stored + figures.dead_letters, figures.messages);
/// # Ok::<(), jobstate::IdError>(())
/// ```
pub struct Fleet<S = MemoryStore> {
    scenario: Scenario<S>,
    machines: usize,
    network: Network,
}

impl<S> fmt::Debug for Fleet<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("machines", &self.machines)
            .field("network", &self.network)
            .field("scenario", &self.scenario)
            .finish()
    }
}

impl<S: Store> Fleet<S> {
    /// `machines` machines, each running `scenario` with its own seed (drawn from the
    /// scenario's), over a [flaky](Network::flaky) network. Turn the scenario's
    /// [`sink_failures`](super::Chaos::sink_failures) off: the network fails instead.
    pub fn new(machines: usize, scenario: Scenario<S>) -> Self {
        Self {
            scenario,
            machines,
            network: Network::flaky(),
        }
    }

    /// The network between the machines and the collector.
    #[must_use]
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The seed of machine `index`: run `Scenario::new(seed)` with the same jobs to see its
    /// world alone (over a reliable site server).
    pub fn machine_seed(&self, index: usize) -> u64 {
        let mut rng = Rng::new(
            self.scenario
                .seed
                .wrapping_add((index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
        );
        rng.next_u64()
    }

    /// Runs every machine until idle (each one after the other; see [`Fleet`]) and
    /// compares what the collector holds with what each machine produced.
    pub fn run(&self) -> FleetOutcome {
        let outages: Rc<[(Duration, Duration)]> =
            self.network.outage_windows(self.scenario.seed).into();
        let shared = Rc::new(RefCell::new(Shared {
            collector: Collector::new(self.machines),
            traffic: Traffic::default(),
        }));
        let mut machines = Vec::with_capacity(self.machines);
        let mut problems = Vec::new();
        for index in 0..self.machines {
            let seed = self.machine_seed(index);
            let mut scenario = self.scenario.clone();
            scenario.seed = seed;
            let mut machine = scenario.build();
            machine.connect(Link {
                machine: index,
                network: self.network,
                outages: Rc::clone(&outages),
                rng: Rng::new(seed ^ 0x636F_6C6C_6563_746F),
                shared: Rc::clone(&shared),
            });
            let store = machine.store();
            let outcome = machine.run_until_idle();
            let state = shared.borrow();
            let summary =
                MachineSummary::check(index, &outcome, &store, &state.collector, &mut problems);
            machines.push(summary);
        }
        // Every machine (and so every link) is gone: the state is the fleet's alone.
        let Shared { collector, traffic } = Rc::try_unwrap(shared)
            .map(RefCell::into_inner)
            .unwrap_or_else(|shared| shared.borrow().clone());
        let figures = FleetFigures::count(&machines, &collector, traffic);
        FleetOutcome {
            machines,
            collector,
            figures,
            problems,
        }
    }
}

/// What one machine of a fleet produced and what became of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MachineSummary {
    /// Its index in the fleet (the collector's name for it).
    pub index: usize,
    /// Its seed ([`Fleet::machine_seed`]).
    pub seed: u64,
    /// The keys of the status messages that entered its outbox, in the commits its store
    /// acknowledged, in order ([`SimStore::reported`]).
    pub produced: Vec<StatusKey>,
    /// The keys still in its outbox at the end.
    pub pending: Vec<StatusKey>,
    /// The keys of its dead letters at the end.
    pub dead_letters: Vec<StatusKey>,
    /// Jobs not in a terminal state at the end.
    pub unfinished: usize,
    /// Why its run stopped.
    pub end: End,
    /// How many times it rebooted.
    pub reboots: u32,
    /// How many times its agent crashed.
    pub crashes: u32,
    /// The simulated time its run took.
    pub elapsed: Duration,
}

impl MachineSummary {
    /// Summarizes machine `index`'s run and lists, in `problems`, every way in which what the
    /// collector holds differs from what it produced.
    fn check<S: Store>(
        index: usize,
        outcome: &super::Outcome,
        store: &super::SimStore<S>,
        collector: &Collector,
        problems: &mut Vec<String>,
    ) -> Self {
        let seed = outcome.seed();
        let mut problem = |what: String| {
            problems.push(format!("machine {index} (seed {seed:#x}): {what}"));
        };
        for violation in outcome.violations() {
            problem(format!("violation: {violation}"));
        }
        if !outcome.is_idle() {
            problem(format!(
                "the run stopped before it was idle: {:?}",
                outcome.end()
            ));
        }
        let (pending, dead_letters) = match store.load_inner() {
            Ok(snapshot) => (
                snapshot.outbox.into_iter().map(|m| m.key).collect(),
                snapshot
                    .dead_letters
                    .into_iter()
                    .map(|d| d.message.key)
                    .collect(),
            ),
            Err(error) => {
                problem(format!("the store does not load at the end: {error}"));
                (Vec::new(), Vec::new())
            }
        };
        let produced = store.reported();
        let produced_set: BTreeSet<&StatusKey> = produced.iter().collect();
        if produced_set.len() != produced.len() {
            problem("a status message entered the outbox twice".into());
        }
        let expected = expected_reports(outcome.jobs());
        let expected_set: BTreeSet<&StatusKey> = expected.iter().collect();
        if expected_set != produced_set {
            problem(format!(
                "the outbox received {produced_set:?}, the jobs' histories call for {expected_set:?}"
            ));
        }
        let wire: BTreeSet<&StatusKey> = outcome
            .trace()
            .lines()
            .iter()
            .filter_map(|l| match &l.what {
                Happened::Delivered { keys } => Some(keys),
                _ => None,
            })
            .flatten()
            .collect();
        let held: BTreeSet<&StatusKey> = collector.records(index).map(|m| &m.key).collect();
        if held != wire {
            problem(format!(
                "the collector holds {held:?}, the trace says the server received {wire:?}"
            ));
        }
        let dead: BTreeSet<&StatusKey> = dead_letters.iter().collect();
        for key in &produced_set {
            match (held.contains(key), dead.contains(key)) {
                (true, true) => problem(format!("[{key}] is held by the collector and dead")),
                (false, false) => problem(format!("[{key}] is lost: not held, not a dead letter")),
                _ => {}
            }
        }
        for key in held.difference(&produced_set) {
            problem(format!(
                "[{key}] is held by the collector, produced by nobody"
            ));
        }
        for key in dead.difference(&produced_set) {
            problem(format!("[{key}] is a dead letter it never produced"));
        }
        if !pending.is_empty() {
            problem(format!("{} message(s) left pending", pending.len()));
        }
        let unfinished = outcome
            .jobs()
            .iter()
            .filter(|r| !r.state().is_terminal())
            .count();
        Self {
            index,
            seed,
            produced,
            pending,
            dead_letters,
            unfinished,
            end: outcome.end(),
            reboots: outcome.reboots(),
            crashes: outcome.crashes(),
            elapsed: outcome.elapsed(),
        }
    }
}

/// A fleet run in figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetFigures {
    /// Machines.
    pub machines: usize,
    /// Status messages that entered the machines' outboxes (distinct keys).
    pub messages: usize,
    /// Records the collector holds: distinct keys.
    pub stored: usize,
    /// Messages the collector received again and dropped.
    pub duplicates: u64,
    /// Delivery requests the machines made.
    pub requests: u64,
    /// Requests refused because the network was down.
    pub down: u64,
    /// Requests lost before the collector saw them.
    pub lost_requests: u64,
    /// Answers lost after the collector handled the request (and stored what it accepted).
    pub lost_answers: u64,
    /// Messages answered "retry".
    pub retries: u64,
    /// Of those, answered "retry" with a wait.
    pub retries_after: u64,
    /// Requests met by an overloaded collector (a pause).
    pub pauses: u64,
    /// Messages given up on (dead letters at the end).
    pub dead_letters: usize,
    /// Messages still pending at the end.
    pub pending: usize,
    /// Messages produced and neither held by the collector nor a dead letter.
    pub lost: usize,
    /// Records the collector holds that no machine produced.
    pub unexpected: usize,
    /// Jobs not in a terminal state at the end.
    pub unfinished: usize,
    /// Agent crashes.
    pub crashes: u64,
    /// Reboots.
    pub reboots: u64,
    /// The simulated time of the longest machine run.
    pub simulated: Duration,
}

impl FleetFigures {
    fn count(machines: &[MachineSummary], collector: &Collector, traffic: Traffic) -> Self {
        let mut figures = Self {
            machines: machines.len(),
            stored: collector.len(),
            duplicates: collector.duplicates(),
            requests: traffic.requests,
            down: traffic.down,
            lost_requests: traffic.lost_requests,
            lost_answers: traffic.lost_answers,
            retries: traffic.retries,
            retries_after: traffic.retries_after,
            pauses: traffic.pauses,
            ..Self::default()
        };
        for machine in machines {
            let produced: BTreeSet<&StatusKey> = machine.produced.iter().collect();
            figures.messages += produced.len();
            figures.dead_letters += machine.dead_letters.len();
            figures.pending += machine.pending.len();
            figures.unfinished += machine.unfinished;
            figures.crashes += u64::from(machine.crashes);
            figures.reboots += u64::from(machine.reboots);
            figures.simulated = figures.simulated.max(machine.elapsed);
            let dead: BTreeSet<&StatusKey> = machine.dead_letters.iter().collect();
            figures.lost += produced
                .iter()
                .filter(|k| !collector.holds(machine.index, k) && !dead.contains(*k))
                .count();
            figures.unexpected += collector
                .records(machine.index)
                .filter(|m| !produced.contains(&m.key))
                .count();
        }
        figures
    }
}

impl fmt::Display for FleetFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} machines, {} messages, {} records (distinct keys), {} duplicates dropped, \
             {} requests ({} while down, {} lost before the collector, {} answers lost after it), \
             {} retries ({} with a wait), {} pauses, {} crashes, {} reboots, {} dead letters, \
             {} pending, {} lost, {} unexpected, {} unfinished jobs, {:.1} h simulated (longest)",
            self.machines,
            self.messages,
            self.stored,
            self.duplicates,
            self.requests,
            self.down,
            self.lost_requests,
            self.lost_answers,
            self.retries,
            self.retries_after,
            self.pauses,
            self.crashes,
            self.reboots,
            self.dead_letters,
            self.pending,
            self.lost,
            self.unexpected,
            self.unfinished,
            self.simulated.as_secs_f64() / 3600.0,
        )
    }
}

/// What a fleet run did: every machine's summary, the collector, the figures, and every
/// problem found.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    machines: Vec<MachineSummary>,
    collector: Collector,
    figures: FleetFigures,
    problems: Vec<String>,
}

impl FleetOutcome {
    /// Every machine's summary, by index.
    pub fn machines(&self) -> &[MachineSummary] {
        &self.machines
    }

    /// The collector, as the run left it.
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// The run in figures.
    pub fn figures(&self) -> &FleetFigures {
        &self.figures
    }

    /// Every problem found, machine by machine: a broken promise of a machine's run (see
    /// [`Outcome::violations`](super::Outcome::violations)), a run that did not become idle, a
    /// status message lost (neither held by the collector nor a dead letter), held by the
    /// collector but produced by no machine, held and dead-lettered both, or left pending; the
    /// store's, the histories' and the trace's accounts disagreeing. Empty when all held.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Panics, with the first problems and the figures, if any problem was found.
    #[track_caller]
    pub fn assert_delivered(&self) {
        if !self.problems.is_empty() {
            let shown: Vec<&str> = self.problems.iter().take(20).map(String::as_str).collect();
            panic!(
                "fleet: {} problem(s):\n  {}\nfigures: {}",
                self.problems.len(),
                shown.join("\n  "),
                self.figures
            );
        }
    }
}
