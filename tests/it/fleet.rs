//! A fleet of simulated machines reporting to one shared collector through a flaky network
//! (issue 13 point 6): every status message any machine produced is held by the collector
//! exactly once, nothing is left pending, nothing is given up on, nothing unexpected arrives.
//!
//! `JOBSTATE_FLEET_MACHINES=20000 cargo test --release --all-features --test it fleet` runs
//! the long run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jobstate::report::DeliveryPolicy;
use jobstate::testkit::simulator::{Chaos, Fleet, Network, Program, Scenario};
use jobstate::{RebootBehaviour, RetryPolicy, StatusKey};

use crate::common::*;

/// How many machines the default run has; `JOBSTATE_FLEET_MACHINES` overrides it.
const MACHINES: usize = 1_000;

fn machines() -> usize {
    std::env::var("JOBSTATE_FLEET_MACHINES")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(MACHINES)
}

/// One machine's world: an OS upgrade that restarts the machine itself (with a detection
/// check), an installer that asks for a restart (3010), and a service pack that fails once
/// (1603) and then succeeds; every kind of chaos but the single-machine site server's failures
/// (the network fails instead).
fn machine(seed: u64) -> Scenario {
    let quick = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(60),
        multiplier: 2,
        max_backoff: Duration::from_secs(600),
    };
    Scenario::new(seed)
        .chaos(Chaos::all().sink_failures(false))
        .job(
            msi_job(job("os-upgrade"))
                .with_reboot(RebootBehaviour::RestartsMachine)
                .with_verify_after_reboot(true),
            Program::restarts_machine(),
        )
        .job(
            msi_job(job("msi-installer")).with_reboot(RebootBehaviour::MayRequest),
            Program::exits(3010),
        )
        .job(
            msi_job(job("service-pack")).with_retry(quick),
            Program::exits(1603).then(Program::exits(0)),
        )
}

#[test]
fn a_fleet_reports_every_message_once_through_a_flaky_network() {
    let n = machines();
    let started = Instant::now();
    // The shipped delivery policy, give-up bounds included (20 failures, 7 days): the network's
    // "retry" answers count toward them, and none may be reached.
    let outcome = Fleet::new(
        n,
        machine(0xF1EE7).delivery_policy(DeliveryPolicy::default()),
    )
    .network(Network::flaky())
    .run();
    let elapsed = started.elapsed();
    let figures = *outcome.figures();
    report_figures(&format!(
        "fleet: {figures}; {:.1} s ({:.0} machines/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    ));
    outcome.assert_delivered();

    // Exactly one record per key produced, compared here too, machine by machine, with the keys
    // that entered each machine's outbox (as its store acknowledged them).
    let collector = outcome.collector();
    let mut produced_total = 0;
    for machine in outcome.machines() {
        let produced: BTreeSet<&StatusKey> = machine.produced.iter().collect();
        assert_eq!(
            produced.len(),
            machine.produced.len(),
            "machine {}",
            machine.index
        );
        let held: BTreeSet<&StatusKey> = collector.records(machine.index).map(|m| &m.key).collect();
        assert_eq!(
            held, produced,
            "machine {} (seed {:#x})",
            machine.index, machine.seed
        );
        assert!(machine.pending.is_empty(), "machine {}", machine.index);
        assert!(machine.dead_letters.is_empty(), "machine {}", machine.index);
        assert_eq!(machine.unfinished, 0, "machine {}", machine.index);
        produced_total += produced.len();
    }
    assert_eq!(figures.machines, n);
    assert_eq!(figures.messages, produced_total);
    assert_eq!(figures.stored, produced_total);
    assert_eq!(collector.len(), produced_total);
    assert_eq!((figures.lost, figures.unexpected), (0, 0));
    assert_eq!((figures.pending, figures.dead_letters), (0, 0));
    // Every machine reports its three jobs at least, and the two waits for a reboot.
    assert!(produced_total >= 5 * n);
    // The network did fail in every way, and the collector saw the resent copies.
    assert!(figures.lost_requests > 0 && figures.lost_answers > 0);
    assert!(figures.retries > 0 && figures.retries_after > 0 && figures.pauses > 0);
    assert!(figures.duplicates > 0 && figures.crashes > 0 && figures.reboots > 0);
    if n >= 100 {
        assert!(figures.down > 0, "no request met an outage");
    }
}

#[test]
fn a_fleet_run_is_deterministic() {
    let run = || {
        let outcome = Fleet::new(20, machine(5)).run();
        outcome.assert_delivered();
        *outcome.figures()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_reliable_network_delivers_each_message_once() {
    let outcome = Fleet::new(50, machine(9).chaos(Chaos::none()))
        .network(Network::reliable())
        .run();
    outcome.assert_delivered();
    let figures = outcome.figures();
    assert_eq!(figures.stored, figures.messages);
    assert!(figures.requests as usize <= figures.messages);
    assert_eq!(
        (figures.duplicates, figures.retries, figures.pauses),
        (0, 0, 0)
    );
    assert_eq!(
        (figures.lost_requests, figures.lost_answers, figures.down),
        (0, 0, 0)
    );
}

#[test]
fn lost_answers_are_resent_and_dropped_as_duplicates() {
    let outcome = Fleet::new(50, machine(11).chaos(Chaos::none()))
        .network(Network::reliable().loses_answers(50))
        .run();
    outcome.assert_delivered();
    let figures = outcome.figures();
    assert!(figures.lost_answers > 0);
    // Every lost answer was for a request the collector stored: each one comes back a duplicate.
    assert!(figures.duplicates > 0);
    assert_eq!((figures.lost, figures.pending), (0, 0));
}

#[test]
fn messages_given_up_on_are_dead_letters_never_lost() {
    // A collector that answers "retry" to most messages, and an agent that gives up at the
    // second failure: some messages are given up on. Each is kept in its machine's dead
    // letters, the collector never holds it, and nothing is counted lost.
    let impatient = DeliveryPolicy {
        give_up_after_attempts: Some(2),
        ..DeliveryPolicy::default()
    };
    let outcome = Fleet::new(
        50,
        machine(13).chaos(Chaos::none()).delivery_policy(impatient),
    )
    .network(Network::reliable().retries(60))
    .run();
    outcome.assert_delivered();
    let figures = outcome.figures();
    assert!(figures.dead_letters > 0, "{figures}");
    assert_eq!(figures.stored + figures.dead_letters, figures.messages);
    for machine in outcome.machines() {
        for key in &machine.dead_letters {
            assert!(machine.produced.contains(key));
            assert!(!outcome.collector().holds(machine.index, key));
        }
    }
    assert_eq!(
        (figures.lost, figures.unexpected, figures.pending),
        (0, 0, 0)
    );
}
