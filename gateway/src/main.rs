//! `liandong-gateway`: parses the command line, loads the configuration,
//! and runs the gateway (or applies migrations, verifies the store, copies
//! it to another database, fences sequences after a restore, or prints a
//! statistics report or the supervision signals). A bad configuration or a
//! bad date prints one line to stderr and exits 64.
//!
//! Exit codes: 0 success; 64 bad configuration or usage; 65 the store's
//! integrity check found a problem (`verify-store`, `audit verify`, or
//! `serve` refusing to start without `--allow-integrity-failures`), or
//! the store must not be served (an unfinished copy, a restore without a
//! fence); 69 the database, the listen address or another service is
//! unavailable; 75 `migrate-store`'s source changed during the copy; 1
//! anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use liandong_gateway::config::GatewayConfig;
use liandong_gateway::store::Store;

/// The Liandong gateway: mutual-TLS exchange of case notifications.
#[derive(Debug, Parser)]
#[command(name = "liandong-gateway", version)]
struct Cli {
    /// How log lines on standard error are written: `pretty` for people
    /// (colour only on a terminal, never with NO_COLOR set), `json` for
    /// one JSON object per line. The filter is LIANDONG_LOG (default
    /// `info`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = liandong_gateway::telemetry::ENV_LOG_FORMAT,
        default_value_t,
        ignore_case = true
    )]
    log_format: liandong_gateway::telemetry::LogFormat,
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
    /// Copies a whole store into an empty database, SQLite to PostgreSQL
    /// or back, in one transaction, then checks the copy as verify-store
    /// and audit verify would and compares it with the source. Stop every
    /// gateway on the source first. Exits 0 when copied and verified; 64
    /// when refused as given (same store, no source, target not empty);
    /// 65 when the source is not a store of this version or the copy
    /// does not verify; 69 when a database fails; 75 when the source
    /// changed during the copy. Nothing is copied unless it exits 0.
    MigrateStore {
        /// The store to copy: sqlite://FILE or postgres://…/DATABASE. Read
        /// in one snapshot, never changed.
        #[arg(long)]
        from: String,
        /// The empty database to copy into (a PostgreSQL database must
        /// exist; a SQLite file is created). Its schema is migrated first.
        #[arg(long)]
        to: String,
        /// The gateway's TOML configuration: only its signing key is used,
        /// to check the audit checkpoints' signatures on the copy.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the summary as JSON on stdout (progress lines on stderr,
        /// no progress bar).
        #[arg(long)]
        json: bool,
        /// Commit a copy whose checks find exactly the problems the
        /// source's find (a damaged store moved as it is).
        #[arg(long)]
        allow_integrity_failures: bool,
    },
    /// Raises the high-water mark after a store was restored from a
    /// backup, so that sequences agencies may already hold are never
    /// assigned again: the next notification gets N+1. Never lowers it;
    /// recorded in the store and the audit log. Exits 0 when fenced, 64
    /// when refused (N below the latest sequence, no reason).
    FenceSequences {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// The highest sequence any agency may have received (see
        /// docs/OPERATIONS.md, "Restoring a backup").
        #[arg(long)]
        above: u64,
        /// Why: which backup was restored, and where N was read.
        #[arg(long)]
        reason: String,
    },
    /// Checks the audit log: `audit verify`.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Prints the statistics of a period of local dates, counted over
    /// everything stored (the operator's view); `report signals` prints
    /// the supervision signals instead.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Report {
        #[command(subcommand)]
        what: Option<ReportCommand>,
        #[command(flatten)]
        period: ReportArgs,
    },
    /// Operator commands over the Operations service of a running gateway,
    /// with an operator certificate (no configuration file).
    Admin(liandong_gateway::admin::AdminArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The gateway's TOML configuration.
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// First local date of the period, YYYY-MM-DD.
    #[arg(long, required = true)]
    from: Option<String>,
    /// Last local date of the period (included), YYYY-MM-DD.
    #[arg(long, required = true)]
    to: Option<String>,
    /// Only notifications within this GB/T 2260 region (six digits).
    #[arg(long, default_value = "")]
    region: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Prints the supervision signals now: open breaches, stuck cases,
    /// penalties without transfer, transfers without filing, filed cases
    /// without progress.
    Signals {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Days in one state after which a case counts as stuck.
        #[arg(long, default_value_t = liandong_gateway::reports::signals::DEFAULT_STUCK_DAYS)]
        stuck_days: u32,
        /// Only cases within this GB/T 2260 region (six digits).
        #[arg(long, default_value = "")]
        region: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walks the audit chain and reports the first row changed, deleted,
    /// inserted or reordered, a log cut short, checkpoints that do not
    /// match or verify, and missing append-only triggers. Exits 0 when
    /// clean, 65 when a problem was found.
    Verify {
        /// The gateway's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Print the report as JSON (no progress bar).
        #[arg(long)]
        json: bool,
        /// A checkpoint file kept elsewhere, to check the log against.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
}

/// How `report` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// An aligned table.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// The proto3 JSON form of the message.
    Json,
}

impl Command {
    /// The configuration file the command reads (none for `admin`).
    fn config(&self) -> Option<&std::path::Path> {
        Some(match self {
            Self::Admin(_) | Self::MigrateStore { .. } => return None,
            Self::Serve { config, .. }
            | Self::Migrate { config }
            | Self::FenceSequences { config, .. }
            | Self::VerifyStore { config, .. }
            | Self::Audit {
                what: AuditCommand::Verify { config, .. },
            }
            | Self::Report {
                what: Some(ReportCommand::Signals { config, .. }),
                ..
            } => config,
            Self::Report { period, .. } => period
                .config
                .as_deref()
                .expect("clap requires --config without a subcommand"),
        })
    }
}

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("liandong-gateway: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("liandong-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config_path = match cli.command.config() {
        Some(path) => path,
        None if matches!(cli.command, Command::MigrateStore { .. }) => {
            let telemetry = match liandong_gateway::telemetry::init(cli.log_format, None) {
                Ok(telemetry) => telemetry,
                Err(error) => {
                    eprintln!("liandong-gateway: {error}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let code = runtime.block_on(migrate_store(cli.command));
            telemetry.shutdown();
            return code;
        }
        None => {
            let Command::Admin(args) = cli.command else {
                unreachable!("only admin and migrate-store read no configuration")
            };
            let telemetry = match liandong_gateway::telemetry::init(cli.log_format, None) {
                Ok(telemetry) => telemetry,
                Err(error) => {
                    eprintln!("liandong-gateway: {error}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let code = runtime.block_on(liandong_gateway::admin::run(args));
            telemetry.shutdown();
            return code;
        }
    };
    let config = match GatewayConfig::load(config_path, |key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // Logs start once the configuration is known: `[tracing]` may add
    // span export. Only `serve` exports; the one-shot commands log only.
    let exported = match cli.command {
        Command::Serve { .. } => config.tracing.as_ref(),
        _ => None,
    };
    let telemetry = match liandong_gateway::telemetry::init(cli.log_format, exported) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let code = runtime.block_on(async move {
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
            Command::FenceSequences { above, reason, .. } => {
                fence_sequences(config, above, &reason).await
            }
            Command::MigrateStore { .. } => unreachable!("migrate-store reads no configuration"),
            Command::VerifyStore { json, .. } => verify_store(config, json).await,
            Command::Audit {
                what:
                    AuditCommand::Verify {
                        json, checkpoint, ..
                    },
            } => audit_verify(config, json, checkpoint.as_deref()).await,
            Command::Report {
                what:
                    Some(ReportCommand::Signals {
                        stuck_days,
                        region,
                        format,
                        ..
                    }),
                ..
            } => signals(config, stuck_days, &region, format).await,
            Command::Report { period, .. } => report(config, &period).await,
            Command::Admin(_) => unreachable!("admin runs without a configuration"),
        }
    });
    // Outside the runtime: the exporter's last batch goes out on its own
    // thread.
    telemetry.shutdown();
    code
}

async fn serve(config: GatewayConfig, options: liandong_gateway::StartOptions) -> ExitCode {
    // Before anything can tell a supervisor the gateway is up.
    let shutdown = shutdown_signal();
    let listen = config.listen;
    let prepared = match liandong_gateway::prepare_with(config, options).await {
        Ok(prepared) => prepared,
        Err(liandong_gateway::StartError::NotServable(refusal)) => {
            eprintln!("liandong-gateway: {refusal}");
            return ExitCode::from(EX_DATAERR);
        }
        Err(error @ liandong_gateway::StartError::Integrity(_)) => {
            eprintln!(
                "liandong-gateway: {error}; run verify-store (or audit verify) for the full report, or start with --allow-integrity-failures"
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
    let mut prepared = prepared;
    if let Some(ops_listen) = prepared.config().ops.listen {
        let ops = match TcpListener::bind(ops_listen).await {
            Ok(ops) => ops,
            Err(error) => {
                eprintln!("liandong-gateway: cannot listen on {ops_listen} (ops.listen): {error}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        match ops.local_addr() {
            Ok(addr) => {
                tracing::info!(%addr, "ops HTTP port: status page, /metrics, /healthz, /readyz");
                // A stable line on stdout, for scripts and tests.
                println!("liandong-gateway ops on http://{addr}");
            }
            Err(error) => tracing::warn!(%error, "cannot read the ops port's bound address"),
        }
        prepared = prepared.with_ops_listener(ops);
    }
    spawn_reload_on_sighup(prepared.gateway().clone(), prepared.config().clone());
    match listener.local_addr() {
        Ok(addr) => {
            tracing::info!(%addr, gateway.instance = %prepared.gateway().leases.instance(), "listening");
            // A stable line on stdout, for scripts and tests.
            println!("liandong-gateway listening on https://{addr}");
        }
        Err(error) => tracing::warn!(%error, "cannot read the bound address"),
    }
    match liandong_gateway::serve(prepared, listener, shutdown).await {
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
            let unknown = store.unknown_migrations().await;
            store.close().await;
            match unknown {
                Ok(unknown) if !unknown.is_empty() => println!(
                    "liandong-gateway: database is up to date; it also holds migrations this binary does not know, applied by a newer version: {}",
                    liandong_gateway::store::describe_migrations(&unknown)
                ),
                _ => println!("liandong-gateway: database is up to date"),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `fence-sequences`: raises the high-water mark to `above`, recorded.
async fn fence_sequences(config: GatewayConfig, above: u64, reason: &str) -> ExitCode {
    use liandong_gateway::store::fence::FenceError;
    let store = match Store::connect(&config.database_url, 1).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let result = match store.unfinished_copy_refusal().await {
        Ok(Some(refusal)) => {
            store.close().await;
            eprintln!("liandong-gateway: {refusal}");
            return ExitCode::from(EX_DATAERR);
        }
        Ok(None) => store.fence_sequences(above, reason).await,
        Err(error) => Err(FenceError::Store(error)),
    };
    store.close().await;
    match result {
        Ok(fence) if fence.skipped() > 0 => {
            println!(
                "liandong-gateway: sequences {}-{} fenced ({} sequences): the next notification gets {}; recorded in the audit log (row {})",
                fence.first,
                fence.last,
                fence.skipped(),
                fence.last + 1,
                fence.audit_id
            );
            ExitCode::SUCCESS
        }
        Ok(fence) => {
            println!(
                "liandong-gateway: no sequence fenced ({} is the latest already): the next notification gets {}; the restore is acknowledged in the audit log (row {})",
                fence.last,
                fence.last + 1,
                fence.audit_id
            );
            ExitCode::SUCCESS
        }
        Err(error @ (FenceError::Below { .. } | FenceError::Reason(_))) => {
            eprintln!("liandong-gateway: {error}; nothing was changed");
            ExitCode::from(EX_USAGE)
        }
        Err(error) => {
            eprintln!("liandong-gateway: {error}; nothing was changed");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// How often plain progress lines repeat within one step, in rows.
const PROGRESS_LINE_ROWS: u64 = 10_000;

/// The progress of `migrate-store`: a bar on a terminal, otherwise a line
/// on stderr when a step starts and every 10,000 rows.
struct CopyProgress {
    bar: Option<indicatif::ProgressBar>,
    step: std::sync::Mutex<(String, u64, u64)>,
}

impl CopyProgress {
    fn new(json: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg:28} {bar:40} {pos}/{len} rows")
            {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            step: std::sync::Mutex::new((String::new(), 0, 0)),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl liandong_gateway::store::copy::CopyProgress for CopyProgress {
    fn step(&self, what: &str, rows: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(what.to_owned());
                bar.set_length(rows);
                bar.set_position(0);
            }
            None => {
                if let Ok(mut step) = self.step.lock() {
                    *step = (what.to_owned(), rows, 0);
                }
                eprintln!("migrate-store: {what}: {rows} rows");
            }
        }
    }

    fn advance(&self, rows: u64) {
        match &self.bar {
            Some(bar) => bar.inc(rows),
            None => {
                if let Ok(mut step) = self.step.lock() {
                    let before = step.2;
                    step.2 += rows;
                    if step.2 / PROGRESS_LINE_ROWS > before / PROGRESS_LINE_ROWS {
                        eprintln!("migrate-store: {}: {}/{} rows", step.0, step.2, step.1);
                    }
                }
            }
        }
    }
}

/// `migrate-store`: copies a store, then prints its summary.
async fn migrate_store(command: Command) -> ExitCode {
    use liandong_gateway::store::copy::{CopyOptions, copy_store};
    let Command::MigrateStore {
        from,
        to,
        config,
        json,
        allow_integrity_failures,
    } = command
    else {
        unreachable!("called for migrate-store")
    };
    let public_key = match config {
        None => None,
        Some(path) => {
            let key = GatewayConfig::load(&path, |key| std::env::var(key).ok())
                .map_err(|error| error.to_string())
                .and_then(|config| {
                    liandong_gateway::supervision::GatewayKey::load(&config.signing_key)
                        .map_err(|error| error.to_string())
                });
            match key {
                Ok(key) => Some(key.public_key()),
                Err(error) => {
                    eprintln!("liandong-gateway: {error}");
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
    };
    let options = CopyOptions {
        from,
        to,
        public_key,
        allow_integrity_failures,
        lock_timeout: liandong_gateway::store::DEFAULT_LOCK_TIMEOUT,
    };
    let progress = CopyProgress::new(json);
    let result = copy_store(&options, &progress).await;
    progress.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("liandong-gateway: migrate-store: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    if json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        return print_out(format!("{text}\n").as_bytes());
    }
    let tables = summary
        .tables
        .iter()
        .map(|t| format!("{} {}", t.table, t.rows))
        .collect::<Vec<_>>()
        .join(", ");
    let line = format!(
        "liandong-gateway: migrate-store: copied {} rows from {} to {} in {:.1} s ({tables}); high-water mark {}, audit log up to row {}; copy verified: {}; {}\n",
        summary.rows,
        summary.from,
        summary.to,
        summary.seconds,
        summary.high_water.unwrap_or(0),
        summary.audit_last_id.unwrap_or(0),
        summary.verify_store,
        summary.audit_verify
    );
    print_out(line.as_bytes())
}

/// Loads the rules and connects to the store for a report; prints why not.
async fn open_for_report(
    config: &GatewayConfig,
) -> Result<(liandong_gateway::policy::Rules, Store), ExitCode> {
    let rules = match liandong_gateway::load_rules(config) {
        Ok(rules) => rules,
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            return Err(ExitCode::from(EX_USAGE));
        }
    };
    match Store::connect(&config.database_url, 1).await {
        Ok(store) => Ok((rules, store)),
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
    }
}

/// Prints text to stdout; a reader that stops early is not an error.
fn print_out(text: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("liandong-gateway: cannot write the report: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn report(config: GatewayConfig, args: &ReportArgs) -> ExitCode {
    use liandong_gateway::reports::{self, ReportQuery, ReportSettings, Viewer, format};
    let settings = ReportSettings::from_config(&config);
    let query = match ReportQuery::parse(
        args.from.as_deref().unwrap_or_default(),
        args.to.as_deref().unwrap_or_default(),
        &args.region,
        settings.time_zone.clone(),
    ) {
        Ok(query) => query,
        Err(error) => {
            eprintln!("liandong-gateway: --{}: {}", error.field, error.reason);
            return ExitCode::from(EX_USAGE);
        }
    };
    let (rules, store) = match open_for_report(&config).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let result = async {
        let mut conn = store.read_connection().await?;
        reports::report(
            &mut conn,
            &rules,
            &Viewer::Operator,
            &query,
            liandong_core::domain::Instant::now(),
        )
        .await
    }
    .await;
    store.close().await;
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let text = match args.format {
        OutputFormat::Table => format::report_table(&report).into_bytes(),
        OutputFormat::Csv => format::report_csv(&report),
        OutputFormat::Json => {
            let mut text = format::report_json(&report).to_string().into_bytes();
            text.push(b'\n');
            text
        }
    };
    print_out(&text)
}

async fn signals(
    config: GatewayConfig,
    stuck_days: u32,
    region: &str,
    output: OutputFormat,
) -> ExitCode {
    use liandong_gateway::reports::{self, ReportSettings, Viewer, format};
    let settings = ReportSettings::from_config(&config);
    let query = match reports::SignalQuery::try_from(liandong_core::pb::SignalsRequest {
        kinds: Vec::new(),
        stuck_days,
        region: region.to_owned(),
    }) {
        Ok(query) => query,
        Err(error) => {
            eprintln!(
                "liandong-gateway: --{}: {}",
                error.field.replace('_', "-"),
                error.reason
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    let (rules, store) = match open_for_report(&config).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let result = async {
        let mut conn = store.read_connection().await?;
        reports::signals::signals(
            &mut conn,
            &rules,
            &Viewer::Operator,
            &settings.supervision,
            &query,
            liandong_core::domain::Instant::now(),
        )
        .await
    }
    .await;
    store.close().await;
    let signals = match result {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let text = match output {
        OutputFormat::Table => format::signals_table(&signals).into_bytes(),
        OutputFormat::Csv => format::signals_csv(&signals),
        OutputFormat::Json => {
            let mut text = format::signals_json(&signals).to_string().into_bytes();
            text.push(b'\n');
            text
        }
    };
    print_out(&text)
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
    conclude_check(
        result,
        |report| print_report(report, json),
        |report| report.is_clean(),
    )
}

/// Ends a check command: a database failure exits 69, a report that
/// cannot be written 1; then 0 when `is_clean`, 65 when a problem was
/// found.
fn conclude_check<R>(
    result: Result<R, liandong_gateway::store::StoreError>,
    print: impl FnOnce(&R) -> std::io::Result<()>,
    is_clean: impl FnOnce(&R) -> bool,
) -> ExitCode {
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    // A reader that stops early (`| head`) is not an error of the check.
    if let Err(error) = print(&report)
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("liandong-gateway: cannot write the report: {error}");
        return ExitCode::FAILURE;
    }
    if is_clean(&report) {
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
        for range in &report.unrecorded_fences {
            writeln!(
                out,
                "unrecorded    {:>12}  through {}: a fence without its audit row declares nothing",
                range.first, range.last
            )?;
        }
        if let Some(state) = &report.state {
            writeln!(out, "state         {state}")?;
        }
        for range in &report.fenced {
            writeln!(
                out,
                "fenced        {:>12}  through {} (declared gap: never assigned)",
                range.first, range.last
            )?;
        }
    }
    out.flush()
}

async fn audit_verify(
    config: GatewayConfig,
    json: bool,
    checkpoint: Option<&std::path::Path>,
) -> ExitCode {
    use liandong_gateway::store::audit::{AuditVerifyOptions, Checkpoint};
    let key = match liandong_gateway::supervision::GatewayKey::load(&config.signing_key) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("liandong-gateway: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let checkpoint_file = match checkpoint {
        None => None,
        Some(path) => {
            match std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| Checkpoint::from_json(&text))
            {
                Ok(checkpoint) => Some((path.display().to_string(), checkpoint)),
                Err(error) => {
                    eprintln!("liandong-gateway: --checkpoint {}: {error}", path.display());
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
    };
    let store = match Store::connect(&config.database_url, 2).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("liandong-gateway: database: {error}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let options = AuditVerifyOptions {
        from_id: 0,
        public_key: Some(key.public_key()),
        checkpoint_file,
    };
    let bar = indicatif::ProgressBar::hidden();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "verifying the audit log {bar:40} {pos}/{len} rows ({eta} left)",
    ) {
        bar.set_style(style);
    }
    let result = if json {
        store
            .verify_audit(&options, &liandong_gateway::store::verify::NoProgress)
            .await
    } else {
        store.verify_audit(&options, &Bar(bar.clone())).await
    };
    bar.finish_and_clear();
    store.close().await;
    conclude_check(
        result,
        |report| print_audit_report(report, json),
        |report| report.is_clean(),
    )
}

/// Writes the audit report to stdout: JSON, or a summary line, one line
/// per problem, per checkpoint and the triggers found.
fn print_audit_report(
    report: &liandong_gateway::store::audit::AuditReport,
    json: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
        return out.flush();
    }
    writeln!(out, "{}", report.summary())?;
    for problem in &report.problems {
        let row = problem
            .row
            .map(|row| format!("row {row}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{:<11} {:>14}  {}",
            problem.kind.as_str(),
            row,
            problem.detail
        )?;
    }
    if report.problems_omitted > 0 {
        writeln!(out, "… and {} more", report.problems_omitted)?;
    }
    for checkpoint in &report.checkpoints {
        let signature = match checkpoint.signature_valid {
            Some(true) => "signature valid",
            Some(false) => "SIGNATURE INVALID",
            None => "signature not checked",
        };
        let matches = if checkpoint.matches {
            "matches the chain"
        } else {
            "DOES NOT MATCH the chain"
        };
        writeln!(
            out,
            "checkpoint  {} row {}: {signature}, {matches}",
            checkpoint.source, checkpoint.row_id
        )?;
    }
    writeln!(out, "triggers    {}", report.triggers.join(", "))?;
    out.flush()
}

/// How often the configured files are looked at for changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a change must hold still before it is reloaded (an editor or
/// a copy may write a file in several steps).
const WATCH_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// On SIGHUP, and when any of the files it reads changes (content looked
/// at every 2 s), reloads registry, policy, deadline rules, calendar and
/// TLS material (certificate, key, CA bundle, CRLs); a broken file keeps
/// the whole previous configuration in force and is reported. Reloads run
/// one at a time.
fn spawn_reload_on_sighup(
    gateway: std::sync::Arc<liandong_gateway::Gateway>,
    config: GatewayConfig,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGHUP; reloads follow file changes only");
            None
        }
    };
    tokio::spawn(async move {
        let files = watched_files(&config);
        let mut seen = fingerprint(&files);
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                signal = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if signal.is_none() {
                        hangup = None;
                        continue;
                    }
                    "SIGHUP"
                }
                _ = ticks.tick() => {
                    let now = fingerprint(&files);
                    if now == seen {
                        continue;
                    }
                    tokio::time::sleep(WATCH_SETTLE).await;
                    if fingerprint(&files) != now {
                        // Still being written: look again next time.
                        continue;
                    }
                    "file change"
                }
                () = gateway.stop.cancelled() => return,
            };
            tracing::info!(
                trigger,
                "reloading registry, policy, deadline rules and TLS configuration"
            );
            // Whatever the outcome, the files as now read are the ones
            // decided on: a broken file is reported once, not every 2 s.
            seen = fingerprint(&files);
            // A refusal is logged (one line) and audited by the reload.
            let _ = gateway.reload_all(&config, trigger).await;
        }
    });
}

/// Every file a reload reads.
fn watched_files(config: &GatewayConfig) -> Vec<PathBuf> {
    let mut files = vec![config.registry.clone()];
    files.extend(config.policy.clone());
    files.extend(config.mechanism.deadlines.clone());
    files.extend(config.mechanism.calendar.iter().cloned());
    files.extend([
        config.tls.ca.clone(),
        config.tls.cert.clone(),
        config.tls.key.clone(),
    ]);
    files.extend(config.tls.crls.iter().cloned());
    files
}

/// The SHA-256 of each file's content (`None` when unreadable).
fn fingerprint(files: &[PathBuf]) -> Vec<Option<[u8; 32]>> {
    use sha2::Digest;
    files
        .iter()
        .map(|file| {
            std::fs::read(file)
                .ok()
                .map(|bytes| sha2::Sha256::digest(&bytes).into())
        })
        .collect()
}

/// Watches SIGTERM from now on (a SIGTERM arriving before this would end
/// the process at once, without a graceful shutdown) and returns the
/// future that completes on SIGTERM or SIGINT.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        let mut term = match term {
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
}
