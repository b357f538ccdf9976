use std::path::Path;

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Envelope, Event, FieldError, Instant, NotificationId,
    Region,
};
use liandong_core::pb;
use liandong_core::registry::Registry;

use super::*;
use crate::identity::{IdentityError, Principal};

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

fn agency(id: &str) -> Agency {
    let registry = Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap();
    registry
        .get(&AgencyId::parse("id", id).unwrap())
        .unwrap()
        .clone()
}

fn stored(confidentiality: Confidentiality) -> StoredNotification {
    StoredNotification {
        sequence: 7,
        envelope: Envelope {
            sender: AgencyId::parse("sender", "cz-eeb-xiangyuan").unwrap(),
            id: NotificationId::parse_field("id", "n-7").unwrap(),
            case_ref: CaseRef::parse_field("case_ref", "CZ-2026-HW-0042").unwrap(),
            event: Event::from_wire("event", pb::EventType::CaseTransferred as i32).unwrap(),
            confidentiality,
            region: Region::parse("region", "140423").unwrap(),
            recipients: vec![AgencyId::parse("recipient", "cz-psb-xiangyuan").unwrap()],
            copies: Vec::new(),
        },
        received_at: Instant::now(),
        payload: Vec::new(),
    }
}

#[test]
fn actions_are_stored_under_their_established_names() {
    let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "DELIVERY",
            "CASE_READ",
            "PUBLISH_REFUSED",
            "SUBSCRIBE_REFUSED",
            "CASE_READ_REFUSED",
            "SUPERVISION_REFUSED",
            "TLS_REFUSED",
            "RELOAD",
            "PUBLISHED",
            "ACK",
            "AGENCY_DISABLED",
            "AGENCY_ENABLED",
            "SUBSCRIPTION_SEEK",
            "OPERATIONS_REFUSED",
            "SEQUENCES_FENCED"
        ]
    );
    for action in Action::ALL {
        assert_eq!(Action::parse(action.as_str()), Some(action));
    }
    assert_eq!(Action::parse("PUBLISH"), None);
}

#[test]
fn a_refused_subscribe_or_case_read_is_not_recorded_as_a_refused_publish() {
    assert_eq!(
        Action::refused(Some(Rpc::Subscribe)),
        Action::SubscribeRefused
    );
    assert_eq!(Action::refused(Some(Rpc::GetCase)), Action::CaseReadRefused);
    assert_eq!(
        Action::refused(Some(Rpc::PublishStream)),
        Action::PublishRefused
    );
    let caller = Caller::Agency(Principal {
        agency: agency("cz-psb"),
    });
    let error = ApiError::from(FieldError::new("case_ref", "is required"));
    let entry = refused(Some(Rpc::GetCase), &caller, &error).unwrap();
    assert_eq!(
        (entry.agency.as_str(), entry.action, entry.decision.as_str()),
        ("cz-psb", "CASE_READ_REFUSED", "INVALID_ARGUMENT")
    );
    assert_eq!(entry.reason, "case_ref: is required");
}

#[test]
fn disclosures_of_non_public_content_and_stubs_are_recorded() {
    let reader = agency("cz-psb-xiangyuan");
    let restricted = stored(Confidentiality::Restricted);
    let entry = delivery(&reader, &restricted, &Decision::Full("recipient".into())).unwrap();
    assert_eq!(
        (
            entry.action,
            entry.sequence,
            entry.decision.as_str(),
            entry.reason.as_str()
        ),
        ("DELIVERY", Some(7), "FULL", "recipient")
    );
    let stub = case_read(
        &reader,
        &restricted,
        &Decision::Withheld("clearance".into()),
    )
    .unwrap();
    assert_eq!(
        (stub.action, stub.decision.as_str()),
        ("CASE_READ", "WITHHELD")
    );
    let public = stored(Confidentiality::Public);
    assert_eq!(
        delivery(&reader, &public, &Decision::Full("public".into())),
        None
    );
    assert_eq!(delivery(&reader, &restricted, &Decision::Nothing), None);
}

#[test]
fn a_refusal_names_the_caller_but_records_no_failure() {
    let unknown = Caller::Refused {
        presented: "urn:liandong:agency:ghost".into(),
        error: IdentityError::NotRegistered,
    };
    let error = ApiError::from(IdentityError::NotRegistered);
    let entry = refused(None, &unknown, &error).unwrap();
    assert_eq!(
        (entry.agency.as_str(), entry.action, entry.sender.as_str()),
        ("urn:liandong:agency:ghost", "PUBLISH_REFUSED", "")
    );
    let failure = ApiError::Unavailable("shutting down".into());
    assert_eq!(refused(None, &unknown, &failure), None);

    let principal = Principal {
        agency: agency("cz-eeb"),
    };
    let long_id = "x".repeat(500);
    let entry = publish_refused(&principal, &long_id, &error).unwrap();
    assert_eq!(entry.sender, "cz-eeb");
    assert_eq!(entry.notification_id.chars().count(), 128);

    let before = refused_before_handler(Some(Rpc::Subscribe), &unknown, "OUT_OF_RANGE", "too big");
    assert_eq!(
        (before.action, before.reason.as_str()),
        ("SUBSCRIBE_REFUSED", "undecodable request: too big")
    );
}
