//! `liandong-demo`: one environmental-crime case travelling through a real
//! Liandong (联动) gateway, end to end, on this machine.
//!
//! The demo makes a throwaway directory with a development PKI (a CA, the
//! gateway's server certificate and one client certificate and signing key
//! per agency of `deploy/dev/agencies.toml`) and a SQLite database, and
//! starts the real `liandong-gateway` binary on a loopback port. Each
//! participating agency runs a real `liandong-adapter run` daemon with its
//! own config file: a durable outbox, a durable subscription from the
//! beginning handed to a folder sink (one JSON file per delivery, as a case
//! system reads them), and — for the agencies that publish — a drop folder
//! (the environment bureau) or the local HTTP endpoint (the police and the
//! two procuratorates). The demo acts as the agencies' case systems: it hands
//! the story's notifications over one at a time, each once the previous
//! one is stored at the gateway, and reads what each sink wrote.
//!
//! The story: a hazardous-waste case in Xiangyuan county. The environment
//! bureau shares a clue (naming an informant and the suspect's identity
//! number) and transfers the case to the police, the police acknowledge and
//! file it and request an arrest, the procuratorate approves the arrest,
//! prosecutes and records the judgment. The bureau then drafts a joint
//! announcement of the outcome, co-signed by the county police, the county
//! procuratorate and the city procuratorate: the draft reaches only them,
//! each approves it in turn, and once the third has approved the gateway
//! releases it to everyone in an ANNOUNCEMENT_RELEASED of its own, signed
//! with its key.
//!
//! The gateway runs a deadline drill: its rules file (`[mechanism]
//! deadlines`, written by the demo) counts the police's 3 days to decide on
//! filing a received transfer as a few seconds, and the police decide only
//! after that. The gateway itself then sends a SUPERVISION_ALERT, signed
//! with its own key, to the supervising county procuratorate and the
//! police; the demo verifies it with the gateway's public key and checks
//! that the late filing decision closed the breach. At the end it prints
//! the statistics report of `liandong-gateway report` for the days the
//! story was received on and checks that it counts what was published.
//!
//! Six agencies subscribe, including the city's procuratorate, an
//! environment bureau of another district and the press office. The report
//! shows what each received, and the closing checks verify the point of the
//! mechanism: RESTRICTED content reaches only its need-to-know recipients;
//! the county procuratorate, left out of the transfer's recipients, gets it
//! in full as the statutory copy the law requires (抄送); the city
//! procuratorate, its supervisor but no party, gets a withheld stub saying
//! whom to ask; fields marked
//! CONFIDENTIAL in the contract are stripped for a bureau cleared only to
//! RESTRICTED; the joint announcement's draft reaches its co-signers and
//! nobody else, each approval names the digest of the text its co-signer
//! received, and the release comes after the third approval, not before,
//! and reaches every subscriber — the press office included — signed by
//! the gateway.
//!
//! Signatures run end to end: the gateway requires them
//! (`require_signatures = true`, every agency's key and the gateway's own
//! in the registry), and every adapter verifies what it receives against
//! the same registry (`[verify]`, `on_failure = "reject"`); a closing check
//! says every delivery verified. The process
//! exits 0 only when every check passes; the daemons and the gateway are
//! stopped with SIGTERM and the directory removed (it is kept, with the
//! logs, on failure).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use liandong_core::json::from_json;
use liandong_core::json::to_json;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::registry::{GATEWAY_SENDER, Registry};
use liandong_tests::demo_adapters::{AdapterDaemon, AdapterFiles, Source, overdue};
use liandong_tests::demo_story::{
    self, BYSTANDER, CASE_REF, CITY_PROCURATORATE, COSIGNERS, DRILL_RULE, DRILL_SECONDS, EEB,
    PRESS, PROCURATORATE, PSB, REGION, SUBSCRIBERS, SUBSCRIPTION, event_name, level_name,
};
use liandong_tests::{GatewayProcess, Pki, REGISTRY};
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// How long the demo may take once the binaries are built.
const DEADLINE: Duration = Duration::from_secs(180);
/// How long all subscribers together may take to receive the whole story
/// once it is published (within the deadline).
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an adapter daemon may take to stop after SIGTERM.
const ADAPTER_STOP_TIMEOUT: Duration = Duration::from_secs(25);
/// How long the gateway may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The drill deadline rules file in the work directory, named by the
/// gateway config's `[mechanism] deadlines`.
const DRILL_RULES_FILE: &str = "drill-deadlines.toml";

fn main() -> anyhow::Result<()> {
    shed_cargo_package_env()?;
    demo()
}

/// `cargo run` gives this process its package's environment (`CARGO_PKG_*`,
/// `CARGO_MANIFEST_*`, …), which the nested `cargo build` of the gateway
/// would inherit. Build scripts that watch those variables (ring's does)
/// would then see them change between that build and the ordinary one, so
/// every run would rebuild ring, rustls, tonic and the gateway. The demo
/// therefore replaces itself with a copy that runs without them.
fn shed_cargo_package_env() -> anyhow::Result<()> {
    let inherited: Vec<_> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            name.to_str().is_some_and(|name| {
                name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || matches!(
                        name,
                        "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
                    )
            })
        })
        .collect();
    if inherited.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the demo's own executable")?;
    let mut command = std::process::Command::new(&exe);
    command.args(std::env::args_os().skip(1));
    for name in inherited {
        command.env_remove(name);
    }
    // Only returns on failure.
    let error = command.exec();
    Err(anyhow::Error::new(error).context(format!("re-executing {}", exe.display())))
}

#[tokio::main]
async fn demo() -> anyhow::Result<()> {
    // The binaries are built by running cargo in the workspace.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate lives in the workspace")?;
    std::env::set_current_dir(workspace)
        .with_context(|| format!("entering the workspace {}", workspace.display()))?;

    let dir = tempfile::Builder::new()
        .prefix("liandong-demo-")
        .tempdir()
        .context("creating the work directory")?;
    let outcome = tokio::select! {
        outcome = run(dir.path()) => outcome,
        _ = tokio::signal::ctrl_c() => {
            // Dropping `run` has killed the daemons and the gateway; the
            // directory goes too.
            eprintln!("\ninterrupted; the adapter daemons and the gateway were stopped");
            return Err(anyhow!("interrupted"));
        }
    };
    match outcome {
        Ok(()) => {
            dir.close().context("removing the work directory")?;
            Ok(())
        }
        Err(error) => {
            let kept = dir.keep();
            eprintln!();
            eprintln!("The demo FAILED. The work directory is kept for inspection:");
            eprintln!("  {}", kept.display());
            let mut logs = vec![("gateway".to_owned(), kept.join("gateway.log"))];
            for agency in SUBSCRIBERS {
                logs.push((
                    format!("adapter of {agency}"),
                    AdapterFiles::new(&kept, agency).log,
                ));
            }
            for (whose, log) in logs {
                if log.exists() {
                    eprintln!("  log of the {whose}: {}", log.display());
                }
            }
            Err(error)
        }
    }
}

/// Builds the binaries, then plays the demo in `dir` within [`DEADLINE`].
/// Every child process is killed if this returns early (or is dropped).
async fn run(dir: &Path) -> anyhow::Result<()> {
    let registry = Registry::parse(REGISTRY, Path::new("deploy/dev/agencies.toml"))?;
    println!("联动 Liandong demo: one environmental-crime case through the gateway");
    println!("  case {CASE_REF}, Xiangyuan county (襄垣县, {REGION})");
    println!(
        "  work directory {} (dev PKI, SQLite database, adapter configs, folders and logs; \
         removed on success)",
        dir.display()
    );

    println!(
        "\nBuilding liandong-gateway and liandong-adapter (the first run may take a few minutes)..."
    );
    let adapter = tokio::task::spawn_blocking(|| {
        liandong_tests::binary("liandong-gateway");
        liandong_tests::binary("liandong-adapter")
    })
    .await
    .map_err(|e| anyhow!("building the binaries failed: {e}"))?;

    let deadline = Instant::now() + DEADLINE;
    // Every wait in `play` gives up at the deadline and says what it waited
    // for; this is the backstop for anything else.
    match tokio::time::timeout_at(
        deadline + Duration::from_secs(10),
        play(dir, &registry, &adapter, deadline),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => bail!("the demo did not finish within its deadline of {DEADLINE:?}"),
    }
}

/// The story's phases, in order: the gateway, the daemons, the story (with
/// the alert for the late filing decision), the deliveries, the statistics
/// report, the checks and the shutdown, then the verdict.
async fn play(
    dir: &Path,
    registry: &Registry,
    adapter: &Path,
    deadline: Instant,
) -> anyhow::Result<()> {
    let names = Names(registry);
    let (gateway, gateway_key) = start_gateway(dir)?;
    let daemons = start_daemons(dir, adapter, &gateway.url(), &names, deadline).await?;
    let story = publish_story(&daemons, &gateway_key, deadline).await?;
    let inboxes = collect(&daemons, &story, &gateway_key, deadline).await?;
    report(&inboxes, &story, &names);
    let statistics = statistics_report(dir, &story).await?;
    let mut checks = check_disclosure(&inboxes, &story, registry);
    checks.push(alert_reaches_supervisor_and_police(
        &inboxes,
        &story,
        &gateway_key,
    ));
    checks.push(late_filing_closes_the_breach(dir, &story).await);
    checks.push(release_reaches_everyone_signed(
        &inboxes,
        &story,
        &gateway_key,
    ));
    checks.push(report_counts_the_story(&statistics, &story));
    checks.push(every_delivery_verified(dir, adapter, deadline).await);
    checks.extend(shut_down(daemons, gateway).await?);
    verdict(&checks, deadline)
}

/// An agency's name as registered, for display.
struct Names<'r>(&'r Registry);

impl Names<'_> {
    fn display(&self, id: &str) -> String {
        self.0
            .agencies()
            .find(|a| a.id.as_str() == id)
            .map_or_else(|| id.to_owned(), |a| format!("{} ({id})", a.name))
    }
}

/// What was published, in the order of its sequences, and the sequences of
/// the notifications the checks look at.
struct Story {
    published: Vec<(pb::Notification, u64)>,
    clue: u64,
    transfer: u64,
    received: u64,
    filed: u64,
    /// The county bureau's draft of the joint announcement.
    announcement: u64,
    /// The co-signers' approvals of the draft, in the order published.
    approvals: Vec<u64>,
    /// The gateway's SUPERVISION_ALERT for the late filing decision.
    alert: u64,
    /// The local dates (UTC+8) the gateway received the story on: the
    /// first and the last.
    first_day: jiff::civil::Date,
    last_day: jiff::civil::Date,
}

/// What each subscriber's case system found in its folder sink.
struct Inboxes<'a>(Vec<(&'a str, Vec<pb::Delivery>)>);

impl Inboxes<'_> {
    fn of(&self, agency: &str) -> &[pb::Delivery] {
        self.0
            .iter()
            .find(|(a, _)| *a == agency)
            .map_or(&[], |(_, d)| d.as_slice())
    }

    fn delivered(&self, agency: &str, sequence: u64) -> Option<&pb::Delivery> {
        self.of(agency).iter().find(|d| d.sequence == sequence)
    }

    /// The sequence of the gateway's ANNOUNCEMENT_RELEASED, as the
    /// drafting bureau received it.
    fn release(&self) -> Option<u64> {
        self.of(EEB)
            .iter()
            .find(|d| is_release(d))
            .map(|d| d.sequence)
    }
}

/// One closing check: whether it passed and the line that says what it
/// found.
type Check = (bool, String);

/// The gateway on a loopback port, with the development PKI, every
/// agency's signing key registered and the drill deadline rules; and the
/// gateway's own public key, which its alerts are verified with.
fn start_gateway(dir: &Path) -> anyhow::Result<(GatewayProcess, [u8; 32])> {
    println!("\nStarting the gateway");
    let pki = Pki::create(dir).context("creating the development PKI")?;
    // Every agency's public key is registered, and the gateway's own: the
    // gateway (with require_signatures on) checks the signature the adapters
    // put on each notification, and the adapters verify every delivery.
    liandong_tests::signed::register_all_keys(&pki);
    let gateway_key = pki
        .gateway_public_key()
        .context("reading the gateway's public key")?;
    std::fs::write(dir.join(DRILL_RULES_FILE), demo_story::drill_deadlines())
        .context("writing the drill deadline rules")?;
    println!(
        "  DEADLINE DRILL: the gateway runs with {DRILL_RULES_FILE}, in which the police's \
         filing decision ({DRILL_RULE}: 3 days from receiving a transfer, the 2017 measures) \
         is due {DRILL_SECONDS} seconds after the receipt; the demo's police decide late on \
         purpose"
    );
    let config = dir.join("gateway.toml");
    std::fs::write(&config, gateway_config()).context("writing the gateway config")?;
    let log = dir.join("gateway.log");
    // In place rather than on a blocking thread: if the demo is interrupted,
    // a gateway that is starting must not outlive it (nor write into the
    // directory being removed).
    let gateway = tokio::task::block_in_place(|| GatewayProcess::start(&config, &log))
        .context("starting liandong-gateway")?;
    println!(
        "  liandong-gateway listening on {} (pid {}), mutual TLS only",
        gateway.url(),
        gateway.pid()
    );
    Ok((gateway, gateway_key))
}

/// One adapter daemon per agency, each subscribed from the beginning.
async fn start_daemons(
    dir: &Path,
    adapter: &Path,
    url: &str,
    names: &Names<'_>,
    deadline: Instant,
) -> anyhow::Result<Vec<AdapterDaemon>> {
    println!(
        "\nStarting one liandong-adapter daemon per agency (config adapter-<id>.toml): \
         subscription \"{SUBSCRIPTION}\" from the beginning, delivered to a folder sink \
         (adapters/<id>/inbox/, one JSON file each)"
    );
    let daemons = futures::future::try_join_all(SUBSCRIBERS.iter().map(|agency| {
        AdapterDaemon::start(
            adapter,
            dir,
            agency,
            url,
            demo_story::source_of(agency),
            SUBSCRIPTION,
            deadline,
        )
    }))
    .await?;
    for daemon in &daemons {
        let source = match (daemon.source(), daemon.http_addr()) {
            (Source::DropFolder, _) => {
                format!("drop folder {}", relative(dir, &daemon.files().outgoing))
            }
            (Source::Http, Some(addr)) => format!("HTTP source http://{addr}"),
            _ => "receives only".to_owned(),
        };
        println!(
            "  {}: pid {}, {source}",
            names.display(daemon.agency()),
            daemon.pid()
        );
    }
    Ok(daemons)
}

/// The story, handed over one notification at a time, each once the
/// previous one is stored: the order of the story is the order of the
/// sequences.
async fn publish_story(
    daemons: &[AdapterDaemon],
    gateway_key: &[u8; 32],
    deadline: Instant,
) -> anyhow::Result<Story> {
    println!(
        "\nPublishing: sender → event (level) → sequence, as each case system hands the \
         notification to its adapter"
    );
    let first_day = local_today();
    let mut published = Vec::new();
    let mut alert = None;
    for step in demo_story::steps() {
        if step.notification.event == Event::CaseFiled as i32 {
            // The police decide late: only once the gateway has alerted.
            let received = published
                .iter()
                .find(|(n, _): &&(pb::Notification, u64)| n.event == Event::TransferReceived as i32)
                .map(|(_, sequence)| *sequence)
                .context("the transfer is received before it is filed")?;
            alert = Some(await_alert(daemons, received, gateway_key, deadline).await?);
        }
        let daemon = daemons
            .iter()
            .find(|d| d.agency() == step.sender)
            .context("every sender runs an adapter")?;
        let n = &step.notification;
        let level = level_name(n.confidentiality);
        let audience = if n.recipients.is_empty() {
            level
        } else {
            format!("{level}, for {}", n.recipients.join(" + "))
        };
        print!(
            "  {}  {} → {} ({audience}) → ",
            step.date,
            step.sender,
            event_name(n.event)
        );
        std::io::Write::flush(&mut std::io::stdout())?;
        match daemon.publish(&step.name, n, deadline).await {
            Ok((sequence, via)) => {
                println!("#{sequence}  ({via})");
                published.push((n.clone(), sequence));
            }
            Err(error) => {
                println!("not stored");
                return Err(error);
            }
        }
    }
    let sequence_of = |event: Event| {
        published
            .iter()
            .find(|(n, _)| n.event == event as i32)
            .map(|(_, sequence)| *sequence)
            .context("the story has this event")
    };
    Ok(Story {
        clue: sequence_of(Event::ClueShared)?,
        transfer: sequence_of(Event::CaseTransferred)?,
        received: sequence_of(Event::TransferReceived)?,
        filed: sequence_of(Event::CaseFiled)?,
        announcement: sequence_of(Event::JointAnnouncement)?,
        approvals: published
            .iter()
            .filter(|(n, _)| n.event == Event::AnnouncementApproved as i32)
            .map(|(_, sequence)| *sequence)
            .collect(),
        alert: alert.context("the story has a filing decision")?,
        published,
        first_day,
        last_day: local_today(),
    })
}

/// The agencies a supervision alert of [`DRILL_RULE`] goes to: the
/// supervising procuratorate and the police that must decide.
const ALERTED: [&str; 2] = [PROCURATORATE, PSB];

/// Waits until the gateway's SUPERVISION_ALERT for the filing decision the
/// receipt `received` started has reached the supervising procuratorate's
/// and the police's case systems, shows it with its signature checked
/// against the gateway's public key, and returns its sequence.
async fn await_alert(
    daemons: &[AdapterDaemon],
    received: u64,
    gateway_key: &[u8; 32],
    deadline: Instant,
) -> anyhow::Result<u64> {
    let waiting_since = Instant::now();
    println!(
        "      (drill) no filing decision yet; the gateway's clock {DRILL_RULE} started at \
         #{received} and is due {DRILL_SECONDS} s later..."
    );
    let mut found: Vec<(&str, pb::Delivery)> = Vec::new();
    while found.len() < ALERTED.len() {
        if Instant::now() >= deadline {
            bail!(overdue("waiting for the supervision alert"));
        }
        found.clear();
        for agency in ALERTED {
            let daemon = daemons
                .iter()
                .find(|d| d.agency() == agency)
                .context("every alerted agency runs an adapter")?;
            let alert = daemon
                .deliveries()
                .with_context(|| format!("reading {agency}'s deliveries"))?
                .into_iter()
                .find(is_alert);
            if let Some(alert) = alert {
                found.push((agency, alert));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, first) = &found[0];
    let n = first.notification.clone().unwrap_or_default();
    let body = n
        .body
        .as_ref()
        .and_then(|b| b.alert.clone())
        .unwrap_or_default();
    println!(
        "  {:<10}  {GATEWAY_SENDER} → {} ({}, for {}) → #{}  (in both case systems {:.1} s later)",
        "(drill)",
        event_name(n.event),
        level_name(n.confidentiality),
        n.recipients.join(" + "),
        first.sequence,
        waiting_since.elapsed().as_secs_f64()
    );
    println!("       {}", n.summary);
    println!(
        "       rule {}: {} awaited from {}, supervisor {}",
        body.rule, body.awaited, body.late_agency, body.supervisor
    );
    for (agency, delivery) in &found {
        let verified = delivery.notification.as_ref().map_or_else(
            || "no notification".to_owned(),
            |n| match liandong_core::signing::verify(n, GATEWAY_SENDER, gateway_key) {
                Ok(()) => "signature verified with pki/gateway.signing.pub".to_owned(),
                Err(error) => format!("signature NOT verified: {error}"),
            },
        );
        println!("       at {agency}: #{} {verified}", delivery.sequence);
    }
    Ok(first.sequence)
}

/// Whether `delivery` is a joint announcement the gateway released.
fn is_release(delivery: &pb::Delivery) -> bool {
    delivery.sender == GATEWAY_SENDER
        && delivery
            .notification
            .as_ref()
            .is_some_and(|n| n.event == Event::AnnouncementReleased as i32)
}

/// Whether `delivery` is a supervision alert the gateway itself sent.
fn is_alert(delivery: &pb::Delivery) -> bool {
    delivery.sender == GATEWAY_SENDER
        && delivery
            .notification
            .as_ref()
            .is_some_and(|n| n.event == Event::SupervisionAlert as i32)
}

/// Today's local date in the mechanism's zone (Asia/Shanghai, UTC+8 all
/// year), which the gateway's reports count received notifications by.
fn local_today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .date()
}

/// Waits until every sink has written the gateway's ANNOUNCEMENT_RELEASED
/// (the last notification; the gateway gives it its sequence, so it is
/// found by its event), or [`COLLECT_TIMEOUT`] passes, shows it, and reads
/// every inbox.
async fn collect(
    daemons: &[AdapterDaemon],
    story: &Story,
    gateway_key: &[u8; 32],
    deadline: Instant,
) -> anyhow::Result<Inboxes<'static>> {
    let waiting_since = Instant::now();
    let collect_deadline = deadline.min(Instant::now() + COLLECT_TIMEOUT);
    let mut released: Vec<(&str, pb::Delivery)> = Vec::new();
    loop {
        released.clear();
        let mut waiting = Vec::new();
        for daemon in daemons {
            let release = daemon
                .deliveries()
                .with_context(|| format!("reading {}'s deliveries", daemon.agency()))?
                .into_iter()
                .find(is_release);
            match release {
                Some(release) => released.push((daemon.agency(), release)),
                None => waiting.push(daemon.agency()),
            }
        }
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= collect_deadline {
            println!(
                "\n  (after {COLLECT_TIMEOUT:?}, no ANNOUNCEMENT_RELEASED at {}: \
                 reporting what arrived)",
                waiting.join(", ")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some((_, first)) = released.first() {
        let n = first.notification.clone().unwrap_or_default();
        let verified = released
            .iter()
            .filter(|(_, d)| {
                d.notification.as_ref().is_some_and(|n| {
                    liandong_core::signing::verify(n, GATEWAY_SENDER, gateway_key).is_ok()
                })
            })
            .count();
        println!(
            "  {:<10}  {GATEWAY_SENDER} → {} ({}) → #{}  (released on the third approval #{}; \
             in {} case systems {:.1} s after it was stored)",
            "(release)",
            event_name(n.event),
            level_name(n.confidentiality),
            first.sequence,
            story.approvals.last().copied().unwrap_or_default(),
            released.len(),
            waiting_since.elapsed().as_secs_f64()
        );
        println!("       {}", n.summary);
        println!(
            "       signature verified with pki/gateway.signing.pub at {verified} of {}",
            released.len()
        );
    }
    let mut inboxes = Vec::new();
    for (agency, daemon) in SUBSCRIBERS.into_iter().zip(daemons) {
        let deliveries = daemon
            .deliveries()
            .with_context(|| format!("reading {agency}'s deliveries"))?;
        inboxes.push((agency, deliveries));
    }
    Ok(Inboxes(inboxes))
}

/// What each agency received, as its case system found it.
fn report(inboxes: &Inboxes<'_>, story: &Story, names: &Names<'_>) {
    println!("\nDeliveries, as each agency's case system found them in its folder sink");
    for (agency, deliveries) in &inboxes.0 {
        println!(
            "\n  {}: {} of {} notifications",
            names.display(agency),
            deliveries.len(),
            // The story, the gateway's alert and its release.
            story.published.len() + 2
        );
        for delivery in deliveries {
            println!("    {}", describe(delivery));
            if delivery.withheld {
                let contact = delivery
                    .notification
                    .as_ref()
                    .map_or("", |n| n.contact.as_str());
                println!("       contact: {contact}");
            }
            if !delivery.redacted_fields.is_empty() {
                println!("       redacted: {}", delivery.redacted_fields.join(", "));
            }
            if !delivery.copied_by_rule.is_empty() {
                println!("       statutory copy: {}", delivery.copied_by_rule);
            }
            if delivery.sequence == story.clue && (*agency == PSB || *agency == BYSTANDER) {
                print_fields(delivery, &["parties", "informant"]);
            }
            if *agency == PSB && delivery.sequence == story.transfer {
                print_fields(delivery, &[]);
            }
            if *agency == PRESS && is_release(delivery) {
                print_fields(delivery, &["announcement"]);
            }
        }
    }
}

/// The point of the mechanism, checked on what arrived.
fn check_disclosure(inboxes: &Inboxes<'_>, story: &Story, registry: &Registry) -> Vec<Check> {
    let mut checks = restricted_kept_from_outsiders(inboxes, story);
    checks.push(procuratorate_gets_the_statutory_copy(inboxes, story));
    checks.push(supervisor_gets_a_stub(inboxes, story, registry));
    checks.push(transfer_reaches_police_intact(inboxes, story));
    checks.push(clue_stripped_for_restricted_clearance(inboxes, story));
    checks.push(clue_whole_for_confidential_clearance(inboxes, story));
    checks.push(draft_only_at_cosigners(inboxes, story));
    checks.push(released_after_the_last_approval(inboxes, story));
    checks.push(approvals_name_the_draft_s_digest(inboxes, story));
    checks
}

/// RESTRICTED content reaches only its need-to-know recipients.
fn restricted_kept_from_outsiders(inboxes: &Inboxes<'_>, story: &Story) -> Vec<Check> {
    let transfer = story.transfer;
    let mut checks = Vec::new();
    for (agency, role) in [
        (BYSTANDER, "an environment bureau not party to the case"),
        (PRESS, "an observer"),
    ] {
        let restricted: Vec<String> = inboxes
            .of(agency)
            .iter()
            .filter(|d| level_of(d) >= Level::Restricted as i32)
            .map(describe)
            .collect();
        let mut line = format!(
            "{agency} ({role}) did not receive the RESTRICTED transfer #{transfer}, \
             nor any RESTRICTED notification"
        );
        if !restricted.is_empty() {
            line.push_str(&format!("; it received: {}", restricted.join(" | ")));
        }
        checks.push((restricted.is_empty(), line));
    }
    checks
}

/// The county procuratorate, left out of the transfer's recipients, gets
/// it in full as the statutory copy of the transfer letter.
fn procuratorate_gets_the_statutory_copy(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let transfer = story.transfer;
    let rule = "transfer-copied-to-procuratorate";
    let (ok, detail) = match inboxes.delivered(PROCURATORATE, transfer) {
        None => (false, "it was not delivered".to_owned()),
        Some(d) if d.withheld => (false, format!("it was withheld: {}", d.withheld_reason)),
        Some(d) if d.copied_by_rule != rule => (
            false,
            format!("it names the copy rule {:?}", d.copied_by_rule),
        ),
        Some(_) => (true, format!("copy rule {rule}")),
    };
    (
        ok,
        format!(
            "{PROCURATORATE} (left out of the recipients; the transfer letter is copied to the \
             procuratorate at the same level) got the transfer #{transfer} in full ({detail})"
        ),
    )
}

/// The city procuratorate, not a party to the transfer but its
/// supervisor, gets a withheld stub saying whom to ask.
fn supervisor_gets_a_stub(inboxes: &Inboxes<'_>, story: &Story, registry: &Registry) -> Check {
    let transfer = story.transfer;
    let registered_contact = registry
        .agencies()
        .find(|a| a.id.as_str() == EEB)
        .map(|a| a.contact.clone())
        .unwrap_or_default();
    let (ok, detail) = match inboxes.delivered(CITY_PROCURATORATE, transfer) {
        None => (false, "it was not delivered".to_owned()),
        Some(d) if !d.withheld => (false, "it was delivered in full".to_owned()),
        Some(d) if !d.withheld_reason.starts_with("oversight") => (
            false,
            format!("it was withheld for another reason: {}", d.withheld_reason),
        ),
        Some(d) => {
            let n = d.notification.clone().unwrap_or_default();
            let mut extra = Vec::new();
            if !n.summary.is_empty() {
                extra.push("a summary");
            }
            if n.body.is_some() {
                extra.push("a body");
            }
            if !n.confidentiality_note.is_empty() {
                extra.push("the note");
            }
            if !n.recipients.is_empty() {
                extra.push("the recipients");
            }
            if !extra.is_empty() {
                (false, format!("the stub carries {}", extra.join(", ")))
            } else if n.contact != registered_contact {
                (
                    false,
                    format!(
                        "its contact is {:?}, not {EEB}'s registered {registered_contact:?}",
                        n.contact
                    ),
                )
            } else {
                (
                    true,
                    format!(
                        "no summary, body or note; contact {} as registered for {EEB}",
                        n.contact
                    ),
                )
            }
        }
    };
    (
        ok,
        format!(
            "{CITY_PROCURATORATE} (no party; it supervises transfers in the city, {REGION} \
             included) got the transfer #{transfer} as a withheld stub ({detail})"
        ),
    )
}

/// The police, the transfer's recipient, get it whole.
fn transfer_reaches_police_intact(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let transfer = story.transfer;
    let sent_body = demo_story::transfer_body();
    let (ok, detail) = match inboxes.delivered(PSB, transfer) {
        None => (false, "it was not delivered".to_owned()),
        Some(d) if d.withheld => (false, format!("it was withheld: {}", d.withheld_reason)),
        Some(d) => match d.notification.as_ref().and_then(|n| n.body.as_ref()) {
            Some(body) if *body == sent_body => (
                true,
                format!(
                    "body intact: title, {} parties, {} measurements",
                    body.parties.len(),
                    body.measurements.len()
                ),
            ),
            Some(_) => (false, "its body differs from the one sent".to_owned()),
            None => (false, "it came without its body".to_owned()),
        },
    };
    (
        ok,
        format!("{PSB} received the transfer #{transfer} with its body ({detail})"),
    )
}

/// Fields marked CONFIDENTIAL in the contract are stripped for a bureau
/// cleared only to RESTRICTED, and listed as redacted.
fn clue_stripped_for_restricted_clearance(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let clue = story.clue;
    let mut stripped = demo_story::clue_body();
    stripped.informant = None;
    for party in &mut stripped.parties {
        party.identifier.clear();
        party.contact.clear();
    }
    let (ok, detail) = match inboxes.delivered(BYSTANDER, clue) {
        None => (false, "it was not delivered".to_owned()),
        Some(d) if d.withheld => (false, format!("it was withheld: {}", d.withheld_reason)),
        Some(d) => {
            let body = d.notification.as_ref().and_then(|n| n.body.clone());
            let listed = ["body.parties.identifier", "body.informant"]
                .iter()
                .all(|field| d.redacted_fields.iter().any(|r| r == field));
            match body {
                None => (false, "it came without its body".to_owned()),
                Some(body) if body.informant.is_some() => {
                    (false, "it came with the informant".to_owned())
                }
                Some(body) if body.parties.iter().any(|p| !p.identifier.is_empty()) => {
                    (false, "it came with a party identifier".to_owned())
                }
                Some(body) if body != stripped => (
                    false,
                    "more than the marked fields changed, or a party contact came through"
                        .to_owned(),
                ),
                Some(_) if !listed => (
                    false,
                    format!(
                        "stripped, but redacted_fields lists only [{}]",
                        d.redacted_fields.join(", ")
                    ),
                ),
                Some(_) => (
                    true,
                    format!(
                        "redacted_fields: {}; the rest intact",
                        d.redacted_fields.join(", ")
                    ),
                ),
            }
        }
    };
    (
        ok,
        format!(
            "{BYSTANDER} (cleared RESTRICTED) got the clue #{clue} with the informant and \
             the party identifier stripped ({detail})"
        ),
    )
}

/// The police, cleared CONFIDENTIAL, get the clue as sent.
fn clue_whole_for_confidential_clearance(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let clue = story.clue;
    let sent_clue = demo_story::clue_body();
    let (ok, detail) = match inboxes.delivered(PSB, clue) {
        None => (false, "it was not delivered".to_owned()),
        Some(d) if d.withheld => (false, format!("it was withheld: {}", d.withheld_reason)),
        Some(d) => match d.notification.as_ref().and_then(|n| n.body.as_ref()) {
            None => (false, "it came without its body".to_owned()),
            Some(body) if body.informant.is_none() => {
                (false, "it came without the informant".to_owned())
            }
            Some(body) if *body != sent_clue => {
                (false, "its body differs from the one sent".to_owned())
            }
            Some(_) if !d.redacted_fields.is_empty() => {
                (false, format!("redacted: {}", d.redacted_fields.join(", ")))
            }
            Some(_) => (
                true,
                "informant, party identifier and contact as sent; nothing redacted".to_owned(),
            ),
        },
    };
    (
        ok,
        format!("{PSB} (cleared CONFIDENTIAL) got the clue #{clue} with the informant ({detail})"),
    )
}

/// The notification the story published at `sequence`.
fn published_at(story: &Story, sequence: u64) -> Option<&pb::Notification> {
    story
        .published
        .iter()
        .find(|(_, s)| *s == sequence)
        .map(|(n, _)| n)
}

/// The draft, marked PUBLIC, reached its drafter and its co-signers in
/// full and nobody else: not the press office, not the bystander bureau.
fn draft_only_at_cosigners(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let draft = story.announcement;
    let summary = published_at(story, draft).map_or("", |n| n.summary.as_str());
    let mut problems = Vec::new();
    for agency in SUBSCRIBERS {
        let party = agency == EEB || COSIGNERS.contains(&agency);
        match (party, inboxes.delivered(agency, draft)) {
            (true, None) => problems.push(format!("{agency}: not delivered")),
            (true, Some(d)) if d.withheld => {
                problems.push(format!("{agency}: withheld ({})", d.withheld_reason));
            }
            (true, Some(d))
                if d.notification.as_ref().map(|n| n.summary.as_str()) != Some(summary) =>
            {
                problems.push(format!("{agency}: another text arrived"));
            }
            (false, Some(d)) => problems.push(format!("{agency} received {}", describe(d))),
            _ => {}
        }
    }
    let mut line = format!(
        "the draft #{draft} (marked PUBLIC) reached only {EEB} (drafter) and its co-signers {}, \
         in full; {PRESS} (observer) and {BYSTANDER} received nothing of it",
        COSIGNERS.join(", ")
    );
    if !problems.is_empty() {
        line.push_str(&format!("; but {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// Every co-signer approved, and the gateway released the draft once,
/// after the third approval: no release anywhere has a sequence at or
/// before it.
fn released_after_the_last_approval(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let draft = story.announcement;
    let approvals = &story.approvals;
    let approvers: Vec<&str> = story
        .published
        .iter()
        .filter(|(n, _)| n.event == Event::AnnouncementApproved as i32)
        .map(|(n, _)| n.sender.as_str())
        .collect();
    let last = approvals.last().copied().unwrap_or_default();
    let mut problems = Vec::new();
    if approvers != COSIGNERS {
        problems.push(format!("the approvals came from {}", approvers.join(", ")));
    }
    if approvals.iter().any(|a| *a <= draft) {
        problems.push("an approval precedes the draft".to_owned());
    }
    let release = inboxes.release();
    match release {
        None => problems.push(format!("{EEB} received no release")),
        Some(release) if release <= last => problems.push(format!(
            "the release #{release} does not come after the third approval #{last}"
        )),
        Some(_) => {}
    }
    for agency in SUBSCRIBERS {
        let releases: Vec<u64> = inboxes
            .of(agency)
            .iter()
            .filter(|d| is_release(d))
            .map(|d| d.sequence)
            .collect();
        if releases.len() > 1 || releases.iter().any(|r| Some(*r) != release) {
            problems.push(format!(
                "{agency} received releases #{}",
                releases
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", #")
            ));
        }
    }
    let approved: Vec<String> = approvals.iter().map(|a| format!("#{a}")).collect();
    let mut line = format!(
        "{} approved the draft #{draft} in turn ({}); the gateway released it once, as #{}, \
         after the third approval #{last} and not before (no release at or before #{last} at \
         any subscriber)",
        COSIGNERS.join(", "),
        approved.join(", "),
        release.map_or_else(|| "?".to_owned(), |r| r.to_string())
    );
    if !problems.is_empty() {
        line.push_str(&format!("; but {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// The gateway's ANNOUNCEMENT_RELEASED reached every subscriber in full:
/// PUBLIC, signed with the gateway's key, carrying the draft's text and
/// naming the draft and the three approvals.
fn release_reaches_everyone_signed(
    inboxes: &Inboxes<'_>,
    story: &Story,
    gateway_key: &[u8; 32],
) -> Check {
    let Some(release) = inboxes.release() else {
        return (
            false,
            "no subscriber received the gateway's ANNOUNCEMENT_RELEASED".to_owned(),
        );
    };
    let draft = published_at(story, story.announcement)
        .cloned()
        .unwrap_or_default();
    let approvals: Vec<(String, String, u64)> = story
        .approvals
        .iter()
        .filter_map(|a| {
            published_at(story, *a).map(|n| (n.sender.clone(), n.notification_id.clone(), *a))
        })
        .collect();
    let mut problems = Vec::new();
    for agency in SUBSCRIBERS {
        let Some(d) = inboxes.delivered(agency, release) else {
            problems.push(format!("{agency}: not delivered"));
            continue;
        };
        if d.withheld {
            problems.push(format!("{agency}: withheld ({})", d.withheld_reason));
            continue;
        }
        let n = d.notification.clone().unwrap_or_default();
        if d.sender != GATEWAY_SENDER || n.event != Event::AnnouncementReleased as i32 {
            problems.push(format!("{agency}: #{release} is not the gateway's release"));
            continue;
        }
        if n.confidentiality != Level::Public as i32 {
            problems.push(format!(
                "{agency}: it is marked {}",
                level_name(n.confidentiality)
            ));
        }
        if let Err(error) = liandong_core::signing::verify(&n, GATEWAY_SENDER, gateway_key) {
            problems.push(format!("{agency}: the signature does not verify: {error}"));
        }
        let mut body = n.body.clone().unwrap_or_default();
        let announcement = body.announcement.take().unwrap_or_default();
        if n.summary != draft.summary
            || Some(&body) != draft.body.as_ref()
            || n.case_ref != CASE_REF
        {
            problems.push(format!("{agency}: its text is not the draft's"));
        }
        let named = announcement.draft.unwrap_or_default();
        if (
            named.sender.as_str(),
            named.notification_id.as_str(),
            named.sequence,
        ) != (EEB, draft.notification_id.as_str(), story.announcement)
        {
            problems.push(format!(
                "{agency}: it names the draft {}/{} #{}",
                named.sender, named.notification_id, named.sequence
            ));
        }
        let listed: Vec<(String, String, u64)> = announcement
            .approvals
            .into_iter()
            .map(|a| (a.sender, a.notification_id, a.sequence))
            .collect();
        if listed != approvals {
            problems.push(format!("{agency}: it names the approvals {listed:?}"));
        }
    }
    let mut line = format!(
        "all {} subscribers, {PRESS} included, received the gateway's PUBLIC \
         ANNOUNCEMENT_RELEASED #{release} with the draft's text, naming the draft #{} and the \
         approvals #{}",
        SUBSCRIBERS.len(),
        story.announcement,
        story
            .approvals
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", #")
    );
    if problems.is_empty() {
        line.push_str(" (signature verified with the gateway's public key at each)");
    } else {
        line.push_str(&format!("; but {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// Each approval names the draft by the digest its co-signer recomputes
/// from the draft it received, which is the digest the gateway recorded
/// (the release's reference to the draft); and the release names each
/// approval by the digest of what its co-signer signed.
fn approvals_name_the_draft_s_digest(inboxes: &Inboxes<'_>, story: &Story) -> Check {
    let recorded = inboxes
        .release()
        .and_then(|r| inboxes.delivered(EEB, r))
        .and_then(|d| d.notification.as_ref())
        .and_then(|n| n.body.as_ref())
        .and_then(|b| b.announcement.clone())
        .unwrap_or_default();
    let draft_digest = recorded.draft.map(|d| d.sha256).unwrap_or_default();
    let mut problems = Vec::new();
    if draft_digest.is_empty() {
        problems.push("the release names no draft digest".to_owned());
    }
    for &approval in &story.approvals {
        let Some(n) = published_at(story, approval) else {
            continue;
        };
        let cosigner = n.sender.as_str();
        let named = n
            .body
            .as_ref()
            .and_then(|b| b.announcement.as_ref())
            .and_then(|a| a.draft.as_ref())
            .map_or("", |d| d.sha256.as_str());
        if named != draft_digest {
            problems.push(format!(
                "{cosigner}'s approval #{approval} names {named}, the gateway recorded \
                 {draft_digest}"
            ));
        }
        // What the co-signer's case system computes from the draft it received.
        let received = inboxes
            .delivered(cosigner, story.announcement)
            .and_then(|d| d.notification.as_ref())
            .map(|n| liandong_core::signing::signed_digest(n, &n.sender));
        if received.as_deref() != Some(named) {
            problems.push(format!(
                "{cosigner} computes {received:?} from the draft it received, not {named}"
            ));
        }
        let listed = recorded
            .approvals
            .iter()
            .find(|a| a.sequence == approval)
            .map(|a| a.sha256.as_str());
        let signed = demo_story::digest_as_signed(n);
        if listed != Some(signed.as_str()) {
            problems.push(format!(
                "the release names {cosigner}'s approval by {listed:?}, not {signed}"
            ));
        }
    }
    let mut line = format!(
        "the three approvals name the draft #{} by the SHA-256 of what {EEB} signed, {}…, which \
         each co-signer recomputes from the draft it received and the gateway recorded; the \
         release names each approval by its own digest",
        story.announcement,
        draft_digest.get(..16).unwrap_or(&draft_digest)
    );
    if !problems.is_empty() {
        line.push_str(&format!("; but {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// The gateway's SUPERVISION_ALERT reached the supervising procuratorate
/// and the police in full, signed with the gateway's key, naming the rule,
/// the late agency, the supervisor and the receipt that started the clock.
fn alert_reaches_supervisor_and_police(
    inboxes: &Inboxes<'_>,
    story: &Story,
    gateway_key: &[u8; 32],
) -> Check {
    let alert = story.alert;
    let mut problems = Vec::new();
    for agency in ALERTED {
        let Some(d) = inboxes.delivered(agency, alert) else {
            problems.push(format!("{agency}: not delivered"));
            continue;
        };
        if d.withheld {
            problems.push(format!("{agency}: withheld ({})", d.withheld_reason));
            continue;
        }
        let n = d.notification.clone().unwrap_or_default();
        if d.sender != GATEWAY_SENDER || n.event != Event::SupervisionAlert as i32 {
            problems.push(format!("{agency}: #{alert} is not the gateway's alert"));
            continue;
        }
        if let Err(error) = liandong_core::signing::verify(&n, GATEWAY_SENDER, gateway_key) {
            problems.push(format!("{agency}: the signature does not verify: {error}"));
        }
        let body = n.body.and_then(|b| b.alert).unwrap_or_default();
        let started = body.started_by.map_or(0, |s| s.sequence);
        if body.rule != DRILL_RULE
            || body.late_agency != PSB
            || body.supervisor != PROCURATORATE
            || started != story.received
            || n.case_ref != CASE_REF
        {
            problems.push(format!(
                "{agency}: it names rule {:?}, late {:?}, supervisor {:?}, started by #{started}, \
                 case {:?}",
                body.rule, body.late_agency, body.supervisor, n.case_ref
            ));
        }
    }
    let mut line = format!(
        "{PROCURATORATE} (supervisor) and {PSB} (late) received the gateway's signed \
         SUPERVISION_ALERT #{alert} for {DRILL_RULE}, started by the receipt #{}",
        story.received
    );
    if problems.is_empty() {
        line.push_str(" (signature verified with the gateway's public key at both)");
    } else {
        line.push_str(&format!("; but {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// The police's late CASE_FILED closed the breached clock, after its due
/// time, as the gateway recorded it.
async fn late_filing_closes_the_breach(dir: &Path, story: &Story) -> Check {
    let row = deadline_row(dir).await;
    let (ok, detail) = match row {
        Err(error) => (false, format!("reading the deadline failed: {error:#}")),
        Ok(None) => (false, "the gateway recorded no such deadline".to_owned()),
        Ok(Some(row)) => {
            let late_by = row.stopped_at.map(|at| (at - row.due_at) as f64 / 1e6);
            if row.alert_sequence != Some(story.alert as i64) || row.breached_at.is_none() {
                (false, format!("its alert is {:?}", row.alert_sequence))
            } else if row.stopped_sequence != Some(story.filed as i64) {
                (
                    false,
                    format!("it was stopped by {:?}", row.stopped_sequence),
                )
            } else {
                match late_by {
                    Some(late_by) if late_by > 0.0 => {
                        (true, format!("{late_by:.1} s after the due time"))
                    }
                    _ => (
                        false,
                        format!("it was stopped {late_by:?} s after its due time"),
                    ),
                }
            }
        }
    };
    (
        ok,
        format!(
            "the late filing decision #{} closed the breached {DRILL_RULE} clock of the receipt \
             #{}, late ({detail})",
            story.filed, story.received
        ),
    )
}

/// The gateway's record of the drill deadline (unix micros).
struct DeadlineRow {
    due_at: i64,
    breached_at: Option<i64>,
    alert_sequence: Option<i64>,
    stopped_sequence: Option<i64>,
    stopped_at: Option<i64>,
}

/// `due_at, breached_at, alert_sequence, stopped_sequence, stopped_at` of
/// a `deadlines` row.
type DeadlineColumns = (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Reads the demo case's [`DRILL_RULE`] deadline from the gateway's
/// SQLite database.
async fn deadline_row(dir: &Path) -> anyhow::Result<Option<DeadlineRow>> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}?mode=ro",
        dir.join("data/liandong.db").display()
    );
    let mut conn = sqlx::AnyConnection::connect(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let row: Option<DeadlineColumns> = sqlx::query_as(
        "SELECT due_at, breached_at, alert_sequence, stopped_sequence, stopped_at \
             FROM deadlines WHERE case_ref = $1 AND rule = $2",
    )
    .bind(CASE_REF)
    .bind(DRILL_RULE)
    .fetch_optional(&mut conn)
    .await
    .context("reading the deadlines table")?;
    conn.close().await.ok();
    Ok(row.map(
        |(due_at, breached_at, alert_sequence, stopped_sequence, stopped_at)| DeadlineRow {
            due_at,
            breached_at,
            alert_sequence,
            stopped_sequence,
            stopped_at,
        },
    ))
}

/// Runs `liandong-gateway report` on the demo's config for the days the
/// story was received on: prints the table, and returns the report (its
/// JSON form) for the checks.
async fn statistics_report(dir: &Path, story: &Story) -> anyhow::Result<pb::StatisticsReport> {
    let gateway = liandong_tests::binary("liandong-gateway");
    let config = dir.join("gateway.toml");
    let (from, to) = (story.first_day.to_string(), story.last_day.to_string());
    let run = |format: &str| {
        let output = std::process::Command::new(&gateway)
            .arg("report")
            .arg("--config")
            .arg(&config)
            .args(["--from", &from, "--to", &to, "--format", format])
            .env("NO_COLOR", "1")
            .output()
            .with_context(|| format!("running {}", gateway.display()))?;
        if !output.status.success() {
            bail!(
                "liandong-gateway report --format {format} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8(output.stdout).context("the report is UTF-8")
    };
    let (table, json) =
        tokio::task::block_in_place(|| Ok::<_, anyhow::Error>((run("table")?, run("json")?)))?;
    println!(
        "\nThe statistics report, as the operator prints it on the gateway host \
         (counted by the gateway's receipt dates, Asia/Shanghai):\n  \
         liandong-gateway report --config gateway.toml --from {from} --to {to} --format table\n"
    );
    for line in table.lines() {
        println!("    {line}");
    }
    from_json::<pb::StatisticsReport>(&json)
        .map_err(|e| anyhow!("the report's JSON form does not parse: {e}"))
}

/// The report counts what the story published: every notification per
/// sender and event (the approvals, the gateway's alert and its release
/// included), the case's steps, the filing lead time and the breach,
/// opened and closed late.
fn report_counts_the_story(report: &pb::StatisticsReport, story: &Story) -> Check {
    use std::collections::BTreeMap;
    let mut expected: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for (n, _) in &story.published {
        *expected.entry((n.sender.clone(), n.event)).or_default() += 1;
    }
    for event in [Event::SupervisionAlert, Event::AnnouncementReleased] {
        *expected
            .entry((GATEWAY_SENDER.to_owned(), event as i32))
            .or_default() += 1;
    }
    let counted: BTreeMap<(String, i32), u64> = report
        .events
        .iter()
        .map(|e| ((e.agency.clone(), e.event), e.count))
        .collect();
    // One case: a figure is 1 when the story has its event, else 0.
    let has =
        |event: Event| u64::from(story.published.iter().any(|(n, _)| n.event == event as i32));
    let figures = [
        ("cases_opened", report.cases_opened, 1),
        (
            "cases_transferred",
            report.cases_transferred,
            has(Event::CaseTransferred),
        ),
        ("cases_filed", report.cases_filed, has(Event::CaseFiled)),
        (
            "cases_declined",
            report.cases_declined,
            has(Event::FilingDeclined),
        ),
        (
            "cases_prosecuted",
            report.cases_prosecuted,
            has(Event::ProsecutionFiled),
        ),
        (
            "cases_judged",
            report.cases_judged,
            has(Event::JudgmentRecorded),
        ),
        ("lead_time_samples", report.lead_time_samples, 1),
        ("breaches_opened", report.breaches_opened, 1),
        ("breaches_closed_late", report.breaches_closed_late, 1),
    ];
    let mut problems: Vec<String> = figures
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name} {got}, not {want}"))
        .collect();
    if counted != expected {
        problems.push(format!(
            "events per sender and event {counted:?}, not {expected:?}"
        ));
    }
    let total: u64 = expected.values().sum();
    let mut line = format!(
        "the report for {}..{} counts what was published: {total} notifications by sender and \
         event (the co-signers' approvals and the gateway's alert and release included), 1 case \
         opened, transferred, filed, prosecuted and judged, 1 breach opened and closed late",
        report.from, report.to
    );
    if !problems.is_empty() {
        line.push_str(&format!("; but {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// The daemons (closing their subscriptions), then the gateway, each on
/// SIGTERM and each expected to exit cleanly.
async fn shut_down(
    mut daemons: Vec<AdapterDaemon>,
    mut gateway: GatewayProcess,
) -> anyhow::Result<Vec<Check>> {
    let stopped =
        futures::future::join_all(daemons.iter_mut().map(|d| d.stop(ADAPTER_STOP_TIMEOUT))).await;
    let mut unclean = Vec::new();
    let mut statuses = Vec::new();
    for (agency, stopped) in SUBSCRIBERS.into_iter().zip(stopped) {
        match stopped {
            Ok(status) if status.success() => statuses.push(status.to_string()),
            Ok(status) => unclean.push(format!("{agency}: {status}")),
            Err(error) => unclean.push(format!("{error:#}")),
        }
    }
    // A daemon that did not stop is killed before the gateway stops.
    drop(daemons);
    statuses.dedup();
    let mut line = format!(
        "all {} adapter daemons stopped on SIGTERM and exited cleanly",
        SUBSCRIBERS.len()
    );
    if unclean.is_empty() {
        line.push_str(&format!(" ({})", statuses.join(", ")));
    } else {
        line.push_str(&format!("; not: {}", unclean.join("; ")));
    }
    let mut checks = vec![(unclean.is_empty(), line)];

    gateway.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| gateway.wait(STOP_TIMEOUT));
    drop(gateway);
    let status = status.context("stopping the gateway")?;
    checks.push((
        status.success(),
        format!("the gateway stopped on SIGTERM and exited cleanly ({status})"),
    ));
    Ok(checks)
}

/// Every delivery each adapter handed to its sink was verified against the
/// registry's keys (`[verify]`), the gateway's alerts and releases with its
/// `[gateway]` key; none was rejected or passed unverified. Withheld stubs
/// and redacted deliveries carry no verifiable signature and are counted
/// apart. Read from each adapter's `status --json`, once its counts cover
/// every file in its inbox.
async fn every_delivery_verified(dir: &Path, adapter: &Path, deadline: Instant) -> Check {
    let mut totals = [0u64; 4];
    let mut problems = Vec::new();
    for agency in SUBSCRIBERS {
        let files = AdapterFiles::new(dir, agency);
        let inbox = std::fs::read_dir(&files.inbox).map_or(0, |d| d.count() as u64);
        let counts = loop {
            let output = tokio::process::Command::new(adapter)
                .arg("--config")
                .arg(&files.config)
                .args(["status", "--json"])
                .output()
                .await;
            let report: Option<serde_json::Value> = output
                .ok()
                .and_then(|o| serde_json::from_slice(&o.stdout).ok());
            let counts = report.map(|r| {
                let v = &r["subscriptions"][0]["verification"];
                ["verified", "unverifiable", "failed_passed", "rejected"]
                    .map(|k| v[k].as_u64().unwrap_or(0))
            });
            match counts {
                Some(c) if c[0] + c[1] + c[2] >= inbox => break Some(c),
                _ if Instant::now() > deadline => break counts,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        match counts {
            None => problems.push(format!("{agency}: no status")),
            Some(c) => {
                if c[2] + c[3] > 0 || c[0] == 0 {
                    problems.push(format!(
                        "{agency}: {} verified, {} failed and passed, {} rejected",
                        c[0], c[2], c[3]
                    ));
                }
                for (total, count) in totals.iter_mut().zip(c) {
                    *total += count;
                }
            }
        }
    }
    let mut line = format!(
        "every delivery verified by its receiving adapter against the registry's keys: \
         {} verified (the gateway's alerts and releases with its [gateway] key), \
         {} unverifiable (withheld or redacted by the gateway), {} rejected",
        totals[0], totals[1], totals[3]
    );
    if !problems.is_empty() {
        line.push_str(&format!("; not: {}", problems.join("; ")));
    }
    (problems.is_empty(), line)
}

/// Prints the checks; the demo passes only when every one passed within
/// the deadline.
fn verdict(checks: &[Check], deadline: Instant) -> anyhow::Result<()> {
    println!("\nChecks");
    for (ok, line) in checks {
        println!("  {} {line}", if *ok { "PASS" } else { "FAIL" });
    }
    let failed = checks.iter().filter(|(ok, _)| !ok).count();
    if failed > 0 {
        bail!("{failed} of {} checks FAILED", checks.len());
    }
    if Instant::now() > deadline {
        bail!(overdue("the demo ended"));
    }
    println!("\nAll {} checks passed.", checks.len());
    Ok(())
}

/// The gateway's config: loopback, the dev PKI, SQLite in the directory.
fn gateway_config() -> String {
    "listen = \"127.0.0.1:0\"\n\
     registry = \"agencies.toml\"\n\
     \n\
     [tls]\n\
     ca = \"pki/ca.crt\"\n\
     cert = \"pki/gateway.crt\"\n\
     key = \"pki/gateway.key\"\n\
     crls = [\"pki/ca.crl\"]\n\
     handshake_timeout_seconds = 5\n\
     \n\
     [signing]\n\
     key = \"pki/gateway.signing.pk8\"\n\
     require_signatures = true\n\
     \n\
     [mechanism]\n\
     deadlines = \"drill-deadlines.toml\"\n\
     time_zone = \"Asia/Shanghai\"\n\
     \n\
     [database]\n\
     url = \"sqlite://data/liandong.db\"\n\
     \n\
     [delivery]\n\
     poll_interval_ms = 200\n\
     \n\
     [shutdown]\n\
     grace_seconds = 5\n"
        .to_owned()
}

/// `path` relative to the work directory, for display.
fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .map_or_else(|_| path.to_path_buf(), PathBuf::from)
        .display()
        .to_string()
}

fn level_of(delivery: &pb::Delivery) -> i32 {
    delivery
        .notification
        .as_ref()
        .map_or(0, |n| n.confidentiality)
}

/// `#seq EVENT LEVEL from SENDER: summary` (or `[withheld: reason]`).
fn describe(delivery: &pb::Delivery) -> String {
    let n = delivery.notification.clone().unwrap_or_default();
    let content = if delivery.withheld {
        format!("[withheld: {}]", delivery.withheld_reason)
    } else {
        n.summary
    };
    format!(
        "#{} {} {} from {}: {content}",
        delivery.sequence,
        event_name(n.event),
        level_name(n.confidentiality),
        delivery.sender
    )
}

/// Fields of the structured body as it arrived, in the documented JSON
/// form, one line each under the delivery's line: `fields`, or all of them
/// when empty. A named field that did not arrive is shown as absent.
fn print_fields(delivery: &pb::Delivery, fields: &[&str]) {
    let Some(notification) = &delivery.notification else {
        return;
    };
    let json = to_json(notification);
    let Some(body) = json.get("body").and_then(|b| b.as_object()) else {
        println!("       (no body)");
        return;
    };
    if fields.is_empty() {
        println!("       body (JSON):");
        for (field, value) in body {
            println!("         {field}: {value}");
        }
        return;
    }
    for field in fields {
        match body.get(*field) {
            Some(value) => println!("       body.{field}: {value}"),
            None => println!("       body.{field}: (absent)"),
        }
    }
}
