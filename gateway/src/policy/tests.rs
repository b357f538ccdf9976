use std::path::Path;

use liandong_core::domain::{AgencyId, CaseRef, Event, Instant, NotificationId, Region, Role};
use liandong_core::toml_file::FileError;

use super::*;

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

fn rules() -> Rules {
    Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    }
}

fn agency(rules: &Rules, id: &str) -> Agency {
    rules
        .registry
        .get(&AgencyId::parse("id", id).unwrap())
        .unwrap()
        .clone()
}

fn envelope(
    sender: &str,
    event: pb::EventType,
    level: Confidentiality,
    recipients: &[&str],
) -> Envelope {
    Envelope {
        sender: AgencyId::parse("sender", sender).unwrap(),
        id: NotificationId::parse_field("id", "n").unwrap(),
        case_ref: CaseRef::parse_field("case_ref", "C").unwrap(),
        event: Event::from_wire("event", event as i32).unwrap(),
        confidentiality: level,
        region: Region::parse("region", "140423").unwrap(),
        recipients: recipients
            .iter()
            .map(|r| AgencyId::parse("recipient", r).unwrap())
            .collect(),
    }
}

fn notification(event: &str, level: Confidentiality, recipients: &[&str]) -> Notification {
    Notification::try_from(pb::Notification {
        notification_id: "n".into(),
        case_ref: "C".into(),
        event: event.parse::<Event>().unwrap().to_wire() as i32,
        confidentiality: level.to_wire() as i32,
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        confidentiality_note: if recipients.is_empty() {
            String::new()
        } else {
            "reason".into()
        },
        region: "140423".into(),
        occurred_at: Some(Instant::now().to_wire()),
        summary: "s".into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn publishing_rights_follow_the_role() {
    let rules = rules();
    let police = agency(&rules, "cz-psb-xiangyuan");
    let n = notification("ARREST_APPROVED", Confidentiality::Internal, &[]);
    assert_eq!(
        check_publish(&rules, &police, &n),
        Err(PublishRefusal::Forbidden(
            "rule publish.POLICE does not allow ARREST_APPROVED".into()
        ))
    );
    let procuratorate = agency(&rules, "cz-procuratorate");
    assert_eq!(check_publish(&rules, &procuratorate, &n), Ok(()));
    let alert = notification("SUPERVISION_ALERT", Confidentiality::Internal, &[]);
    assert!(
        matches!(check_publish(&rules, &procuratorate, &alert), Err(PublishRefusal::Forbidden(r)) if r.contains("gateway only"))
    );
    let observer = agency(&rules, "cz-press-office");
    let announcement = notification("JOINT_ANNOUNCEMENT", Confidentiality::Public, &[]);
    assert!(check_publish(&rules, &observer, &announcement).is_err());
}

#[test]
fn confidential_to_an_uncleared_recipient_is_refused_at_publish() {
    let rules = rules();
    let eeb = agency(&rules, "cz-eeb");
    let n = notification(
        "CASE_TRANSFERRED",
        Confidentiality::Confidential,
        &["cz-psb", "cz-eeb-luzhou"],
    );
    let Err(PublishRefusal::Field(error)) = check_publish(&rules, &eeb, &n) else {
        panic!("must refuse")
    };
    assert_eq!(error.field, "notification.recipients[1]");
    assert!(
        error.reason.contains("cleared only up to RESTRICTED"),
        "{}",
        error.reason
    );
    // A branch cleared to RESTRICTED cannot mark CONFIDENTIAL itself.
    let branch = agency(&rules, "cz-eeb-xiangyuan");
    let n = notification(
        "CASE_TRANSFERRED",
        Confidentiality::Confidential,
        &["cz-psb"],
    );
    assert!(matches!(
        check_publish(&rules, &branch, &n),
        Err(PublishRefusal::Forbidden(_))
    ));
}

#[test]
fn levels_parties_parents_and_oversight_decide_delivery() {
    let rules = rules();
    let transfer = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    let decide_for = |id: &str| decide(&rules, &agency(&rules, id), &transfer);
    assert_eq!(
        decide_for("cz-eeb-xiangyuan"),
        Decision::Full("own notification")
    );
    assert_eq!(
        decide_for("cz-psb-xiangyuan"),
        Decision::Full("listed recipient")
    );
    assert_eq!(decide_for("cz-psb"), Decision::Full("parent of a party"));
    assert_eq!(decide_for("cz-eeb"), Decision::Full("parent of a party"));
    assert!(
        matches!(decide_for("cz-procuratorate-xiangyuan"), Decision::Withheld(r) if r.starts_with("oversight"))
    );
    assert!(
        matches!(decide_for("cz-procuratorate"), Decision::Withheld(_)),
        "a city contains its counties"
    );
    assert_eq!(decide_for("cz-eeb-luzhou"), Decision::Nothing);
    assert_eq!(decide_for("cz-press-office"), Decision::Nothing);
    assert_eq!(decide_for("cz-ops"), Decision::Nothing);

    let internal = envelope(
        "cz-eeb",
        pb::EventType::ClueShared,
        Confidentiality::Internal,
        &[],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-eeb-luzhou"), &internal),
        Decision::Full("member agency")
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-press-office"), &internal),
        Decision::Nothing
    );
    let public = envelope(
        "cz-eeb",
        pb::EventType::MeetingNotice,
        Confidentiality::Public,
        &[],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-press-office"), &public),
        Decision::Full("public")
    );
}

#[test]
fn confidential_needs_recipient_and_clearance() {
    let mut rules = rules();
    let secret = envelope(
        "cz-eeb",
        pb::EventType::CaseTransferred,
        Confidentiality::Confidential,
        &["cz-psb"],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb"), &secret),
        Decision::Full("listed recipient")
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb-xiangyuan"), &secret),
        Decision::Nothing,
        "no parent rule for CONFIDENTIAL"
    );
    let mut lowered = agency(&rules, "cz-psb");
    lowered.clearance = Confidentiality::Restricted;
    assert!(
        matches!(decide(&rules, &lowered, &secret), Decision::Withheld(r) if r.contains("clearance RESTRICTED"))
    );
    rules.policy.parent_sees_branch_restricted = false;
    let transfer = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb"), &transfer),
        Decision::Nothing
    );
}

#[test]
fn stub_keeps_no_content() {
    let full = pb::Notification {
        notification_id: "n".into(),
        case_ref: "C".into(),
        summary: "CANARY".into(),
        confidentiality_note: "CANARY".into(),
        contact: "CANARY".into(),
        recipients: vec!["cz-psb".into()],
        body: Some(pb::CaseBody {
            description: "CANARY".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stub = withheld_stub(&full, "办公室 0355-1234567");
    assert!(!format!("{stub:?}").contains("CANARY"));
    assert_eq!(stub.contact, "办公室 0355-1234567");
}

#[test]
fn marked_fields_are_stripped_below_their_level() {
    assert!(
        redact::marked_count() >= 4,
        "the contract marks sensitive fields"
    );
    let mut n = pb::Notification {
        summary: "kept".into(),
        body: Some(pb::CaseBody {
            description: "kept".into(),
            parties: vec![
                pb::Party {
                    role: "suspect".into(),
                    name: "张某".into(),
                    identifier: "1404xxxx".into(),
                    contact: "138".into(),
                },
                pb::Party {
                    role: "company".into(),
                    name: "某公司".into(),
                    ..Default::default()
                },
            ],
            informant: Some(pb::Informant {
                name: "李某".into(),
                contact: "139".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut restricted = n.clone();
    let removed = redact::strip_above(&mut restricted, Confidentiality::Restricted);
    assert_eq!(
        removed,
        vec![
            "body.parties.identifier",
            "body.parties.contact",
            "body.informant"
        ]
    );
    let body = restricted.body.as_ref().unwrap();
    assert_eq!(body.parties[0].name, "张某");
    assert!(body.parties[0].identifier.is_empty() && body.informant.is_none());
    let removed = redact::strip_above(&mut n, Confidentiality::Internal);
    assert!(removed.contains(&"body.parties.name".to_owned()));
    assert_eq!(n.body.as_ref().unwrap().parties[1].role, "company");
    assert_eq!(n.summary, "kept");
    let mut untouched = pb::Notification {
        summary: "x".into(),
        ..Default::default()
    };
    assert!(redact::strip_above(&mut untouched, Confidentiality::Public).is_empty());
}

#[test]
fn policy_errors_name_the_entry_and_field() {
    let path = Path::new("policy.toml");
    let bad = DEFAULT_POLICY.replace("\"ARREST_REQUESTED\",", "\"ARREST_REQUESTD\",");
    let error = Policy::parse(&bad, path).unwrap_err().to_string();
    assert!(
        error.starts_with("policy.toml: publish.POLICE[7]: unknown event type \"ARREST_REQUESTD\""),
        "{error}"
    );
    let bad = DEFAULT_POLICY.replace("OPERATOR = []", "OPERATOR = [\"STATISTICS_REPORT\"]");
    let error = Policy::parse(&bad, path).unwrap_err().to_string();
    assert!(
        error.contains("publish.OPERATOR[0]: STATISTICS_REPORT is emitted by the gateway only"),
        "{error}"
    );
    let bad = DEFAULT_POLICY.replace("role = \"PROCURATORATE\"", "role = \"OBSERVER\"");
    let error = Policy::parse(&bad, path).unwrap_err().to_string();
    assert!(error.contains("oversight[0].role"), "{error}");
    let bad = DEFAULT_POLICY.replace("parent_sees_branch_restricted", "parent_sees_branches");
    assert!(matches!(
        Policy::parse(&bad, path),
        Err(PolicyError::File(FileError::Syntax { .. }))
    ));
}

#[test]
fn the_example_policy_is_the_built_in_one() {
    assert_eq!(
        include_str!("../../../deploy/dev/policy.toml"),
        DEFAULT_POLICY
    );
    let _ = (Role::Police, Region::parse("r", "140400"));
}

use rules::DEFAULT_POLICY;

#[test]
fn a_draft_announcement_reaches_only_its_cosigners() {
    let rules = rules();
    let draft = envelope(
        "cz-eeb",
        pb::EventType::JointAnnouncement,
        Confidentiality::Public,
        &["cz-psb", "cz-procuratorate"],
    );
    for cosigner in ["cz-psb", "cz-procuratorate"] {
        assert_eq!(
            decide(&rules, &agency(&rules, cosigner), &draft),
            Decision::Full("co-signer of the draft")
        );
    }
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-eeb"), &draft),
        Decision::Full("own notification")
    );
    // Marked PUBLIC, yet neither the public nor other members see a draft.
    for other in ["cz-press-office", "cz-psb-xiangyuan", "cz-eeb-luzhou"] {
        assert_eq!(
            decide(&rules, &agency(&rules, other), &draft),
            Decision::Nothing,
            "{other}"
        );
    }
}
