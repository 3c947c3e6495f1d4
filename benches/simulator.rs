//! Simulated worlds per second: a deployment tool runs thousands of them in its unit tests.
//!
//! One world: a two-job scenario (an OS upgrade that restarts the machine itself, with a
//! detection check, and an installer that asks for a restart with 3010) in a randomized world
//! with up to three agent crashes at random commits (killing the agent's programs or not, per
//! seed) and up to two reboots (power cuts or orderly); run until idle over the memory store, the
//! invariants checked. Each iteration is a new seed, so the figure is an average over many
//! worlds.
//!
//! A fleet: 100 such machines (the installer under the Windows Installer exit codes) reporting to
//! one shared collector through a flaky network (lost requests and answers, retries, pauses,
//! outages); each iteration a new fleet seed. Criterion's throughput is machines per second.
//!
//! `cargo bench --features testkit --bench simulator`. Criterion reports the time per world;
//! worlds per second per core is its inverse (the simulator is single-threaded). Goal: at least
//! 10,000 per core.

use std::cell::Cell;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jobstate::testkit::simulator::{Chaos, Fleet, Network, Program, Scenario};
use jobstate::{ExitCodePolicy, JobId, JobSpec, RebootBehaviour};

fn two_jobs(c: &mut Criterion) {
    let upgrade = JobSpec::new(JobId::new("os-upgrade").expect("valid id"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let installer = JobSpec::new(JobId::new("msi-installer").expect("valid id"))
        .with_reboot(RebootBehaviour::MayRequest);
    // Crashes (killing the agent's programs or not) and reboots (power cuts and orderly ones).
    let chaos = Chaos::none().crashes(true).power_cuts(true).kill_mode(true);
    let seed = Cell::new(0u64);
    let mut group = c.benchmark_group("simulator");
    group.throughput(Throughput::Elements(1));
    group.bench_function("two_jobs_crashes_and_reboots", |b| {
        b.iter(|| {
            seed.set(seed.get() + 1);
            let outcome = Scenario::new(seed.get())
                .chaos(chaos)
                .job(upgrade.clone(), Program::restarts_machine())
                .job(installer.clone(), Program::exits(3010))
                .run_until_idle();
            assert!(outcome.violations().is_empty(), "seed {}", seed.get());
            outcome.reboots()
        })
    });
    group.finish();
}

fn fleet(c: &mut Criterion) {
    const MACHINES: usize = 100;
    let upgrade = JobSpec::new(JobId::new("os-upgrade").expect("valid id"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let installer = JobSpec::new(JobId::new("msi-installer").expect("valid id"))
        .with_exit_codes(ExitCodePolicy::windows_installer())
        .with_reboot(RebootBehaviour::MayRequest);
    let chaos = Chaos::none().crashes(true).power_cuts(true).kill_mode(true);
    let seed = Cell::new(0u64);
    let mut group = c.benchmark_group("simulator");
    group.throughput(Throughput::Elements(MACHINES as u64));
    group.sample_size(20);
    group.bench_function("fleet_of_100_flaky_network", |b| {
        b.iter(|| {
            seed.set(seed.get() + 1);
            let machine = Scenario::new(seed.get())
                .chaos(chaos)
                .job(upgrade.clone(), Program::restarts_machine())
                .job(installer.clone(), Program::exits(3010));
            let outcome = Fleet::new(MACHINES, machine)
                .network(Network::flaky())
                .run();
            assert!(outcome.problems().is_empty(), "fleet seed {}", seed.get());
            outcome.figures().stored
        })
    });
    group.finish();
}

criterion_group!(benches, two_jobs, fleet);
criterion_main!(benches);
