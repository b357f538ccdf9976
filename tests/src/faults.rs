//! A fault harness with a history checker.
//!
//! [`run`] starts the real gateway (SQLite or PostgreSQL) and an adapter
//! daemon over real mutual TLS, keeps a load of publishers with unique ids
//! and acknowledging subscribers going, injects faults one after another
//! from a seeded schedule, records every operation with its outcome and
//! every frame each subscription received, resolves unknown outcomes by
//! republishing, and then checks the history against the final store read
//! directly from the database. A [`Report`] lists each fault with what was
//! observed and every violation with its rule.
//!
//! # Layout
//! - `history`: what was recorded;
//! - `workload`: publishers and subscribers;
//! - `inject`: the faults;
//! - `oracle`: who may read what, under the registry in force;
//! - `checker`: the rules;
//! - `bed`: the processes, the store on a tmpfs, the registry file.
//!
//! The run is bounded: it stops once its duration has passed and every
//! selected fault has been injected at least once.

pub mod bed;
pub mod checker;
pub mod history;
pub mod inject;
pub mod oracle;
pub mod workload;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use nix::sys::signal::Signal;

use self::bed::Bed;
use self::history::{History, Op, Outcome, Shared, Via, Violation};
use self::workload::{Target, Workload};

/// Which store the gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file on a small tmpfs.
    Sqlite,
    /// A fresh schema in the local PostgreSQL.
    Postgres,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" => Ok(Self::Postgres),
            other => Err(format!("unknown backend {other:?} (sqlite or postgres)")),
        }
    }
}

/// A fault the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the gateway and of the adapter daemon, several cycles.
    Kill,
    /// SIGTERM of the gateway under load.
    Term,
    /// The store's file system full, then freed.
    Full,
    /// The database locked by another writer for longer than the gateway waits.
    Lock,
    /// The PostgreSQL server stopped and started again.
    PgRestart,
    /// A subscriber that stops reading.
    Stall,
    /// Rows edited, deleted and reordered with the gateway stopped.
    Tamper,
    /// A registry change with streams open (SIGHUP).
    Registry,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::Term,
        Fault::Full,
        Fault::Lock,
        Fault::PgRestart,
        Fault::Stall,
        Fault::Tamper,
        Fault::Registry,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Term => "term",
            Fault::Full => "full",
            Fault::Lock => "lock",
            Fault::PgRestart => "pgrestart",
            Fault::Stall => "stall",
            Fault::Tamper => "tamper",
            Fault::Registry => "registry",
        }
    }

    /// Whether it can be injected on `backend`.
    pub fn applies_to(self, backend: Backend) -> bool {
        self != Fault::PgRestart || backend == Backend::Postgres
    }

    /// Parses a comma-separated list (`all` for every fault).
    pub fn parse_list(text: &str) -> Result<Vec<Fault>, String> {
        if text == "all" {
            return Ok(Self::ALL.to_vec());
        }
        text.split(',')
            .map(|name| {
                Self::ALL
                    .into_iter()
                    .find(|f| f.name() == name.trim())
                    .ok_or_else(|| format!("unknown fault {name:?}"))
            })
            .collect()
    }
}

/// A small seeded generator (splitmix64): the schedule depends on the seed
/// alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The store.
    pub backend: Backend,
    /// How long to keep injecting (the run also goes on until every
    /// selected fault was injected once).
    pub duration: Duration,
    /// The schedule's seed.
    pub seed: u64,
    /// The faults to inject.
    pub faults: Vec<Fault>,
}

/// One line of the summary table.
#[derive(Debug, Clone)]
pub struct FaultRow {
    /// The fault, or None for time without a fault.
    pub fault: Option<Fault>,
    /// How often it was injected.
    pub injected: usize,
    /// What was observed, per injection.
    pub outcomes: Vec<String>,
    /// Direct publishes started while it was active: ok, refused, unknown.
    pub ops: (usize, usize, usize),
    /// Violations attributed to it.
    pub violations: usize,
    /// Whether the fault cannot be made on this backend.
    pub not_applicable: bool,
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    /// What was run.
    pub config: RunConfig,
    /// One row per fault, then one for time without a fault.
    pub rows: Vec<FaultRow>,
    /// Every violation found.
    pub violations: Vec<Violation>,
    /// Operations: total, ok, refused, unknown (before resolution).
    pub ops: (usize, usize, usize, usize),
    /// Frames received by all subscriptions.
    pub frames: usize,
    /// Rows in the store at the end.
    pub stored: usize,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// Whether nothing was violated.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Rows that passed and rows that failed (faults not applicable to the
    /// backend are not counted).
    pub fn tally(&self) -> (usize, usize) {
        let counted = self.rows.iter().filter(|r| !r.not_applicable);
        let failed = counted.clone().filter(|r| r.violations > 0).count();
        (counted.count() - failed, failed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "liandong-faults: backend {:?}, seed {}, {:.0} s",
            self.config.backend,
            self.config.seed,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "{:<10} {:>4} {:>22} {:>5}  {:<6} outcome",
            "fault", "runs", "ops ok/refused/unknown", "viol", "result"
        )?;
        for row in &self.rows {
            let name = row.fault.map_or("(none)", Fault::name);
            let result = if row.not_applicable {
                "n/a"
            } else if row.violations > 0 {
                "FAIL"
            } else {
                "pass"
            };
            let mut outcomes = row.outcomes.clone();
            outcomes.dedup();
            writeln!(
                f,
                "{name:<10} {:>4} {:>22} {:>5}  {result:<6} {}",
                row.injected,
                format!("{}/{}/{}", row.ops.0, row.ops.1, row.ops.2),
                row.violations,
                outcomes.join(" | ")
            )?;
        }
        let (total, ok, refused, unknown) = self.ops;
        writeln!(
            f,
            "operations: {total} ({ok} ok, {refused} refused, {unknown} unknown, resolved by republishing); \
             frames received: {}; rows stored: {}; violations: {}",
            self.frames,
            self.stored,
            self.violations.len()
        )?;
        let mut by_rule: Vec<(&str, usize)> = Vec::new();
        for v in &self.violations {
            match by_rule.iter_mut().find(|(r, _)| *r == v.rule) {
                Some((_, n)) => *n += 1,
                None => by_rule.push((v.rule, 1)),
            }
        }
        for (rule, n) in &by_rule {
            writeln!(f, "  rule {rule}: {n} violation(s); first ones:")?;
            for v in self.violations.iter().filter(|v| v.rule == *rule).take(4) {
                let fault = v.fault.map_or("none", Fault::name);
                writeln!(f, "    [{fault}] {}", v.detail)?;
            }
        }
        let (passed, failed) = self.tally();
        write!(f, "{passed} passed, {failed} failed")
    }
}

/// Runs the harness; the environment is removed whatever happens.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let mut bed = Bed::create(config.backend).await?;
    // A panic in the run must not leave mounts, schemas or a stopped
    // PostgreSQL behind: tear down first, then let it go on.
    let result = std::panic::AssertUnwindSafe(run_on(&mut bed, &config))
        .catch_unwind()
        .await;
    bed.teardown().await;
    if config.backend == Backend::Postgres {
        inject::ensure_postgres_running();
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn run_on(bed: &mut Bed, config: &RunConfig) -> anyhow::Result<Report> {
    let began = Instant::now();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        bed.start_gateway()?;
        bed.start_adapter()
    })?;
    let history: Shared = Arc::new(Mutex::new(History::default()));
    let pki_dir = bed.pki.dir.clone();
    let target = Target {
        url: bed.url(),
        credentials: Arc::new(move |agency: &str| {
            let agencies = pki_dir.join("agencies");
            liandong_core::tls::ClientCredentials::from_files(
                &pki_dir.join("ca.crt"),
                &agencies.join(format!("{agency}.crt")),
                &agencies.join(format!("{agency}.key")),
            )
            .expect("the dev PKI has the agency's credentials")
        }),
        adapter_port: bed.adapter_port,
        drop_folder: bed.drop_folder.clone(),
    };
    let mut workload = Workload::start(&target, &history, config.seed);
    let mut rng = Rng::new(config.seed);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The schedule: the selected faults in a seeded order, round after
    // round, until the duration has passed and each ran once.
    let mut order: Vec<Fault> = config.faults.clone();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut injected = 0;
    let started = Instant::now();
    while !order.is_empty() && (injected < order.len() || started.elapsed() < config.duration) {
        let fault = order[injected % order.len()];
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
        inject::inject(fault, bed, &history, &workload, &target, &mut rng)
            .await
            .with_context(|| format!("injecting {}", fault.name()))?;
        injected += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    workload.stop_publishing().await;
    if bed.gateway.is_none() {
        tokio::task::block_in_place(|| bed.start_gateway())?;
    }
    if bed.adapter.is_none() {
        tokio::task::block_in_place(|| bed.start_adapter())?;
    }

    resolve_unknown(bed, &target, &history).await;
    wait_adapter_drained(bed).await;
    wait_caught_up(bed, &history).await;
    workload.stop_reading().await;
    bed.stop_adapter(Signal::SIGTERM)?;
    bed.stop_gateway(Signal::SIGTERM, Duration::from_secs(20))?;

    let rows = checker::read_rows(&mut bed.connect().await?).await?;
    let history = history.lock().expect("history");
    let violations = checker::check(&history, &rows);
    if let Some(path) = std::env::var_os("LIANDONG_FAULTS_HISTORY") {
        let mut text = history.dump(began);
        for v in &violations {
            text.push_str(&format!(
                "violation {} [{:?}] {}\n",
                v.rule,
                v.fault.map(Fault::name),
                v.detail
            ));
        }
        std::fs::write(&path, text).context("writing the history")?;
    }
    Ok(report(
        config,
        &history,
        violations,
        rows.len(),
        began.elapsed(),
    ))
}

/// Republishes every operation whose outcome was unknown, with the same id
/// and content, and records the answer.
async fn resolve_unknown(bed: &Bed, target: &Target, history: &Shared) {
    let unknown: Vec<(usize, Op)> = history
        .lock()
        .expect("history")
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.outcome, Outcome::Unknown { .. } | Outcome::Pending))
        .map(|(i, op)| (i, op.clone()))
        .collect();
    for (index, op) in unknown {
        let mut answer = None;
        // Up to 20 s: a store that recovers by itself may take a moment.
        for _ in 0..40 {
            let outcome = match op.via {
                Via::Direct => match workload::connect(target, &op.sender).await {
                    Some(mut client) => {
                        workload::publish_once(&mut client, op.notification.clone()).await
                    }
                    None => Outcome::Unknown {
                        reason: "cannot connect".into(),
                    },
                },
                _ => {
                    let (port, body) = (bed.adapter_port, workload::adapter_json(&op.notification));
                    tokio::task::spawn_blocking(move || workload::post_to_adapter(port, &body))
                        .await
                        .unwrap_or(Outcome::Unknown {
                            reason: "HTTP call panicked".into(),
                        })
                }
            };
            let settled = !matches!(outcome, Outcome::Unknown { .. });
            answer = Some(outcome);
            if settled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        history.lock().expect("history").ops[index].resolution = answer;
    }
}

/// Waits until the adapter's outbox is empty and its drop folder taken.
async fn wait_adapter_drained(bed: &Bed) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let waiting = std::fs::read_dir(&bed.drop_folder)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .unwrap_or(false);
        let config = bed.adapter_config.clone();
        let (_, status) = tokio::task::spawn_blocking(move || crate::adapter_bed::status(&config))
            .await
            .unwrap_or((1, serde_json::Value::Null));
        if !waiting && status["outbox"]["pending"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until every subscription has received everything it is owed (or
/// 30 s have passed; what is still missing is then a violation).
async fn wait_caught_up(bed: &Bed, history: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Ok(mut conn) = bed.connect().await else {
            return;
        };
        let Ok(rows) = checker::read_rows(&mut conn).await else {
            return;
        };
        let missing = {
            let history = history.lock().expect("history");
            checker::check(&history, &rows)
                .iter()
                .filter(|v| v.rule == "reach")
                .count()
        };
        if missing == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn report(
    config: &RunConfig,
    history: &History,
    violations: Vec<Violation>,
    stored: usize,
    elapsed: Duration,
) -> Report {
    let ops_during = |fault: Option<Fault>| {
        let mut counts = (0, 0, 0);
        for op in history
            .ops
            .iter()
            .filter(|op| op.via == Via::Direct && history.fault_at(op.started) == fault)
        {
            match op.outcome {
                Outcome::Ok { .. } => counts.0 += 1,
                Outcome::Refused { .. } => counts.1 += 1,
                _ => counts.2 += 1,
            }
        }
        counts
    };
    let mut rows: Vec<FaultRow> = config
        .faults
        .iter()
        .map(|&fault| FaultRow {
            fault: Some(fault),
            injected: history.faults.iter().filter(|e| e.fault == fault).count(),
            outcomes: history
                .faults
                .iter()
                .filter(|e| e.fault == fault)
                .map(|e| e.outcome.clone())
                .collect(),
            ops: ops_during(Some(fault)),
            violations: violations.iter().filter(|v| v.fault == Some(fault)).count(),
            not_applicable: !fault.applies_to(config.backend),
        })
        .collect();
    rows.push(FaultRow {
        fault: None,
        injected: 0,
        outcomes: Vec::new(),
        ops: ops_during(None),
        violations: violations.iter().filter(|v| v.fault.is_none()).count(),
        not_applicable: false,
    });
    let count = |f: fn(&Outcome) -> bool| history.ops.iter().filter(|op| f(&op.outcome)).count();
    Report {
        config: config.clone(),
        rows,
        ops: (
            history.ops.len(),
            count(|o| matches!(o, Outcome::Ok { .. })),
            count(|o| matches!(o, Outcome::Refused { .. })),
            count(|o| matches!(o, Outcome::Unknown { .. })),
        ),
        violations,
        frames: history.frames.len(),
        stored,
        elapsed,
    }
}
