//! Label values stay bounded, and what is recorded is what renders.

use std::path::PathBuf;

use rustls::{CertificateError, Error};

use super::refresh::expiry_labels;
use super::*;
use crate::identity::tls::Expiry;

#[test]
fn rpc_labels_come_from_a_fixed_list() {
    assert_eq!(
        rpc_label("/liandong.v1.Exchange/Publish"),
        "Exchange.Publish"
    );
    assert_eq!(
        rpc_label("/liandong.v1.Operations/GetReport"),
        "Operations.GetReport"
    );
    assert_eq!(
        rpc_label("/liandong.v1.Supervision/GetReport"),
        "Supervision.GetReport"
    );
    // A client cannot mint label values with made-up paths.
    assert_eq!(rpc_label("/liandong.v1.Exchange/Case-2026-0001"), "other");
    assert_eq!(rpc_label("/liandong.v1.Exchange.Publish"), "other");
    assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "other");
    assert_eq!(rpc_label(""), "other");
}

#[test]
fn refusal_reasons_are_status_code_names() {
    assert_eq!(
        code_label(tonic::Code::PermissionDenied),
        "permission_denied"
    );
    assert_eq!(code_label(tonic::Code::Unauthenticated), "unauthenticated");
    assert_eq!(
        code_label(tonic::Code::ResourceExhausted),
        "resource_exhausted"
    );
}

#[test]
fn handshake_errors_map_to_fixed_reasons() {
    let of = HandshakeFailure::of_tls;
    assert_eq!(
        of(&Error::NoCertificatesPresented),
        HandshakeFailure::NoCertificate
    );
    assert_eq!(
        of(&Error::InvalidCertificate(CertificateError::Revoked)),
        HandshakeFailure::Revoked
    );
    assert_eq!(
        of(&Error::InvalidCertificate(CertificateError::Expired)),
        HandshakeFailure::Expired
    );
    assert_eq!(
        of(&Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        HandshakeFailure::BadCertificate
    );
    assert_eq!(
        of(&Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic
        )),
        HandshakeFailure::Protocol
    );
    assert_eq!(of(&Error::General("x".into())), HandshakeFailure::Other);
    // The acceptor's io::Error carries the rustls error inside.
    let wrapped = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        Error::InvalidCertificate(CertificateError::Revoked),
    );
    assert_eq!(HandshakeFailure::of(&wrapped), HandshakeFailure::Revoked);
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(HandshakeFailure::of(&reset), HandshakeFailure::Other);
}

#[test]
fn certificate_expiries_are_labelled_by_kind_and_subject() {
    let expiry = |what: &str| Expiry {
        what: what.into(),
        file: PathBuf::from("x.pem"),
        at: time::OffsetDateTime::UNIX_EPOCH,
    };
    assert_eq!(
        expiry_labels(&expiry("server certificate CN=gateway")),
        ("server_certificate", "CN=gateway".to_owned())
    );
    assert_eq!(
        expiry_labels(&expiry("CA certificate CN=Liandong dev CA")),
        ("ca_certificate", "CN=Liandong dev CA".to_owned())
    );
    assert_eq!(
        expiry_labels(&expiry("CRL of CN=Liandong dev CA")),
        ("crl", "CN=Liandong dev CA".to_owned())
    );
    assert_eq!(
        expiry_labels(&expiry("something else")),
        ("other", "something else".to_owned())
    );
}

#[test]
fn recorded_values_render_with_their_labels() {
    let agency = AgencyId::parse("agency", "cz-metrics-test").unwrap();
    let clue = Event::from_wire("event", liandong_core::pb::EventType::ClueShared as i32).unwrap();
    published(&agency, clue);
    published(&agency, clue);
    delivered(&agency, 1);
    delivered(&agency, 2);
    acked(&agency, 3);
    store_write("metrics_test", Duration::from_millis(3));
    let text = handle().render();
    assert!(
        text.contains(
            "liandong_publishes_total{agency=\"cz-metrics-test\",event=\"CLUE_SHARED\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("liandong_deliveries_total{agency=\"cz-metrics-test\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("liandong_redeliveries_total{agency=\"cz-metrics-test\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("liandong_acks_total{agency=\"cz-metrics-test\"} 3"),
        "{text}"
    );
    assert!(
        text.contains(
            "liandong_store_commit_seconds_bucket{operation=\"metrics_test\",le=\"0.005\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("liandong_store_commit_seconds_count{operation=\"metrics_test\"} 1"),
        "{text}"
    );
    assert!(text.contains("# HELP liandong_publishes_total "), "{text}");
    // Fixed label sets are there from the start.
    assert!(
        text.contains("liandong_reloads_total{outcome=\"refused\"} "),
        "{text}"
    );
    assert!(
        text.contains("liandong_tls_handshake_failures_total{reason=\"no_certificate\"} "),
        "{text}"
    );
}
