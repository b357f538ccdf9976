//! `liandong-gateway`: parses the command line, loads the configuration,
//! and runs the gateway (or applies migrations, or verifies the store). A
//! bad configuration prints one line to stderr and exits 64.
//!
//! Exit codes: 0 success; 64 bad configuration or usage; 65 the store's
//! integrity check found a problem (`verify-store`, or `serve` refusing to
//! start without `--allow-integrity-failures`); 69 the database, the
//! listen address or another service is unavailable; 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use liandong_gateway::config::GatewayConfig;
use liandong_gateway::store::Store;

/// The Liandong gateway: mutual-TLS exchange of case notifications.
#[derive(Debug, Parser)]
#[command(name = "liandong-gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gateway until SIGTERM or SIGINT.
    Serve {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Start even when the start-up integrity check finds stored
        /// notifications changed, missing or out of order. Logged at error
        /// level; failing rows are still never served.
        #[arg(long)]
        allow_integrity_failures: bool,
    },
    /// Applies pending database migrations and exits.
    Migrate {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Scans every stored notification and reports rows changed, missing
    /// or out of order. Exits 0 when clean, 65 when a problem was found.
    VerifyStore {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Print the report as JSON (no progress bar).
        #[arg(long)]
        json: bool,
    },
}

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIANDONG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("liandong-gateway: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let (Command::Serve { config, .. }
    | Command::Migrate { config }
    | Command::VerifyStore { config, .. }) = &cli.command;
    let config = match GatewayConfig::load(config, |key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("liandong-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                allow_integrity_failures,
                ..
            } => {
                serve(
                    config,
                    liandong_gateway::StartOptions {
                        allow_integrity_failures,
                    },
                )
                .await
            }
            Command::Migrate { .. } => migrate(config).await,
            Command::VerifyStore { json, .. } => verify_store(config, json).await,
        }
    })
}

async fn serve(config: GatewayConfig, options: liandong_gateway::StartOptions) -> ExitCode {
    let listen = config.listen;
    let prepared = match liandong_gateway::prepare_with(config, options).await {
        Ok(prepared) => prepared,
        Err(error @ liandong_gateway::StartError::Integrity(_)) => {
            eprintln!(
                "liandong-gateway: {error}; run verify-store for the full report, or start with --allow-integrity-failures"
            );
            return ExitCode::from(EX_DATAERR);
        }
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            return ExitCode::from(if error.is_config_error() {
                EX_USAGE
            } else {
                EX_UNAVAILABLE
            });
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("liandong-gateway: cannot listen on {listen}: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    spawn_reload_on_sighup(prepared.gateway().clone(), prepared.config().clone());
    match listener.local_addr() {
        Ok(addr) => {
            tracing::info!(%addr, "listening");
            // A stable line on stdout, for scripts and tests.
            println!("liandong-gateway listening on https://{addr}");
        }
        Err(error) => tracing::warn!(%error, "cannot read the bound address"),
    }
    match liandong_gateway::serve(prepared, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: GatewayConfig) -> ExitCode {
    match Store::connect(&config.database_url, 1).await {
        Ok(store) => {
            store.close().await;
            println!("liandong-gateway: database is up to date");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// Rows from which `verify-store` shows a progress bar (on a terminal).
const PROGRESS_BAR_ROWS: u64 = 10_000;

/// A progress bar on stderr, drawn only for large stores on a terminal.
struct Bar(indicatif::ProgressBar);

impl liandong_gateway::store::verify::Progress for Bar {
    fn start(&self, rows: u64) {
        use std::io::IsTerminal;
        if rows >= PROGRESS_BAR_ROWS && std::io::stderr().is_terminal() {
            self.0
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        self.0.set_length(rows);
    }

    fn advance(&self) {
        self.0.inc(1);
    }
}

async fn verify_store(config: GatewayConfig, json: bool) -> ExitCode {
    let store = match Store::connect(&config.database_url, 2).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let bar = indicatif::ProgressBar::hidden();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("verifying {bar:40} {pos}/{len} rows ({eta} left)")
    {
        bar.set_style(style);
    }
    let result = if json {
        store
            .verify(&liandong_gateway::store::verify::NoProgress)
            .await
    } else {
        store.verify(&Bar(bar.clone())).await
    };
    bar.finish_and_clear();
    store.close().await;
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    // A reader that stops early (`| head`) is not an error of the check.
    if let Err(error) = print_report(&report, json)
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("liandong-gateway: cannot write the report: {error}");
        return ExitCode::FAILURE;
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_DATAERR)
    }
}

/// Writes the report to stdout: JSON, or a summary line and one line per
/// problem.
fn print_report(report: &liandong_gateway::store::VerifyReport, json: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", report.summary())?;
        for problem in &report.changed {
            writeln!(
                out,
                "changed       {:>12}  {}",
                problem.sequence, problem.problem
            )?;
        }
        for range in &report.missing {
            writeln!(
                out,
                "missing       {:>12}  through {}",
                range.first, range.last
            )?;
        }
        for problem in &report.out_of_order {
            writeln!(
                out,
                "out of order  {:>12}  {}",
                problem.sequence, problem.problem
            )?;
        }
        if let Some(state) = &report.state {
            writeln!(out, "state         {state}")?;
        }
    }
    out.flush()
}

/// On SIGHUP, loads the registry and policy again; a broken file keeps the
/// rules in force and is reported.
fn spawn_reload_on_sighup(
    gateway: std::sync::Arc<liandong_gateway::Gateway>,
    config: GatewayConfig,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGHUP; reload needs a restart");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading registry and policy");
            if let Err(error) = gateway.reload(&config) {
                tracing::error!(%error, "reload refused; the previous registry and policy stay in force");
            }
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
