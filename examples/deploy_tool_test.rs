//! A deployment tool tests its own policies with the simulator (feature `testkit`), without a
//! real machine: reboots, agent crashes, absent users and lost notices in a few lines each.
//!
//! The tool here ("acme-deploy") turns its catalogue into [`JobSpec`]s; its policies are claims
//! about those specs. In a real tool these checks are `#[test]`s; here they run as an example:
//!
//! ```sh
//! cargo run --features testkit --example deploy_tool_test
//! ```

use std::time::Duration;

use jobstate::testkit::simulator::{Chaos, Happening, Program, Scenario, check};
use jobstate::{ExitCodePolicy, JobId, JobSpec, RebootBehaviour, StateKind};

/// The tool's policy for OS upgrades: they restart the machine themselves, and a detection
/// check confirms them after the restart.
fn os_upgrade(id: &str) -> JobSpec {
    JobSpec::new(JobId::new(id).expect("a valid id"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true)
        .with_max_run_time(Duration::from_secs(4 * 3600))
}

/// The tool's policy for MSI installers: they may ask for a restart (3010), under the Windows
/// Installer table (the default table on Unix is Unix's).
fn msi_installer(id: &str) -> JobSpec {
    JobSpec::new(JobId::new(id).expect("a valid id"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_exit_codes(ExitCodePolicy::windows_installer())
}

fn main() {
    let upgrade = os_upgrade("win11-24h2");
    let installer = msi_installer("office-ltsc");

    // Policy 1: whatever point the agent crashes at, my upgrade runs its program once.
    let points = Scenario::new(1)
        .no_user()
        .no_notices()
        .job(upgrade.clone(), Program::restarts_machine())
        .crash_everywhere(|outcome| {
            assert_eq!(outcome.launches(upgrade.id()), 1);
            assert_eq!(outcome.state(upgrade.id()), Some(StateKind::Completed));
            outcome.assert_invariants();
        });
    println!("policy 1: the upgrade ran once at each of {points} crash points");

    // Policy 2: my installer's 3010 is not reported as a failure, even with an agent crash
    // anywhere.
    let points = Scenario::new(2)
        .job(installer.clone(), Program::exits(3010))
        .crash_everywhere(|outcome| {
            let reported = outcome.reported(installer.id());
            assert_eq!(reported, [StateKind::AwaitingReboot, StateKind::Completed]);
        });
    println!("policy 2: 3010 reported as success at each of {points} crash points");

    // Policy 3: in randomized worlds (crashes, power cuts, lost notices, clock jumps, users
    // coming and going, a flaky site server, restarts that do not come), the upgrade never runs
    // twice. The tool's agent unit sets systemd's `KillMode=process`, so an agent crash leaves
    // the upgrade running. A failure prints its seed: JOBSTATE_SIM_SEED=<seed> replays it.
    let seeds = check(200, |scenario| {
        let outcome = scenario
            .chaos(Chaos::all().kill_mode(false))
            .job(upgrade.clone(), Program::restarts_machine())
            .job(installer.clone(), Program::exits(3010))
            .run_until_idle();
        outcome.assert_invariants();
        assert!(outcome.launches(upgrade.id()) <= 1);
    });
    println!("policy 3: the upgrade never ran twice in {seeds} randomized worlds");

    // Policy 4: why the unit says `KillMode=process`. Under systemd's default
    // (`control-group`), an agent crash kills the upgrade with it: that attempt ends without a
    // result, the detection check finds nothing, and the upgrade runs again, as it must. It never
    // runs again after it did its work, and never stays stuck.
    let killed = Scenario::new(4)
        .programs_die_with_agent()
        .job(upgrade.clone(), Program::restarts_machine())
        .at(Duration::from_secs(5 * 60), Happening::AgentCrash)
        .run_until_idle();
    killed.assert_invariants();
    assert_eq!(killed.launches(upgrade.id()), 2);
    assert_eq!(killed.state(upgrade.id()), Some(StateKind::Completed));
    println!(
        "policy 4: under KillMode=control-group an agent crash ran the upgrade {} times",
        killed.launches(upgrade.id())
    );
}
