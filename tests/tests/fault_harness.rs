//! The fault harness's short run, once per backend, with every fault the
//! backend allows: real gateway and adapter processes, faults injected under
//! load, and the history checked against the final store. Any violation
//! fails the test with the harness's report.

use std::time::Duration;

use liandong_tests::faults::{Backend, Fault, RunConfig, run};

async fn short_run(backend: Backend) {
    let config = RunConfig {
        backend,
        duration: Duration::from_secs(30),
        seed: 20_261_130,
        faults: Fault::ALL
            .into_iter()
            .filter(|f| f.applies_to(backend))
            .collect(),
    };
    let report = run(config).await.expect("the harness runs to the end");
    println!("{report}");
    assert!(
        report
            .rows
            .iter()
            .all(|r| r.not_applicable || r.injected > 0),
        "every fault was injected:\n{report}"
    );
    assert!(report.passed(), "violations:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_short_run_sqlite() {
    short_run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_harness_short_run_postgres() {
    short_run(Backend::Postgres).await;
}
