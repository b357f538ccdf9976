//! Signatures everywhere, tried as an attacker would: unsigned, tampered
//! and borrowed signatures against a gateway that requires them, a key
//! rollover and a retired key, a client-chosen key id that must never be
//! repeated back, an agency without a registered key, and a receiving
//! adapter handed a delivery whose signature does not verify.
//!
//! Each test runs the real `liandong-gateway` (and `liandong-adapter`)
//! over mutual TLS. Signature checks do not depend on the store backend:
//! on the PostgreSQL run they are skipped.

use std::time::Duration;

use tonic::Code;

use liandong_core::pb::{Confidentiality as Level, EventType as Event};
use liandong_tests::adapter_bed::{AdapterBed, AdapterProcess, status, wait_for};
use liandong_tests::signed::{
    agency_key, audit_reasons, publish_gateway_key, refused_publishes, register_all_keys,
    registry_of, reload, require_signatures, set_agency_keys, sign, sign_as,
};
use liandong_tests::{notification, publish, publish_county_transfer_received, skip_unless_sqlite};

const EEB: &str = "cz-eeb";
const PSB: &str = "cz-psb";

const BACKEND: &str = "signature checks happen before the store is touched";

fn clue(id: &str) -> liandong_core::pb::Notification {
    notification(
        id,
        "CZ-SIG-2026-0001",
        Event::ClueShared,
        Level::Internal,
        &[],
    )
}

/// A bed whose registry holds every agency's key and the gateway's, with
/// `require_signatures` on, its gateway started.
fn required_bed() -> AdapterBed {
    let mut bed = AdapterBed::new();
    register_all_keys(&bed.pki);
    require_signatures(&bed.path("gateway.toml"));
    bed.start_gateway();
    bed
}

fn gateway_log(bed: &AdapterBed) -> String {
    std::fs::read_to_string(bed.path("gateway.log")).unwrap_or_default()
}

#[tokio::test]
async fn unsigned_notification_is_refused_when_signatures_are_required() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = required_bed();
    let mut eeb = bed.client(EEB).await;
    let status = publish(&mut eeb, clue("sig-unsigned")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "notification.signature: is missing");
    assert!(bed.stored_ids(EEB).await.is_empty(), "nothing stored");
    assert_eq!(
        refused_publishes(&bed.database_url(), "sig-unsigned").await,
        [(
            EEB.to_owned(),
            "UNAUTHENTICATED".to_owned(),
            "unauthenticated: notification.signature: is missing".to_owned()
        )]
    );
    // The same notification, signed, goes through.
    let key = agency_key(&bed.pki, EEB);
    publish(&mut eeb, sign(clue("sig-unsigned"), EEB, &key))
        .await
        .unwrap();
    assert_eq!(bed.stored_ids(EEB).await, ["sig-unsigned"]);
}

#[tokio::test]
async fn signature_by_another_agencys_key_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = required_bed();
    let mut eeb = bed.client(EEB).await;
    // cz-eeb presents a signature made with cz-psb's key, under its id.
    let psb_key = agency_key(&bed.pki, PSB);
    let borrowed = sign_as(clue("sig-borrowed"), EEB, &psb_key, PSB);
    let status = publish(&mut eeb, borrowed).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "notification.signing_key_id: names a key registered for cz-psb, not for cz-eeb"
    );
    // ... or under its own name: the key is not one of cz-eeb's.
    let renamed = sign(clue("sig-borrowed"), EEB, &psb_key);
    let status = publish(&mut eeb, renamed).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(bed.stored_ids(EEB).await.is_empty(), "nothing stored");
    let refusals = refused_publishes(&bed.database_url(), "sig-borrowed").await;
    let decisions: Vec<&str> = refusals.iter().map(|(_, d, _)| d.as_str()).collect();
    assert_eq!(decisions, ["PERMISSION_DENIED", "UNAUTHENTICATED"]);
    assert!(refusals.iter().all(|(agency, _, _)| agency == EEB));
}

#[tokio::test]
async fn tampered_signature_is_refused() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = required_bed();
    let mut eeb = bed.client(EEB).await;
    let key = agency_key(&bed.pki, EEB);
    let signed = sign(clue("sig-tampered"), EEB, &key);

    let mut content_changed = signed.clone();
    content_changed.summary = "changed after signing".into();
    let mut signature_changed = signed.clone();
    signature_changed.signature[10] ^= 0x01;
    let mut truncated = signed.clone();
    truncated.signature.truncate(63);
    for tampered in [content_changed, signature_changed, truncated] {
        let status = publish(&mut eeb, tampered).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert!(bed.stored_ids(EEB).await.is_empty(), "nothing stored");
    assert_eq!(
        refused_publishes(&bed.database_url(), "sig-tampered")
            .await
            .len(),
        3,
        "every refusal audited"
    );
    publish(&mut eeb, signed).await.unwrap();
    assert_eq!(bed.stored_ids(EEB).await, ["sig-tampered"]);
}

#[tokio::test]
async fn key_rotation_accepts_both_registered_keys_and_refuses_a_retired_one() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let mut bed = AdapterBed::new();
    register_all_keys(&bed.pki);
    let registry = registry_of(&bed.pki);
    let old = agency_key(&bed.pki, EEB);
    let new = liandong_certs::SigningKey::generate().unwrap();
    set_agency_keys(
        &registry,
        EEB,
        &[old.public_key_hex(), new.public_key_hex()],
    );
    require_signatures(&bed.path("gateway.toml"));
    bed.start_gateway();

    let mut eeb = bed.client(EEB).await;
    publish(&mut eeb, sign(clue("rot-old-1"), EEB, &old))
        .await
        .unwrap();
    publish(&mut eeb, sign(clue("rot-new-1"), EEB, &new))
        .await
        .unwrap();

    // The rollover ends: only the new key stays registered.
    set_agency_keys(&registry, EEB, &[new.public_key_hex()]);
    reload(bed.gateway.as_ref().unwrap(), &bed.path("gateway.log"));

    // The same connection: decided under the registry in force now.
    let status = publish(&mut eeb, sign(clue("rot-old-2"), EEB, &old))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "notification.signing_key_id: unknown key id (not a key registered for cz-eeb)"
    );
    publish(&mut eeb, sign(clue("rot-new-2"), EEB, &new))
        .await
        .unwrap();
    assert_eq!(
        bed.stored_ids(EEB).await,
        ["rot-old-1", "rot-new-1", "rot-new-2"]
    );
    bed.stop_gateway();
}

#[tokio::test]
async fn refusal_does_not_echo_the_client_key_id() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let bed = required_bed();
    let mut eeb = bed.client(EEB).await;
    let key = agency_key(&bed.pki, EEB);
    const MARKER: &str = "ECHO-MARKER-7f3a";
    // A key id of the sender's form, of another agency's, and of none.
    for (i, claimed) in [
        format!("{EEB}:{MARKER}"),
        format!("{PSB}:{MARKER}"),
        format!("{MARKER} = injected"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut n = sign(clue(&format!("echo-{i}")), EEB, &key);
        n.signing_key_id = claimed;
        let status = publish(&mut eeb, n).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(!status.message().contains(MARKER), "{status:?}");
    }
    for reason in audit_reasons(&bed.database_url()).await {
        assert!(!reason.contains(MARKER), "audit reason: {reason}");
    }
    let log = gateway_log(&bed);
    assert!(log.contains("publish refused: signature"), "{log}");
    assert!(!log.contains(MARKER), "the gateway logged it:\n{log}");
}

#[tokio::test]
async fn agency_without_key_is_refused_when_signatures_are_required() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let mut bed = AdapterBed::new();
    register_all_keys(&bed.pki);
    set_agency_keys(&registry_of(&bed.pki), EEB, &[]);
    require_signatures(&bed.path("gateway.toml"));
    bed.start_gateway();
    let log = gateway_log(&bed);
    assert!(
        log.contains("these agencies have no signing key registered") && log.contains(EEB),
        "the start-up warning names the agency:\n{log}"
    );

    let mut eeb = bed.client(EEB).await;
    let key = agency_key(&bed.pki, EEB);
    for n in [clue("nokey-1"), sign(clue("nokey-2"), EEB, &key)] {
        let status = publish(&mut eeb, n).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(
            status.message(),
            "notification.signature: no signing key registered for cz-eeb"
        );
    }
    assert!(bed.stored_ids(EEB).await.is_empty(), "nothing stored");
    assert_eq!(
        refused_publishes(&bed.database_url(), "nokey-2")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn gateway_refuses_a_registry_publishing_another_key_as_its_own() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let mut bed = AdapterBed::new();
    publish_gateway_key(&bed.pki);
    bed.start_gateway();
    // A reload publishing another key as the gateway's is refused; the
    // registry in force stays.
    let registry = registry_of(&bed.pki);
    let text = std::fs::read_to_string(&registry).unwrap();
    let impostor = liandong_certs::SigningKey::generate().unwrap();
    let own = std::fs::read_to_string(bed.pki.dir.join("gateway.signing.pub")).unwrap();
    std::fs::write(
        &registry,
        text.replace(own.trim(), &impostor.public_key_hex()),
    )
    .unwrap();
    bed.gateway
        .as_ref()
        .unwrap()
        .signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload is refused", Duration::from_secs(10), || {
        let log = gateway_log(&bed);
        (log.contains("reload refused") && log.contains("[gateway] signing_public_key is the key"))
            .then_some(())
    });
    bed.stop_gateway();
    // At start it is a configuration error.
    let output = std::process::Command::new(liandong_tests::binary("liandong-gateway"))
        .args(["serve", "--config"])
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg(bed.path("gateway.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[gateway] signing_public_key is the key liandong-gateway:"),
        "{stderr}"
    );
}

#[tokio::test]
async fn adapter_rejects_delivery_whose_signature_does_not_verify() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    // The gateway knows no key for cz-eeb and does not require signatures,
    // so it accepts what cz-eeb sends unsigned; the receiving adapter's
    // registry does know cz-eeb's key.
    let mut bed = AdapterBed::new();
    let verify_registry = bed.path("verify-agencies.toml");
    std::fs::copy(registry_of(&bed.pki), &verify_registry).unwrap();
    set_agency_keys(
        &verify_registry,
        EEB,
        &[agency_key(&bed.pki, EEB).public_key_hex()],
    );
    bed.start_gateway();
    let config = bed.adapter_config(
        "psb",
        PSB,
        "\n[verify]\nregistry = \"verify-agencies.toml\"\non_failure = \"reject\"\n\n\
         [[subscription]]\nname = \"psb-inbox\"\nrejected = \"psb/rejected\"\n\
         [subscription.sink]\nkind = \"folder\"\npath = \"psb/inbox\"\n",
    );
    let mut adapter = AdapterProcess::start(&config, &bed.path("psb.log"));

    let mut eeb = bed.client(EEB).await;
    let key = agency_key(&bed.pki, EEB);
    publish(&mut eeb, sign(clue("verify-good"), EEB, &key))
        .await
        .unwrap();
    let bad = publish(&mut eeb, clue("verify-unsigned")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bed.acked_through(PSB, "psb-inbox").await < bad.sequence as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deliveries were not acked; adapter log:\n{}",
            adapter.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let read_all = |folder: &str| -> Vec<serde_json::Value> {
        let mut files: Vec<_> = std::fs::read_dir(bed.path(folder))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect()
    };
    let inbox = read_all("psb/inbox");
    let ids = |values: &[serde_json::Value]| -> Vec<String> {
        values
            .iter()
            .map(|v| v["delivery"]["notification"]["notification_id"].to_string())
            .collect()
    };
    assert_eq!(
        ids(&inbox),
        ["\"verify-good\""],
        "only the good one reached the sink"
    );
    let rejected = read_all("psb/rejected");
    assert_eq!(ids(&rejected), ["\"verify-unsigned\""]);
    assert_eq!(rejected[0]["reason"], "notification.signature: is missing");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(bed.path("psb/rejected"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let (_, report) = status(&config);
    let counts = &report["subscriptions"][0]["verification"];
    assert_eq!(counts["verified"], 1, "{report}");
    assert_eq!(counts["rejected"], 1, "{report}");
    adapter.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(
        adapter
            .log()
            .contains("delivery rejected: its signature does not verify"),
        "{}",
        adapter.log()
    );
}

/// The police filing rule with a drill period of two seconds, so the
/// gateway emits its own SUPERVISION_ALERT quickly.
const DRILL_RULES: &str = r#"
[[deadline]]
name = "police-filing-decision"
legal_basis = "drill: 2 seconds"
starts_on = ["TRANSFER_RECEIVED"]
stops_on = ["CASE_FILED", "FILING_DECLINED"]
period = { amount = 2, unit = "seconds" }
roll_to_working_day = false
late = "starter"
supervisor = "procuratorate"
alert = true
"#;

/// An adapter config subscribing `agency` to supervision alerts only,
/// verified against `registry`, under `<name>/inbox` and `<name>/rejected`.
fn alerts_adapter(
    bed: &AdapterBed,
    name: &str,
    agency: &str,
    registry: &str,
) -> std::path::PathBuf {
    bed.adapter_config(
        name,
        agency,
        &format!(
            "\n[verify]\nregistry = \"{registry}\"\n\n\
             [[subscription]]\nname = \"alerts\"\nrejected = \"{name}/rejected\"\n\
             [subscription.filter]\nevents = [\"SUPERVISION_ALERT\"]\n\
             [subscription.sink]\nkind = \"folder\"\npath = \"{name}/inbox\"\n"
        ),
    )
}

#[tokio::test]
async fn adapter_verifies_gateway_alerts_with_the_registry_gateway_key() {
    if skip_unless_sqlite(BACKEND) {
        return;
    }
    let mut bed = AdapterBed::new();
    std::fs::write(bed.path("drill.toml"), DRILL_RULES).unwrap();
    let config = bed.path("gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[mechanism]\ndeadlines = \"drill.toml\"\n"),
    )
    .unwrap();
    // The gateway's registry publishes its real key; the police's adapter
    // is handed a registry publishing another key as the gateway's.
    publish_gateway_key(&bed.pki);
    let registry = std::fs::read_to_string(registry_of(&bed.pki)).unwrap();
    let own = std::fs::read_to_string(bed.pki.dir.join("gateway.signing.pub")).unwrap();
    let impostor = liandong_certs::SigningKey::generate().unwrap();
    std::fs::write(
        bed.path("wrong-gateway-key.toml"),
        registry.replace(own.trim(), &impostor.public_key_hex()),
    )
    .unwrap();
    bed.start_gateway();

    let supervising = alerts_adapter(&bed, "proc", "cz-procuratorate-xiangyuan", "agencies.toml");
    let police = alerts_adapter(&bed, "psb", "cz-psb-xiangyuan", "wrong-gateway-key.toml");
    let mut supervising_adapter = AdapterProcess::start(&supervising, &bed.path("proc.log"));
    let mut police_adapter = AdapterProcess::start(&police, &bed.path("psb.log"));

    let case = "CZ-SIG-2026-0077";
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    let mut psb = bed.client("cz-psb-xiangyuan").await;
    publish_county_transfer_received(&mut bureau, &mut psb, case, "sig-t-77", "sig-r-77").await;

    let files = |folder: &str| std::fs::read_dir(bed.path(folder)).map_or(0, |d| d.count());
    // Counted once recorded as handled: after the file was written.
    let counted = |config: &std::path::Path, count: &str| {
        let (_, report) = status(config);
        report["subscriptions"][0]["verification"][count] == 1
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(counted(&supervising, "verified") && counted(&police, "rejected")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the alert was not verified by one adapter and rejected by the other; logs:\n{}\n{}",
            supervising_adapter.log(),
            police_adapter.log(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files("proc/inbox"), 1);
    assert_eq!(files("proc/rejected"), 0);
    assert_eq!(files("psb/rejected"), 1);
    assert_eq!(
        files("psb/inbox"),
        0,
        "the alert that does not verify never reached the sink"
    );
    supervising_adapter.stop(nix::sys::signal::Signal::SIGTERM);
    police_adapter.stop(nix::sys::signal::Signal::SIGTERM);
}
