//! Attacks on the gateway's TLS layer over real sockets: revoked, misused
//! and foreign certificates, plaintext on the TLS port, CRLs missing or
//! expired, broken reloads, connection floods. Each tries the attack,
//! asserts the refusal (and its audit row) and that a good client is still
//! served. None depends on the store backend: they run on SQLite only.

use std::time::Duration;

use rustls::pki_types::pem::PemObject;

use liandong_certs::{Authority, ClientSpec, CrlContents, KeyUsage};
use liandong_core::tls::ClientCredentials;
use liandong_tests::tls_bed::{
    self, RELOAD_REFUSED, WAIT, audit_rows, certs_cli, occurrences, plaintext_exchange, raw_tls,
    try_call, wait_for_audit, wait_for_lines, wait_until_served,
};
use liandong_tests::{Next, Subscriber, Testbed, skip_unless_sqlite};

const WHY: &str = "the TLS layer does not depend on the store backend";

/// A client that trusts the gateway (issued by the dev CA) but presents
/// `cert`.
fn credentials_with(bed: &Testbed, cert: &liandong_certs::CertifiedKey) -> ClientCredentials {
    bed.pki.credentials_with(cert)
}

#[tokio::test]
async fn revoked_certificate_is_refused() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let psb = bed.pki.credentials("cz-psb");
    try_call(&bed, &psb)
        .await
        .expect("served before revocation");

    let revoked = certs_cli([
        "revoke".as_ref(),
        "--out".as_ref(),
        bed.pki.dir.as_os_str(),
        "--agency".as_ref(),
        "cz-psb".as_ref(),
        "--reason".as_ref(),
        "keyCompromise".as_ref(),
    ]);
    assert!(revoked.status.success(), "{revoked:?}");
    // No signal: the gateway sees the CRL file change.
    wait_for_lines(
        &bed,
        tls_bed::RELOADED,
        1,
        "the CRL change was not reloaded",
    )
    .await;

    let refused = try_call(&bed, &psb).await;
    assert!(refused.is_err(), "a revoked certificate was served");
    let row = wait_for_audit(
        &bed,
        "TLS_REFUSED",
        "the revoked certificate",
        |(_, _, r)| r.contains("Revoked"),
    )
    .await;
    assert!(row.0.starts_with("127.0.0.1:"), "{row:?}");
    try_call(&bed, &bed.pki.credentials("cz-eeb"))
        .await
        .expect("another agency is still served");
}

#[tokio::test]
async fn revocation_closes_open_subscription_stream() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let mut psb = bed.client("cz-psb").await;
    let mut eeb = bed.client("cz-eeb").await;
    let mut revoked_stream = Subscriber::open(&mut psb, "inbox").await.unwrap();
    let mut other_stream = Subscriber::open(&mut eeb, "inbox").await.unwrap();
    revoked_stream
        .expect_silence(Duration::from_millis(200), "nothing published yet")
        .await;

    bed.pki.revoke("cz-psb").unwrap();
    tls_bed::reload(&bed).await;

    match revoked_stream.next_event(Duration::from_secs(5)).await {
        Next::Failed(_) | Next::Ended => {}
        other => panic!("the revoked agency's stream {other} instead of failing"),
    }
    wait_for_audit(&bed, "TLS_REFUSED", "the closed connection", |(_, _, r)| {
        r.starts_with("certificate no longer valid")
    })
    .await;
    other_stream
        .expect_silence(
            Duration::from_millis(500),
            "another agency's stream stays open",
        )
        .await;
}

#[tokio::test]
async fn certificate_without_extended_key_usage_is_refused() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let mut spec = ClientSpec::agency("cz-psb");
    spec.usage = KeyUsage::NoExtendedKeyUsage;
    let cert = bed.pki.authority.client(&spec).unwrap();
    let refused = try_call(&bed, &credentials_with(&bed, &cert)).await;
    assert!(refused.is_err(), "a certificate without EKU was served");
    wait_for_audit(
        &bed,
        "TLS_REFUSED",
        "the certificate without EKU",
        |(_, _, r)| r.contains("no extended key usage"),
    )
    .await;
}

#[tokio::test]
async fn ca_certificate_as_client_certificate_is_refused() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let ca = liandong_certs::CertifiedKey {
        cert_pem: bed.pki.authority.cert_pem(),
        key_pem: bed.pki.authority.key_pem(),
    };
    let refused = try_call(&bed, &credentials_with(&bed, &ca)).await;
    assert!(
        refused.is_err(),
        "the CA certificate was served as a client"
    );
    // webpki refuses a CA certificate as an end entity before any usage
    // check runs.
    wait_for_audit(&bed, "TLS_REFUSED", "the CA certificate", |(_, _, r)| {
        r.contains("CaUsedAsEndEntity")
    })
    .await;
}

#[tokio::test]
async fn reload_adds_one_ca_and_removes_another() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let old_client = bed.pki.credentials("cz-psb");
    let mut live = bed.client("cz-eeb").await;
    let mut live_stream = Subscriber::open(&mut live, "inbox").await.unwrap();
    let second = Authority::new("Second Agency CA").unwrap();
    let new_client = credentials_with(&bed, &second.agency("cz-psb").unwrap());
    assert!(try_call(&bed, &new_client).await.is_err());

    // The CRLs first (both CAs covered), then the bundle with only the new
    // CA: each step is a valid configuration.
    let old_crl = std::fs::read_to_string(bed.pki.dir.join("ca.crl")).unwrap();
    let both = format!(
        "{old_crl}{}",
        liandong_certs::initial_crl(&second, 30).unwrap()
    );
    std::fs::write(bed.pki.dir.join("ca.crl"), both).unwrap();
    std::fs::write(bed.pki.dir.join("ca.crt"), second.cert_pem()).unwrap();
    tls_bed::reload(&bed).await;

    wait_until_served(&bed, &new_client, true).await;
    let refused = try_call(&bed, &old_client).await;
    assert!(refused.is_err(), "a client of the removed CA was served");
    // The live connection of the removed CA is closed too.
    match live_stream.next_event(Duration::from_secs(5)).await {
        Next::Failed(_) | Next::Ended => {}
        other => panic!("a stream of the removed CA {other} instead of failing"),
    }
}

#[tokio::test]
async fn plaintext_http2_on_tls_port_is_refused() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let answer = plaintext_exchange(bed.gateway.addr, tls_bed::H2_PREFACE).await;
    assert!(answer.is_empty(), "the gateway answered: {answer:?}");
    wait_for_audit(&bed, "TLS_REFUSED", "plaintext HTTP/2", |(_, _, r)| {
        r == "not TLS: plaintext HTTP/2 on the TLS port"
    })
    .await;
    try_call(&bed, &bed.pki.credentials("cz-psb"))
        .await
        .expect("a good client is still served");
}

#[tokio::test]
async fn plaintext_http1_on_tls_port_is_refused() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let answer =
        plaintext_exchange(bed.gateway.addr, b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "the gateway answered HTTP: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(answer.is_empty(), "the gateway answered: {answer:?}");
    wait_for_audit(&bed, "TLS_REFUSED", "plaintext HTTP/1", |(_, _, r)| {
        r == "not TLS: plaintext HTTP/1 on the TLS port"
    })
    .await;
    try_call(&bed, &bed.pki.credentials("cz-psb"))
        .await
        .expect("a good client is still served");
}

#[tokio::test]
async fn missing_crl_for_issuing_ca_refuses_to_start() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let other = Authority::new("Unrelated CA").unwrap();
    std::fs::write(
        bed.pki.dir.join("other.crl"),
        liandong_certs::initial_crl(&other, 30).unwrap(),
    )
    .unwrap();
    for line in ["crls = []", "crls = [\"pki/other.crl\"]"] {
        let config = tls_bed::config_with_crls(&bed, line);
        let output = std::process::Command::new(liandong_tests::binary("liandong-gateway"))
            .args(["serve", "--config"])
            .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
            .arg(&config)
            .env("LIANDONG_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{line}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("no CRL for CA ") && last.contains("Liandong Development CA"),
            "{line}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

#[tokio::test]
async fn expired_crl_refuses_handshakes() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let short = bed
        .pki
        .authority
        .crl(&CrlContents {
            number: 2,
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::seconds(3),
            revoked: Vec::new(),
        })
        .unwrap();
    std::fs::write(bed.pki.dir.join("ca.crl"), short).unwrap();
    tls_bed::reload(&bed).await;
    let psb = bed.pki.credentials("cz-psb");

    // Once nextUpdate passes, every certificate of the CA is refused.
    wait_until_served(&bed, &psb, false).await;
    wait_for_audit(&bed, "TLS_REFUSED", "the expired CRL", |(_, _, r)| {
        r.contains("certificate revocation list expired")
    })
    .await;
    let _ = try_call(&bed, &psb).await;
    wait_for_lines(&bed, "has passed its nextUpdate", 1, "no error line").await;
    assert_eq!(
        occurrences(&bed, "has passed its nextUpdate"),
        1,
        "the expired CRL is reported once"
    );

    // A fresh CRL (the cron job) restores service.
    let refreshed = certs_cli(["crl".as_ref(), "--out".as_ref(), bed.pki.dir.as_os_str()]);
    assert!(refreshed.status.success(), "{refreshed:?}");
    tls_bed::reload(&bed).await;
    wait_until_served(&bed, &psb, true).await;
}

#[tokio::test]
async fn failed_tls_reload_keeps_previous_configuration() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let psb = bed.pki.credentials("cz-psb");
    let config = psb.client_config().unwrap();
    let (_, before) = raw_tls(bed.gateway.addr, config.clone()).await.unwrap();
    let errors_before = bed.log().lines().filter(|l| l.contains("ERROR")).count();

    std::fs::write(bed.pki.dir.join("gateway.crt"), "not a certificate\n").unwrap();
    bed.gateway.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_lines(&bed, RELOAD_REFUSED, 1, "the broken reload was not refused").await;

    // Each refused reload is one error line naming the broken file (the
    // file change may be noticed besides the signal).
    let log = bed.log();
    let errors: Vec<_> = log
        .lines()
        .filter(|l| l.contains("ERROR"))
        .skip(errors_before)
        .collect();
    assert!(!errors.is_empty());
    for line in &errors {
        assert!(
            line.contains(RELOAD_REFUSED) && line.contains("gateway.crt"),
            "{line}"
        );
    }
    let (_, after) = raw_tls(bed.gateway.addr, config).await.unwrap();
    assert_eq!(after, before, "the previous certificate still serves");
    try_call(&bed, &psb).await.expect("still served");
    let row = wait_for_audit(&bed, "RELOAD", "the refused reload", |(_, d, _)| {
        d == "REFUSED"
    })
    .await;
    assert!(row.2.contains("gateway.crt"), "{row:?}");
    assert!(
        audit_rows(&bed, "RELOAD")
            .await
            .iter()
            .all(|(_, decision, _)| decision == "REFUSED"),
        "nothing was applied"
    );
}

#[tokio::test]
async fn server_certificate_reloads_without_restart() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    let config = bed.pki.credentials("cz-psb").client_config().unwrap();
    let (_, before) = raw_tls(bed.gateway.addr, config.clone()).await.unwrap();
    let renewed = bed
        .pki
        .authority
        .server(&liandong_certs::GATEWAY_SANS)
        .unwrap();
    std::fs::write(bed.pki.dir.join("gateway.key"), &renewed.key_pem).unwrap();
    std::fs::write(bed.pki.dir.join("gateway.crt"), &renewed.cert_pem).unwrap();
    tls_bed::reload(&bed).await;
    let expected = rustls::pki_types::CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, now) = raw_tls(bed.gateway.addr, config.clone()).await.unwrap();
        if now == expected {
            break;
        }
        assert_eq!(now, before, "neither the old nor the new certificate");
        assert!(std::time::Instant::now() < deadline, "{}", bed.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_audit(&bed, "RELOAD", "the applied reload", |(_, d, _)| {
        d == "APPLIED"
    })
    .await;
}

#[tokio::test]
async fn connections_per_agency_are_capped() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start_with("[limits]\nmax_connections_per_agency = 2\n").unwrap();
    let psb = bed.pki.credentials("cz-psb");
    let mut held = Vec::new();
    for _ in 0..2 {
        let channel = psb.connect(&bed.gateway.url(), None).await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("within the cap");
        held.push(channel);
    }
    let refused = try_call(&bed, &psb).await;
    assert!(refused.is_err(), "a third connection was served");
    wait_for_audit(&bed, "TLS_REFUSED", "the capped connection", |(_, _, r)| {
        r == "connection cap 2 reached for urn:liandong:agency:cz-psb"
    })
    .await;
    try_call(&bed, &bed.pki.credentials("cz-eeb"))
        .await
        .expect("another agency has its own cap");
    drop(held.pop());
    wait_until_served(&bed, &psb, true).await;
}

#[tokio::test]
async fn tls_refusals_are_audited() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    // Garbage, a handshake that never comes (2 s timeout), a foreign CA.
    plaintext_exchange(bed.gateway.addr, b"\x00\x01garbage").await;
    let stalled = tokio::net::TcpStream::connect(bed.gateway.addr)
        .await
        .unwrap();
    let rogue = Authority::new("Rogue CA").unwrap();
    let forged = credentials_with(&bed, &rogue.agency("cz-psb").unwrap());
    assert!(try_call(&bed, &forged).await.is_err());

    for (what, pattern) in [
        ("garbage", "not TLS: first byte 0x00"),
        (
            "the stalled handshake",
            "TLS handshake timed out after 2000 ms",
        ),
        ("the foreign certificate", "UnknownIssuer"),
    ] {
        let row = wait_for_audit(&bed, "TLS_REFUSED", what, |(_, _, r)| r.contains(pattern)).await;
        assert!(row.0.starts_with("127.0.0.1:"), "{row:?}");
        assert_eq!(row.1, "REFUSED");
    }
    drop(stalled);
}

#[tokio::test]
async fn resumed_session_cannot_skip_revocation() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let bed = Testbed::start().unwrap();
    // One client configuration, with rustls' session cache: it would
    // resume if the gateway let it.
    let config = bed.pki.credentials("cz-psb").client_config().unwrap();
    for attempt in 0..2 {
        let (kind, _) = raw_tls(bed.gateway.addr, config.clone()).await.unwrap();
        assert_eq!(kind, rustls::HandshakeKind::Full, "connection {attempt}");
    }
    bed.pki.revoke("cz-psb").unwrap();
    tls_bed::reload(&bed).await;
    let refused = raw_tls(bed.gateway.addr, config).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn idle_connection_is_closed() {
    if skip_unless_sqlite(WHY) {
        return;
    }
    let mut bed = Testbed::start().unwrap();
    // Restart with a one-second idle timeout.
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(WAIT).unwrap();
    let text = std::fs::read_to_string(&bed.config).unwrap();
    let text = text.replacen(
        "crls = [\"pki/ca.crl\"]\n",
        "crls = [\"pki/ca.crl\"]\nidle_timeout_seconds = 1\n",
        1,
    );
    std::fs::write(&bed.config, text).unwrap();
    bed.restart().unwrap();

    // A connection that said its preface and then nothing is closed.
    let config = bed.pki.credentials("cz-psb").client_config().unwrap();
    let (_, _, mut idle) = tls_bed::raw_tls_stream(bed.gateway.addr, config)
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncReadExt;
        let _ = idle.read_to_end(&mut rest).await;
    })
    .await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    wait_for_lines(
        &bed,
        "idle connection closed",
        1,
        "closed for another reason",
    )
    .await;
    try_call(&bed, &bed.pki.credentials("cz-psb"))
        .await
        .expect("a new connection is served");
}
