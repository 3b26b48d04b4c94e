//! CI smoke check: every system answers every cell of a tiny run correctly, in one
//! process; one Lightning system does so with its server in a child process, and through
//! a `lan` relay. Timings are recorded but never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_benches::wan::{run_wan, WanPlan};
use lightning_benches::{run, write_outputs, Options, Plan, SYSTEM_NAMES};

fn options() -> Options {
    Options {
        server_exe: Some(env!("CARGO_BIN_EXE_lightning-bench").into()),
        verbose: false,
    }
}

#[test]
fn two_processes_answer_every_cell() {
    let plan = Plan {
        only: vec!["lightning-tokio".into()],
        ..Plan::tiny()
    };
    assert!(plan.two_process, "two processes are the default");
    let sizes = plan.sizes.clone();
    let report = run(plan, options()).unwrap();
    assert!(report.all_correct(), "failures: {:#?}", report.failures);
    assert_eq!(report.processes, "two processes");
    let setup = &report.setup[0];
    assert_eq!(setup.system, "lightning-tokio");
    assert!(setup.setup.n > 0, "no first-reply sample");
    assert!(
        setup.authenticated.as_ref().unwrap().n > 0,
        "no authenticated sample"
    );
    for size in &sizes {
        let t = report
            .throughput
            .iter()
            .find(|c| c.size == *size)
            .unwrap_or_else(|| panic!("no throughput at {size}"));
        assert!(t.requests > 0, "no request answered at {size}");
        assert!(t.server_cpu_us_per_req.is_some(), "no server CPU reading");
        assert!(report
            .latency
            .iter()
            .any(|c| c.size == *size && c.latency.n > 0));
    }
    assert!(report.fanout.is_empty() && report.connections.is_empty());
}

#[test]
fn wan_lan_profile_answers_every_cell() {
    let plan = WanPlan {
        only: vec!["lightning-tokio".into()],
        ..WanPlan::tiny()
    };
    let report = run_wan(plan, options()).unwrap();
    assert!(report.all_correct(), "failures: {:#?}", report.failures);
    assert_eq!(report.cells.len(), 1);
    let cell = &report.cells[0];
    assert_eq!(
        (cell.profile.as_str(), cell.system.as_str()),
        ("lan", "lightning-tokio")
    );
    assert!(cell.authenticated.n > 0 && cell.first_reply.n > 0);
    assert!(cell.latency_1k.as_ref().unwrap().latency.n > 0);
    assert!(cell.throughput_1k_c32.as_ref().unwrap().requests > 0);
    assert!(cell.echo_1mb.as_ref().unwrap().latency.n > 0);
    let relay = cell.relay.unwrap();
    assert!(relay.forwarded > 0, "nothing went through the relay");
    assert!(report.relay_ceiling.as_ref().unwrap().round_trips_per_s > 0.0);
    let md = lightning_benches::wan::markdown(&report);
    assert!(md.contains("Every system answered every request correctly."));
}

#[test]
fn every_system_answers_every_cell() {
    let plan = Plan {
        two_process: false,
        ..Plan::tiny()
    };
    let sizes = plan.sizes.clone();
    let sweep = plan.sweep.clone();
    let large_sweep = plan.large_sweep.clone();
    assert!(
        !large_sweep.is_empty(),
        "the tiny plan must exercise the large sweep"
    );
    let report = run(plan, options()).unwrap();
    assert!(report.all_correct(), "failures: {:#?}", report.failures);

    for system in SYSTEM_NAMES {
        let setup = report.setup.iter().find(|c| c.system == system).unwrap();
        assert!(setup.setup.n > 0, "{system}: no setup samples");
        for size in &sizes {
            let t = report
                .throughput
                .iter()
                .find(|c| c.system == system && c.size == *size)
                .unwrap_or_else(|| panic!("{system}: no throughput at {size}"));
            assert!(t.requests > 0, "{system}: no request answered at {size}");
            let l = report
                .latency
                .iter()
                .find(|c| c.system == system && c.size == *size)
                .unwrap_or_else(|| panic!("{system}: no latency at {size}"));
            assert!(l.latency.n > 0);
        }
        for c in &sweep {
            assert!(report
                .sweep
                .iter()
                .any(|x| x.system == system && x.concurrency == *c && x.requests > 0));
        }
        for size in lightning_benches::LARGE_SWEEP_SIZES {
            for c in &large_sweep {
                assert!(
                    report.large_sweep.iter().any(|x| x.system == system
                        && x.size == size
                        && x.concurrency == *c
                        && x.requests > 0),
                    "{system}: no large sweep cell at {size} B, c={c}"
                );
            }
        }
        let fan = report.fanout.iter().find(|c| c.system == system).unwrap();
        assert!(fan.round.n > 0, "{system}: no fan-out round");
        let conns = report
            .connections
            .iter()
            .find(|c| c.system == system)
            .unwrap();
        assert_eq!(conns.measured_in, "server process");
        assert!(conns.rss_after > 0, "{system}: no server memory reading");
    }

    let dir = std::env::temp_dir().join(format!("lightning-bench-{}", std::process::id()));
    write_outputs(&report, &dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["mode"], "tiny");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("Every system answered every request correctly."));
    for chart in [
        "throughput_by_payload.svg",
        "latency_p50_by_payload.svg",
        "latency_p99_by_payload.svg",
        "throughput_by_concurrency.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("lightning-tokio"),
            "{chart}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
