//! Attacks on identity, input and confidentiality, each asserting the
//! refusal and that nothing was stored or disclosed. A certificate refused
//! in the TLS handshake is checked for the reason of the refusal (the one
//! the gateway logs, and the alert the client reads), so a certificate
//! refused for another flaw than the one under test fails the test.

use std::time::Duration;

use liandong_certs::{Authority, ClientSpec, KeyUsage, agency_uri};
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::tls::ClientCredentials;
use liandong_tests::{Subscriber, Testbed, notification, publish};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

/// Why the gateway refuses a client's certificate in the TLS handshake:
/// what its log says and the TLS alert it sends.
struct Refusal {
    /// Part of the reason the gateway logs with "TLS handshake refused".
    logged: &'static str,
    /// The TLS alert the client receives, when it reads it before the
    /// connection closes.
    alert: &'static str,
}

/// The certificate was not issued by the gateway's CA.
const UNKNOWN_ISSUER: Refusal = Refusal {
    logged: "invalid peer certificate: UnknownIssuer",
    alert: "UnknownCA",
};

/// The certificate's validity has ended.
const EXPIRED: Refusal = Refusal {
    logged: "invalid peer certificate: certificate expired",
    alert: "CertificateExpired",
};

/// The certificate may not be used to authenticate a client.
const NOT_FOR_CLIENTS: Refusal = Refusal {
    logged: "certificate does not allow extended key usage for client authentication",
    alert: "UnsupportedCertificate",
};

/// The client presented no certificate.
const NO_CERTIFICATE: Refusal = Refusal {
    logged: "peer sent no certificates",
    alert: "CertificateRequired",
};

/// Asserts that `outcome` (a connection attempt and a publish over it)
/// failed for `reason` alone: every handshake refusal the gateway logged
/// names it, at least one was logged, a TLS alert the client read (if any)
/// is the one for it, and nothing was stored.
async fn assert_refused_for(bed: &Testbed, outcome: Result<(), String>, reason: &Refusal) {
    let error = outcome.expect_err("a publish over these credentials succeeded");
    if let Some((_, alert)) = error.split_once("received fatal alert: ") {
        assert!(
            alert.starts_with(reason.alert),
            "the client was refused with another alert than {}: {error}",
            reason.alert
        );
    }
    bed.wait_for_log("TLS handshake refused", "refusal not logged")
        .await;
    let log = bed.log();
    for refusal in log.lines().filter(|l| l.contains("TLS handshake refused")) {
        assert!(
            refusal.contains(reason.logged),
            "refused for another reason than {:?}: {refusal}",
            reason.logged
        );
    }
    assert_eq!(bed.stored_count().await, 0);
}

/// Connects with `credentials` and publishes: the outcome, with the whole
/// error chain on failure.
async fn try_publish(bed: &Testbed, credentials: &ClientCredentials) -> Result<(), String> {
    let mut client = bed.client_with(credentials).await?;
    let n = notification("x-1", "C-1", Event::ClueShared, Level::Internal, &[]);
    publish(&mut client, n)
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

async fn assert_unauthenticated(bed: &Testbed, credentials: &ClientCredentials) {
    let mut client = bed
        .client_with(credentials)
        .await
        .expect("the handshake itself succeeds");
    let status = publish(
        &mut client,
        notification("x-1", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = Subscriber::open(&mut client, "inbox").await.err().unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(bed.stored_count().await, 0);
}

#[tokio::test]
async fn no_client_cert_is_refused() {
    let bed = Testbed::start().unwrap();
    let mut credentials = bed.pki.credentials("cz-psb");
    // tonic sends no certificate when the identity has no usable key pair.
    credentials.cert_pem.clear();
    credentials.key_pem.clear();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&credentials.ca_pem));
    let channel = tonic::transport::Endpoint::from_shared(bed.gateway.url())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let outcome = match channel.connect().await {
        Err(e) => Err(liandong_core::tls::error_chain(&e)),
        Ok(channel) => {
            let mut client = pb::exchange_client::ExchangeClient::new(channel);
            publish(
                &mut client,
                notification("x", "C", Event::ClueShared, Level::Internal, &[]),
            )
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}"))
        }
    };
    assert_refused_for(&bed, outcome, &NO_CERTIFICATE).await;
}

#[tokio::test]
async fn cert_from_other_ca_is_refused() {
    let bed = Testbed::start().unwrap();
    let rogue = Authority::new("Rogue CA").unwrap();
    let forged = rogue.agency("cz-psb").unwrap();
    let credentials = ClientCredentials {
        ca_pem: bed.pki.authority.cert_pem(),
        cert_pem: forged.cert_pem,
        key_pem: forged.key_pem,
    };
    let outcome = try_publish(&bed, &credentials).await;
    assert_refused_for(&bed, outcome, &UNKNOWN_ISSUER).await;
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let bed = Testbed::start().unwrap();
    let expired = bed
        .pki
        .authority
        .client(&ClientSpec::agency("cz-psb").expired())
        .unwrap();
    let outcome = try_publish(&bed, &bed.pki.credentials_with(&expired)).await;
    assert_refused_for(&bed, outcome, &EXPIRED).await;
}

#[tokio::test]
async fn server_only_certificate_is_refused_as_a_client() {
    let bed = Testbed::start().unwrap();
    let mut spec = ClientSpec::agency("cz-psb");
    spec.usage = KeyUsage::ServerOnly;
    let cert = bed.pki.authority.client(&spec).unwrap();
    let outcome = try_publish(&bed, &bed.pki.credentials_with(&cert)).await;
    assert_refused_for(&bed, outcome, &NOT_FOR_CLIENTS).await;
}

#[tokio::test]
async fn unregistered_agency_is_refused() {
    let bed = Testbed::start().unwrap();
    let stranger = bed.pki.authority.agency("cz-stranger").unwrap();
    assert_unauthenticated(&bed, &bed.pki.credentials_with(&stranger)).await;
    assert!(
        bed.log().contains("urn:liandong:agency:cz-stranger"),
        "the refusal names the identity in the log"
    );
}

#[tokio::test]
async fn certificate_with_two_identities_is_refused() {
    let bed = Testbed::start().unwrap();
    let mut spec = ClientSpec::agency("cz-psb");
    spec.uris = vec![agency_uri("cz-psb"), agency_uri("cz-procuratorate")];
    let cert = bed.pki.authority.client(&spec).unwrap();
    assert_unauthenticated(&bed, &bed.pki.credentials_with(&cert)).await;
}

#[tokio::test]
async fn certificate_without_identity_is_refused() {
    let bed = Testbed::start().unwrap();
    let mut spec = ClientSpec::agency("cz-psb");
    spec.uris.clear();
    spec.dns_names = vec!["cz-psb.example".into()];
    let cert = bed.pki.authority.client(&spec).unwrap();
    assert_unauthenticated(&bed, &bed.pki.credentials_with(&cert)).await;
}

#[tokio::test]
async fn publish_as_other_agency_is_refused() {
    let bed = Testbed::start().unwrap();
    let mut police = bed.client("cz-psb").await;
    let mut forged = notification(
        "f-1",
        "C-1",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb"],
    );
    forged.sender = "cz-eeb".into();
    let status = publish(&mut police, forged).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("cz-eeb") && status.message().contains("cz-psb"),
        "{}",
        status.message()
    );
    assert_eq!(bed.stored_count().await, 0);
    // Naming itself is fine.
    let mut honest = notification("f-2", "C-1", Event::ClueShared, Level::Internal, &[]);
    honest.sender = "cz-psb".into();
    publish(&mut police, honest).await.unwrap();
}

#[tokio::test]
async fn unspecified_confidentiality_is_refused() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut n = notification("u-1", "C-1", Event::ClueShared, Level::Internal, &[]);
    n.confidentiality = Level::Unspecified as i32;
    let status = publish(&mut eeb, n.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("notification.confidentiality:"),
        "{}",
        status.message()
    );
    n.confidentiality = 42;
    let status = publish(&mut eeb, n).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("unknown value 42"),
        "{}",
        status.message()
    );
    assert_eq!(bed.stored_count().await, 0);
}

#[tokio::test]
async fn missing_or_unregistered_fields_are_refused_by_name() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let base = notification(
        "m-1",
        "C-1",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb"],
    );
    let cases: Vec<(&str, pb::Notification)> = vec![
        (
            "notification.recipients[0]",
            pb::Notification {
                recipients: vec!["cz-nobody".into()],
                ..base.clone()
            },
        ),
        (
            "notification.recipients",
            pb::Notification {
                recipients: vec![],
                ..base.clone()
            },
        ),
        (
            "notification.confidentiality_note",
            pb::Notification {
                confidentiality_note: String::new(),
                ..base.clone()
            },
        ),
        (
            "notification.event",
            pb::Notification {
                event: 0,
                ..base.clone()
            },
        ),
        (
            "notification.occurred_at",
            pb::Notification {
                occurred_at: None,
                ..base.clone()
            },
        ),
        (
            "notification.region",
            pb::Notification {
                region: "abc".into(),
                ..base.clone()
            },
        ),
        (
            "notification.notification_id",
            pb::Notification {
                notification_id: String::new(),
                ..base.clone()
            },
        ),
    ];
    for (field, n) in cases {
        let status = publish(&mut eeb, n).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            status.message()
        );
    }
    let status = eeb
        .publish(pb::PublishRequest { notification: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bed.stored_count().await, 0);
}

#[tokio::test]
async fn restricted_not_delivered_to_non_recipient() {
    let bed = Testbed::start().unwrap();
    let canary = "CANARY-危险废物-7f3a";
    let mut recipient = bed.client("cz-psb-xiangyuan").await;
    let mut outsider = bed.client("cz-eeb-luzhou").await;
    let mut observer = bed.client("cz-press-office").await;
    let mut to_recipient = Subscriber::open(&mut recipient, "inbox").await.unwrap();
    let mut to_outsider = Subscriber::open(&mut outsider, "inbox").await.unwrap();
    let mut to_observer = Subscriber::open(&mut observer, "inbox").await.unwrap();

    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let mut secret = notification(
        "t-1",
        "CZ-2026-HW-0042",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb-xiangyuan"],
    );
    secret.summary = canary.into();
    secret.confidentiality_note = canary.into();
    secret.body = Some(pb::CaseBody {
        description: canary.into(),
        ..Default::default()
    });
    publish(&mut eeb, secret).await.unwrap();
    let marker = notification(
        "t-2",
        "CZ-2026-ANN-1",
        Event::MeetingNotice,
        Level::Public,
        &[],
    );
    publish(&mut eeb, marker).await.unwrap();

    let got = to_recipient.take_acked(2, WAIT).await;
    assert_eq!(got[0].notification.as_ref().unwrap().summary, canary);
    for sub in [&mut to_outsider, &mut to_observer] {
        let first = sub.take_acked(1, WAIT).await.remove(0);
        assert_eq!(
            first.notification.as_ref().unwrap().notification_id,
            "t-2",
            "the marker comes first: the restricted one was skipped"
        );
        assert!(!format!("{first:?}").contains(canary));
    }
    let mut outsider = bed.client("cz-eeb-luzhou").await;
    let view = outsider
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-2026-HW-0042".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(view.code(), Code::NotFound);
    assert!(
        !bed.log().contains(canary),
        "content must never reach the log"
    );
}

/// Sends raw bytes as a Publish request body.
async fn publish_raw(bed: &Testbed, agency: &str, body: Vec<u8>) -> tonic::Status {
    let channel = bed
        .pki
        .credentials(agency)
        .connect(&bed.gateway.url(), None)
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static("/liandong.v1.Exchange/Publish"),
        raw::RawCodec,
    )
    .await
    .map(|_| ())
    .unwrap_err()
}

#[tokio::test]
async fn malformed_request_is_refused_and_stores_nothing() {
    let bed = Testbed::start().unwrap();
    // Field 1 (notification) claims 100 bytes and carries 3.
    let status = publish_raw(&bed, "cz-eeb", vec![0x0a, 100, 1, 2, 3]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("malformed protobuf message"),
        "{}",
        status.message()
    );
    assert_eq!(bed.stored_count().await, 0);
}

#[tokio::test]
async fn oversized_request_is_refused_and_stores_nothing() {
    let bed = Testbed::start_with("\n[limits]\nmax_message_bytes = 65536\n").unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut big = notification("big-1", "C-1", Event::ClueShared, Level::Internal, &[]);
    big.body = Some(pb::CaseBody {
        description: "污".repeat(40_000),
        ..Default::default()
    });
    let status = publish(&mut eeb, big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("exceeds the limit of 65536 bytes"),
        "{}",
        status.message()
    );
    assert_eq!(bed.stored_count().await, 0);
    // The connection and the gateway carry on.
    publish(
        &mut eeb,
        notification("small-1", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn stalled_handshake_does_not_block_other_clients() {
    // Long enough that a well-behaved client finishes well inside it.
    let bed = Testbed::start_with_handshake_timeout(5, "").unwrap();
    // Connections that never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let connection = std::net::TcpStream::connect(bed.gateway.addr).unwrap();
        connection.set_nonblocking(true).unwrap();
        stalled.push(connection);
    }
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification("ok-1", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    // Handshakes taken one at a time would have had to give up on every
    // stalled connection (closing it) before reaching the good client.
    assert!(
        !bed.log().contains("TLS handshake timed out"),
        "a stalled handshake timed out before the good client was served:\n{}",
        bed.log()
    );
    for (i, connection) in stalled.iter().enumerate() {
        assert!(
            still_open(connection),
            "stalled connection {i} was closed before the good client was served"
        );
    }
    // Then each stalled handshake is timed out and its connection closed.
    bed.wait_for_log_within(
        "TLS handshake timed out",
        "stalled handshakes are never timed out",
        Duration::from_secs(30),
    )
    .await;
    for (i, mut connection) in stalled.into_iter().enumerate() {
        connection.set_nonblocking(false).unwrap();
        connection
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut connection, &mut byte);
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "stalled connection {i} was not closed by the gateway: {read:?}"
        );
    }
}

/// Whether the gateway has neither closed `connection` nor written to it
/// (a non-blocking socket).
fn still_open(connection: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(connection.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

mod raw {
    //! A codec passing request bytes through untouched.
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    pub(crate) struct RawCodec;
    pub(crate) struct RawEncoder;
    pub(crate) struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
}

#[tokio::test]
async fn signature_is_required_and_checked_once_a_key_is_registered() {
    use liandong_certs::SigningKey;
    use liandong_core::signing;
    let bed = Testbed::start().unwrap();
    let agencies = bed.pki.dir.join("agencies");
    let key =
        SigningKey::from_pkcs8_der(&std::fs::read(agencies.join("cz-eeb.signing.pk8")).unwrap())
            .unwrap();
    let other =
        SigningKey::from_pkcs8_der(&std::fs::read(agencies.join("cz-psb.signing.pk8")).unwrap())
            .unwrap();
    let mut eeb = bed.client("cz-eeb").await;

    // Without a registered key, signatures are carried but not required.
    publish(
        &mut eeb,
        notification("u-0", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();

    // Register cz-eeb's public key; SIGHUP puts it in force.
    let registry = bed.dir.path().join("agencies.toml");
    let text = std::fs::read_to_string(&registry).unwrap().replacen(
        "id = \"cz-eeb\"\n",
        &format!(
            "id = \"cz-eeb\"\nsigning_public_key = \"{}\"\n",
            key.public_key_hex()
        ),
        1,
    );
    std::fs::write(&registry, text).unwrap();
    bed.reload_rules().await;

    let sign = |mut n: pb::Notification, with: &SigningKey| {
        n.signing_key_id = signing::key_id("cz-eeb", &key.public_key());
        n.signature = with.sign(&signing::signing_bytes(&n, "cz-eeb"));
        n
    };
    let unsigned = notification("u-1", "C-1", Event::ClueShared, Level::Internal, &[]);
    let status = publish(&mut eeb, unsigned.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "notification.signature: is missing");

    let mut tampered = sign(unsigned.clone(), &key);
    tampered.summary = "changed after signing".into();
    let status = publish(&mut eeb, tampered).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let forged = sign(unsigned.clone(), &other);
    let status = publish(&mut eeb, forged).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(bed.stored_count().await, 1);

    let receipt = publish(&mut eeb, sign(unsigned, &key)).await.unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(bed.stored_count().await, 2);
}

#[tokio::test]
async fn undecodable_request_refusal_is_audited() {
    use sqlx::Connection;
    let bed = Testbed::start_with("\n[limits]\nmax_message_bytes = 65536\n").unwrap();

    // Publish: malformed (the codec), over the limit (the codec), and far
    // over it (tonic's length check, before anything is buffered).
    let status = undecodable::call(&bed, "cz-eeb", "Publish", vec![0x0a, 100, 1, 2, 3]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = undecodable::call(&bed, "cz-eeb", "Publish", vec![0x0a; 70_000]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = undecodable::call(&bed, "cz-eeb", "Publish", vec![0x0a; 300_000]).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Midway through a stream: the refusal ends it in its trailers.
    let status = undecodable::call(&bed, "cz-eeb", "PublishStream", vec![0x0a, 100, 1]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The other RPCs, each under its own action.
    let status = undecodable::call(&bed, "cz-psb", "Subscribe", vec![0x0a, 50, 1]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = undecodable::call(&bed, "cz-psb", "GetCase", vec![0x0a, 50, 1]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A refused caller of Subscribe and GetCase is audited under those
    // actions too, not as a refused publish.
    let stranger = bed.pki.authority.agency("cz-stranger").unwrap();
    let mut client = bed
        .client_with(&bed.pki.credentials_with(&stranger))
        .await
        .unwrap();
    let status = Subscriber::open(&mut client, "inbox").await.err().unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .get_case(pb::GetCaseRequest {
            case_ref: "C-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A malformed case reference is refused by the handler, under the
    // same action.
    let mut psb = bed.client("cz-psb").await;
    let status = psb
        .get_case(pb::GetCaseRequest {
            case_ref: "no spaces allowed".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A well-formed refusal is audited once, by its handler.
    let mut eeb = bed.client("cz-eeb").await;
    let mut unspecified = notification("u-1", "C-1", Event::ClueShared, Level::Internal, &[]);
    unspecified.confidentiality = 0;
    assert_eq!(
        publish(&mut eeb, unspecified).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let expected: Vec<(&str, &str, &str)> = vec![
        ("cz-eeb", "PUBLISH_REFUSED", "INVALID_ARGUMENT"),
        ("cz-eeb", "PUBLISH_REFUSED", "RESOURCE_EXHAUSTED"),
        ("cz-eeb", "PUBLISH_REFUSED", "OUT_OF_RANGE"),
        ("cz-eeb", "PUBLISH_REFUSED", "INVALID_ARGUMENT"),
        ("cz-psb", "SUBSCRIBE_REFUSED", "INVALID_ARGUMENT"),
        ("cz-psb", "CASE_READ_REFUSED", "INVALID_ARGUMENT"),
        ("cz-psb", "CASE_READ_REFUSED", "INVALID_ARGUMENT"),
        (
            "urn:liandong:agency:cz-stranger",
            "SUBSCRIBE_REFUSED",
            "UNAUTHENTICATED",
        ),
        (
            "urn:liandong:agency:cz-stranger",
            "CASE_READ_REFUSED",
            "UNAUTHENTICATED",
        ),
        ("cz-eeb", "PUBLISH_REFUSED", "INVALID_ARGUMENT"),
    ];
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&bed.database_url())
        .await
        .unwrap();
    // Refusals made before a handler are recorded by a task of their own.
    let deadline = std::time::Instant::now() + WAIT;
    let rows: Vec<(String, String, String, String)> = loop {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT agency, action, decision, reason FROM audit_log \
                 WHERE action NOT IN ('PUBLISHED', 'ACK') ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if rows.len() >= expected.len() || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(agency, action, decision, _)| (agency.as_str(), action.as_str(), decision.as_str()))
        .collect();
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "audit rows: {rows:#?}");
    for (_, _, decision, reason) in &rows {
        if decision != "UNAUTHENTICATED" {
            assert!(
                reason.starts_with("undecodable request: ")
                    || reason.starts_with("notification.confidentiality")
                    || reason.starts_with("case_ref"),
                "{reason}"
            );
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn undecodable_supervision_request_refusal_is_audited() {
    let bed = Testbed::start_with("\n[limits]\nmax_message_bytes = 65536\n").unwrap();
    let calls = [
        (
            "Supervision/ListSignals",
            vec![0x0a, 100, 1, 2, 3],
            Code::InvalidArgument,
        ),
        (
            "Supervision/GetReport",
            vec![0x0a, 50, 1],
            Code::InvalidArgument,
        ),
        (
            "Supervision/GetReport",
            vec![0x0a; 70_000],
            Code::ResourceExhausted,
        ),
    ];
    for (rpc, body, code) in calls {
        let status = undecodable::call(&bed, "cz-procuratorate", rpc, body).await;
        assert_eq!(status.code(), code, "{rpc}: {status:?}");
    }
    let mut conn = bed.connect_database().await;
    // Refusals made before a handler are recorded by a task of their own.
    let deadline = std::time::Instant::now() + WAIT;
    let rows: Vec<(String, String, String)> = loop {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT agency, action, decision FROM audit_log \
                 WHERE action NOT IN ('PUBLISHED', 'ACK') ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if rows.len() >= 3 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let refused = |code: &str| {
        (
            "cz-procuratorate".to_owned(),
            "SUPERVISION_REFUSED".to_owned(),
            code.to_owned(),
        )
    };
    assert_eq!(
        rows,
        [
            refused("INVALID_ARGUMENT"),
            refused("INVALID_ARGUMENT"),
            refused("RESOURCE_EXHAUSTED"),
        ]
    );
    assert_eq!(bed.stored_count().await, 0);
}

mod undecodable {
    //! Raw request bytes to any RPC, and the status it ends with.
    use liandong_tests::Testbed;
    use tonic::Status;

    /// Sends `body` as the only request message of `rpc` as `agency`; the
    /// call must fail, and its status never carries the codec's marker.
    pub(crate) async fn call(bed: &Testbed, agency: &str, rpc: &str, body: Vec<u8>) -> Status {
        let channel = bed
            .pki
            .credentials(agency)
            .connect(&bed.gateway.url(), None)
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // `rpc` is an Exchange method, or `Service/Method` of another.
        let path = if rpc.contains('/') {
            format!("/liandong.v1.{rpc}")
        } else {
            format!("/liandong.v1.Exchange/{rpc}")
        };
        let path: http::uri::PathAndQuery = path.parse().unwrap();
        let request = tonic::Request::new(tokio_stream::iter(vec![body]));
        let status = match grpc.streaming(request, path, crate::raw::RawCodec).await {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Err(status) => break status,
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("{rpc} accepted undecodable bytes"),
                    }
                }
            }
        };
        assert!(
            status
                .metadata()
                .get(liandong_proto::codec::DECODE_REFUSAL)
                .is_none(),
            "the refusal marker left the gateway: {status:?}"
        );
        status
    }
}
