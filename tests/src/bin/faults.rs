//! `liandong-faults`: the fault harness with its history checker, as a
//! bounded command.
//!
//! Runs the real gateway and an adapter daemon under load, injects the
//! selected faults from a seeded schedule, checks the recorded history
//! against the final store, prints a summary table (fault × outcome,
//! operations, violations) ending with `N passed, M failed`, and exits
//! non-zero on any violation.
//!
//! `cargo run --release -p liandong-tests --bin liandong-faults -- \
//!   --backend sqlite --duration 60s --seed 7 --faults kill,term,full,lock,stall,tamper,registry`
//!
//! Run as root: the store is put on a small tmpfs it mounts.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use liandong_tests::faults::{Backend, Fault, RunConfig, run};

/// Fault harness for the Liandong gateway.
#[derive(Debug, Parser)]
struct Args {
    /// `sqlite` or `postgres` (the local server, or LIANDONG_TEST_POSTGRES_URL).
    #[arg(long, default_value = "sqlite", value_parser = |s: &str| s.parse::<Backend>())]
    backend: Backend,
    /// How long to keep injecting faults (`90s`, `5m`); the run also goes on
    /// until every selected fault was injected once.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the schedule and of the load.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated faults: kill,term,full,lock,pgrestart,stall,tamper,registry (or `all`).
    #[arg(long, default_value = "all")]
    faults: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("unknown unit in {text:?} (s, m or ms)")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let faults = match Fault::parse_list(&args.faults) {
        Ok(faults) => faults,
        Err(error) => {
            eprintln!("liandong-faults: --faults: {error}");
            return ExitCode::from(64);
        }
    };
    let faults: Vec<Fault> = faults
        .into_iter()
        .filter(|f| f.applies_to(args.backend))
        .collect();
    let config = RunConfig {
        backend: args.backend,
        duration: args.duration,
        seed: args.seed,
        faults,
    };
    match run(config).await {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("liandong-faults: the run could not be completed: {error:#}");
            ExitCode::from(2)
        }
    }
}
