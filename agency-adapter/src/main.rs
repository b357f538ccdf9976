//! `liandong-adapter`: parses the command line, resolves the settings, sets
//! up logging to standard error (filter: `LIANDONG_LOG`, default `warn`;
//! `info` for `run`; `--log-format pretty|json`, no colour codes off a
//! terminal), installs the ring crypto provider and runs the
//! command from the library, mapping its error to the exit code. A bad
//! configuration prints one line and exits 64. Standard output carries only
//! the commands' JSON lines (and `status`'s report); this file must never
//! print anything else there.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use liandong_adapter::cli::{Cli, Command, LogFormat};
use liandong_adapter::commands::{http_token, send, status, tail};
use liandong_adapter::daemon::Daemon;
use liandong_adapter::{CommandError, ConfigError, DaemonConfig, exit, shutdown};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

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
    let daemon = matches!(cli.command, Command::Run(_));
    init_tracing(
        if daemon {
            LevelFilter::INFO
        } else {
            LevelFilter::WARN
        },
        cli.log_format,
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = if daemon { run_daemon(&cli) } else { run(cli) };
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(error)) => {
            eprintln!("{}", error.message());
            ExitCode::from(error.exit_code())
        }
        Err(error) => {
            eprintln!("liandong-adapter: {error:#}");
            ExitCode::from(exit::SOFTWARE)
        }
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The `--config` file of `run` and `status`, which need one.
fn daemon_config(cli: &Cli, command: &str) -> Result<DaemonConfig, CommandError> {
    let Some(path) = &cli.gateway.config else {
        return Err(ConfigError::InvalidFlag {
            flag: "--config",
            reason: format!("`{command}` needs the daemon's config file: --config FILE"),
        }
        .into());
    };
    Ok(DaemonConfig::load(path, cli.gateway.flags())?)
}

/// `run`: the daemon, until SIGTERM or SIGINT (exit 0).
fn run_daemon(cli: &Cli) -> anyhow::Result<Result<u8, CommandError>> {
    let config = match daemon_config(cli, "run") {
        Ok(config) => config,
        Err(error) => return Ok(Err(error)),
    };
    let file = config.file.display().to_string();
    let agency = config.agency.to_string();
    runtime(2)?.block_on(async {
        let daemon = match Daemon::prepare(config).await {
            Ok(daemon) => daemon,
            Err(error) => {
                eprintln!("liandong-adapter: {error}");
                return Ok(Ok(error.exit_code()));
            }
        };
        let http = daemon
            .http_addr()
            .map(|addr| format!(", HTTP source on http://{addr}"))
            .unwrap_or_default();
        eprintln!(
            "liandong-adapter running for {agency} (config {file}, signing key {}{http})",
            daemon.key_id()
        );
        daemon.run(shutdown::signal()).await;
        Ok(Ok(exit::OK))
    })
}

/// The other commands; the outer error is the program's own failure.
fn run(cli: Cli) -> anyhow::Result<Result<u8, CommandError>> {
    let runtime = runtime(1)?;
    Ok(runtime.block_on(async {
        match &cli.command {
            Command::Send(args) => send::send_command(&cli.gateway, args)
                .await
                .map(|()| exit::OK),
            Command::Tail(args) => {
                let settings = cli.gateway.settings()?;
                tail::tail(&settings, args).await.map(|_| exit::OK)
            }
            Command::Status(args) => {
                let config = daemon_config(&cli, "status")?;
                let healthy = status::status(&config, args.json, &mut std::io::stdout()).await?;
                Ok(if healthy { exit::OK } else { exit::UNHEALTHY })
            }
            Command::HttpToken(_) => {
                let config = daemon_config(&cli, "http-token")?;
                http_token::http_token(&config, &mut std::io::stdout()).map(|()| exit::OK)
            }
            Command::Run(_) => unreachable!("run is handled by run_daemon"),
        }
    }))
}

/// Logs on standard error in `format`; colour codes only when standard
/// error is a terminal and `NO_COLOR` is unset or empty.
fn init_tracing(default: LevelFilter, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .with_env_var("LIANDONG_LOG")
        .from_env_lossy();
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Pretty => logs.with_ansi(ansi).with_target(false).init(),
        LogFormat::Json => logs
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
