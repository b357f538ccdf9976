//! `liandong-adapter`: parses the command line, resolves the gateway
//! settings, sets up logging to standard error (filter: `LIANDONG_LOG`,
//! default `warn`) and runs the command from the library, mapping its
//! error to the exit code. Standard output carries only the command's JSON
//! lines; this file must never print anything else there.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use liandong_adapter::cli::{Cli, Command};
use liandong_adapter::{CommandError, exit, send, tail};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Exit code for a failure of the program itself (EX_SOFTWARE).
const SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version are not errors.
            return ExitCode::from(if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_tracing();
    match run(cli) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("{}", error.message());
            ExitCode::from(error.exit_code())
        }
        Err(error) => {
            eprintln!("liandong-adapter: {error:#}");
            ExitCode::from(SOFTWARE)
        }
    }
}

/// Runs the command; the outer error is the program's own failure.
fn run(cli: Cli) -> anyhow::Result<Result<(), CommandError>> {
    let settings = match cli.gateway.settings() {
        Ok(settings) => settings,
        Err(error) => return Ok(Err(error.into())),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(async {
        match &cli.command {
            Command::Send(args) => send::send(&settings, args.input()).await,
            Command::Tail(args) => tail::tail(&settings, args).await.map(drop),
        }
    }))
}

fn init_tracing() {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .with_env_var("LIANDONG_LOG")
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
