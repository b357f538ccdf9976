//! `liandong-gateway`: parses the command line, loads the configuration,
//! and runs the gateway (or applies migrations). A bad configuration prints
//! one line to stderr and exits 64.

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
    },
    /// Applies pending database migrations and exits.
    Migrate {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

const EX_USAGE: u8 = 64;
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
    let (Command::Serve { config } | Command::Migrate { config }) = &cli.command;
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
            Command::Serve { .. } => serve(config).await,
            Command::Migrate { .. } => migrate(config).await,
        }
    })
}

async fn serve(config: GatewayConfig) -> ExitCode {
    let listen = config.listen;
    let prepared = match liandong_gateway::prepare(config).await {
        Ok(prepared) => prepared,
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
