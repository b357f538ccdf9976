//! The fault harness's short run, once per backend, with every fault the
//! backend allows: real gateway and adapter processes, faults injected under
//! load, and the history checked against the final store. Any violation
//! fails the test with the harness's report.
//!
//! Run as root: the store is put on a tmpfs the harness mounts (without
//! it the full-store fault reports itself not available). PostgreSQL:
//! `LIANDONG_TEST_POSTGRES_URL`; its run skips when the server is
//! unreachable unless `LIANDONG_REQUIRE_POSTGRES=1`.

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
            .all(|r| r.fault.is_none() || r.not_applicable || r.injected > 0),
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
    let url = std::env::var("LIANDONG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| liandong_tests::faults::bed::DEFAULT_POSTGRES_URL.to_owned());
    sqlx::any::install_default_drivers();
    if let Err(error) = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await {
        assert!(
            !std::env::var("LIANDONG_REQUIRE_POSTGRES").is_ok_and(|v| v == "1"),
            "PostgreSQL at {url} is required but unreachable: {error}"
        );
        eprintln!("PostgreSQL at {url} unreachable ({error}); skipping");
        return;
    }
    short_run(Backend::Postgres).await;
}
