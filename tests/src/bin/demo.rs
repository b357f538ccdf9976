//! `liandong-demo`: one environmental-crime case travelling through a real
//! Liandong (联动) gateway, end to end, on this machine.
//!
//! The demo makes a throwaway directory with a development PKI (a CA, the
//! gateway's server certificate and one client certificate per agency of
//! `deploy/dev/agencies.toml`) and a SQLite database, starts the real
//! `liandong-gateway` binary on a loopback port, and connects each agency
//! over mutual TLS with the agency-adapter library. It then plays a
//! hazardous-waste case in Xiangyuan county: the environment bureau shares a
//! clue and transfers the case to the police, the police acknowledge and
//! file it and request an arrest, the procuratorate approves the arrest,
//! prosecutes and records the judgment, and the three announce the outcome
//! to the public.
//!
//! Five agencies hold durable subscriptions while this happens, including an
//! environment bureau of another district and the press office, which are
//! no party to the case. The report shows what each of them received and
//! the closing checks verify the point of the mechanism: RESTRICTED content
//! reaches only its need-to-know recipients (with its full structured body),
//! while what is meant for everyone reaches everyone. The process exits 0
//! only when every check passes; the gateway is stopped with SIGTERM and the
//! directory removed (it is kept, with the gateway's log, on failure).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use liandong_adapter::GatewayClient;
use liandong_adapter::client::Subscription;
use liandong_adapter::config::GatewaySettings;
use liandong_core::json::to_json;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::registry::Registry;
use liandong_tests::demo_story::{
    self, BYSTANDER, CASE_REF, PRESS, PSB, REGION, SUBSCRIBERS, SUBSCRIPTION, event_name,
    level_name,
};
use liandong_tests::{GatewayProcess, Pki, REGISTRY};
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// How long all subscribers together may take to receive the whole story.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a subscription may take to end cleanly once closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the gateway may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

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
    // The gateway binary is built by running cargo in the workspace.
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
            // Dropping `run` has killed the gateway; the directory goes too.
            eprintln!("\ninterrupted; the gateway was stopped");
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
            let log = kept.join("gateway.log");
            if log.exists() {
                eprintln!("  gateway log: {}", log.display());
            }
            Err(error)
        }
    }
}

/// Plays the whole demo in `dir`. The gateway is killed if this returns
/// early (or is dropped).
async fn run(dir: &Path) -> anyhow::Result<()> {
    let registry = Registry::parse(REGISTRY, Path::new("deploy/dev/agencies.toml"))?;
    let display = |id: &str| -> String {
        registry
            .agencies()
            .find(|a| a.id.as_str() == id)
            .map_or_else(|| id.to_owned(), |a| format!("{} ({id})", a.name))
    };

    println!("联动 Liandong demo: one environmental-crime case through the gateway");
    println!("  case {CASE_REF}, Xiangyuan county (襄垣县, {REGION})");
    println!(
        "  work directory {} (dev PKI, SQLite database, gateway log; removed on exit)",
        dir.display()
    );

    // --- The gateway ------------------------------------------------------
    println!("\nStarting the gateway");
    let pki = Pki::create(dir).context("creating the development PKI")?;
    let config = dir.join("gateway.toml");
    std::fs::write(&config, gateway_config()).context("writing the gateway config")?;
    let log = dir.join("gateway.log");
    println!("  building liandong-gateway (the first run may take a few minutes)...");
    tokio::task::spawn_blocking(|| liandong_tests::binary("liandong-gateway", "liandong-gateway"))
        .await
        .map_err(|e| anyhow!("building liandong-gateway failed: {e}"))?;
    let mut gateway = {
        let (config, log) = (config.clone(), log.clone());
        tokio::task::spawn_blocking(move || GatewayProcess::start(&config, &log))
            .await?
            .context("starting liandong-gateway")?
    };
    println!(
        "  liandong-gateway listening on {} (pid {}), mutual TLS only",
        gateway.url(),
        gateway.pid()
    );

    // --- Every agency connects over mutual TLS ----------------------------
    let mut clients = BTreeMap::new();
    for agency in SUBSCRIBERS {
        let client = GatewayClient::connect(&settings(&gateway.url(), &pki.dir, agency))
            .await
            .with_context(|| format!("{agency} connecting to the gateway"))?;
        clients.insert(agency, client);
    }

    // --- 1. Subscribers first ----------------------------------------------
    println!("\nSubscribing: durable subscription \"{SUBSCRIPTION}\", from the beginning");
    let mut subscriptions = Vec::new();
    for agency in SUBSCRIBERS {
        let client = clients.get_mut(agency).expect("connected above");
        let subscription = client
            .subscribe(pb::SubscriptionOpen {
                name: SUBSCRIPTION.to_owned(),
                start: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Beginning(true)),
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("{agency} opening {SUBSCRIPTION}"))?;
        println!("  {}", display(agency));
        subscriptions.push((agency, subscription));
    }

    // --- 2-6. The story ------------------------------------------------------
    println!("\nPublishing: sender → event (level) → sequence");
    let steps = demo_story::steps();
    let mut published = Vec::new();
    for step in &steps {
        let client = clients
            .get_mut(step.sender)
            .expect("every sender subscribes");
        let n = &step.notification;
        let receipt = client.publish(n.clone()).await.map_err(|status| {
            anyhow!(
                "{} publishing {}: {:?}: {}",
                step.sender,
                n.notification_id,
                status.code(),
                status.message()
            )
        })?;
        let level = level_name(n.confidentiality);
        let audience = if n.recipients.is_empty() {
            level
        } else {
            format!("{level}, for {}", n.recipients.join(" + "))
        };
        println!(
            "  {}  {} → {} ({audience}) → #{}",
            step.date,
            step.sender,
            event_name(n.event),
            receipt.sequence
        );
        published.push((n.clone(), receipt.sequence));
    }
    let sequence_of = |event: Event| {
        published
            .iter()
            .find(|(n, _)| n.event == event as i32)
            .map(|(_, sequence)| *sequence)
            .expect("the story has this event")
    };
    let transfer = sequence_of(Event::CaseTransferred);
    let announcement = sequence_of(Event::JointAnnouncement);

    // --- Every subscriber reads until the announcement --------------------
    let deadline = Instant::now() + COLLECT_TIMEOUT;
    let collected = futures::future::join_all(
        subscriptions
            .into_iter()
            .map(|(agency, subscription)| collect(agency, subscription, announcement, deadline)),
    )
    .await;
    let mut inboxes = Vec::new();
    let mut failures = Vec::new();
    for (agency, result) in SUBSCRIBERS.iter().zip(collected) {
        match result {
            Ok(deliveries) => inboxes.push((*agency, deliveries)),
            Err(error) => failures.push(format!("  {agency}: {error:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "not every subscriber received the story:\n{}",
            failures.join("\n")
        );
    }

    // --- The report ---------------------------------------------------------
    println!("\nDeliveries, as each agency received (and acknowledged) them");
    for (agency, deliveries) in &inboxes {
        println!(
            "\n  {}: {} of {} notifications",
            display(agency),
            deliveries.len(),
            published.len()
        );
        for delivery in deliveries {
            println!("    {}", describe(delivery));
            if *agency == PSB && delivery.sequence == transfer {
                print_body(delivery);
            }
        }
    }

    // --- The checks -----------------------------------------------------------
    let inbox = |agency: &str| -> &[pb::Delivery] {
        inboxes
            .iter()
            .find(|(a, _)| *a == agency)
            .map_or(&[], |(_, d)| d.as_slice())
    };
    let mut checks: Vec<(bool, String)> = Vec::new();
    for (agency, role) in [
        (BYSTANDER, "an environment bureau not party to the case"),
        (PRESS, "an observer"),
    ] {
        let restricted: Vec<String> = inbox(agency)
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
    let sent_body = demo_story::transfer_body();
    let got = inbox(PSB).iter().find(|d| d.sequence == transfer);
    let (ok, detail) = match got {
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
    checks.push((
        ok,
        format!("{PSB} received the transfer #{transfer} with its body ({detail})"),
    ));
    let missing: Vec<&str> = SUBSCRIBERS
        .into_iter()
        .filter(|agency| {
            !inbox(agency)
                .iter()
                .any(|d| d.sequence == announcement && !d.withheld)
        })
        .collect();
    let mut line = format!(
        "all {} subscribers received the PUBLIC joint announcement #{announcement}",
        SUBSCRIBERS.len()
    );
    if !missing.is_empty() {
        line.push_str(&format!("; missing at {}", missing.join(", ")));
    }
    checks.push((missing.is_empty(), line));

    // --- Shutdown -------------------------------------------------------------
    drop(clients);
    gateway.signal(Signal::SIGTERM);
    let (gateway, status) = tokio::task::spawn_blocking(move || {
        let status = gateway.wait(STOP_TIMEOUT);
        (gateway, status)
    })
    .await?;
    drop(gateway);
    let status = status.context("stopping the gateway")?;
    checks.push((
        status.success(),
        format!("the gateway stopped on SIGTERM and exited cleanly ({status})"),
    ));

    println!("\nChecks");
    for (ok, line) in &checks {
        println!("  {} {line}", if *ok { "PASS" } else { "FAIL" });
    }
    let failed = checks.iter().filter(|(ok, _)| !ok).count();
    if failed > 0 {
        bail!("{failed} of {} checks FAILED", checks.len());
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
     handshake_timeout_seconds = 5\n\
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

/// How `agency` reaches the gateway: the files `liandong-certs` wrote.
fn settings(url: &str, pki: &Path, agency: &str) -> GatewaySettings {
    let agencies: PathBuf = pki.join("agencies");
    GatewaySettings {
        url: url.to_owned(),
        server_name: None,
        ca: pki.join("ca.crt"),
        cert: agencies.join(format!("{agency}.crt")),
        key: agencies.join(format!("{agency}.key")),
    }
}

/// Reads `subscription` until the delivery with sequence `last` (acking
/// each), then closes it.
async fn collect(
    agency: &str,
    mut subscription: Subscription,
    last: u64,
    deadline: Instant,
) -> anyhow::Result<Vec<pb::Delivery>> {
    let mut deliveries: Vec<pb::Delivery> = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, subscription.next())
            .await
            .map_err(|_| {
                anyhow!(
                    "no delivery #{last} within {COLLECT_TIMEOUT:?} (got {} deliveries: {:?})",
                    deliveries.len(),
                    deliveries.iter().map(|d| d.sequence).collect::<Vec<_>>()
                )
            })?
            .with_context(|| format!("{agency}'s subscription failed"))?;
        let Some(delivery) = next else {
            bail!(
                "the gateway ended the subscription before delivery #{last} (after {} deliveries)",
                deliveries.len()
            );
        };
        subscription.ack(&[delivery.sequence]).await?;
        let sequence = delivery.sequence;
        // A redelivery (after an unacknowledged first attempt) is not news.
        if !deliveries.iter().any(|d| d.sequence == sequence) {
            deliveries.push(delivery);
        }
        if sequence >= last {
            break;
        }
    }
    subscription
        .close(CLOSE_GRACE)
        .await
        .with_context(|| format!("closing {agency}'s subscription"))?;
    Ok(deliveries)
}

fn level_of(delivery: &pb::Delivery) -> i32 {
    delivery
        .notification
        .as_ref()
        .map_or(0, |n| n.confidentiality)
}

/// `#seq EVENT LEVEL from SENDER: summary`.
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

/// The structured body as it arrived, in the documented JSON form: one
/// line per field, indented under the delivery's line.
fn print_body(delivery: &pb::Delivery) {
    let Some(notification) = &delivery.notification else {
        return;
    };
    match to_json(notification)
        .get("body")
        .and_then(|b| b.as_object())
    {
        None => println!("       (no body)"),
        Some(body) => {
            println!("       body (JSON):");
            for (field, value) in body {
                println!("         {field}: {value}");
            }
        }
    }
}
