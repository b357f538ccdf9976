use std::path::Path;

use liandong_core::domain::{
    CaseRef, Confidentiality, Envelope, Event, Instant, NotificationId, Region, RuleName,
};
use liandong_core::registry::Registry;

use super::*;
use crate::policy::Policy;

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

const RULE: &str = "transfer-copied-to-procuratorate";

/// A RESTRICTED transfer from the Xiangyuan bureau to the Xiangyuan
/// police, copied to the Xiangyuan procuratorate.
fn copied_transfer() -> StoredNotification {
    let wire = pb::Notification {
        notification_id: "t-1".into(),
        case_ref: "CZ-XY-1".into(),
        event: pb::EventType::CaseTransferred as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: vec!["cz-psb-xiangyuan".into()],
        confidentiality_note: "侦查阶段".into(),
        region: "140423".into(),
        summary: "CONTENT".into(),
        sender: "cz-eeb-xiangyuan".into(),
        ..Default::default()
    };
    StoredNotification {
        sequence: 4,
        envelope: Envelope {
            sender: AgencyId::parse("sender", "cz-eeb-xiangyuan").unwrap(),
            id: NotificationId::parse_field("id", "t-1").unwrap(),
            case_ref: CaseRef::parse_field("case_ref", "CZ-XY-1").unwrap(),
            event: Event::from_wire("event", wire.event).unwrap(),
            confidentiality: Confidentiality::Restricted,
            region: Region::parse("region", "140423").unwrap(),
            recipients: vec![AgencyId::parse("recipient", "cz-psb-xiangyuan").unwrap()],
            copies: vec![StatutoryCopy {
                agency: AgencyId::parse("agency", "cz-procuratorate-xiangyuan").unwrap(),
                rule: RuleName::parse("rule", RULE).unwrap(),
            }],
        },
        received_at: Instant::now(),
        payload: wire.encode_to_vec(),
    }
}

#[test]
fn a_copy_is_disclosed_in_full_naming_its_rule() {
    let rules = rules();
    let stored = copied_transfer();
    let copies = vec![pb::StatutoryCopy {
        agency: "cz-procuratorate-xiangyuan".into(),
        rule: RULE.into(),
    }];

    let copied = agency(&rules, "cz-procuratorate-xiangyuan");
    let disclosure = disclose(&rules, &copied, &stored, 1, Channel::Delivery).unwrap();
    assert!(!disclosure.frame.withheld);
    assert_eq!(disclosure.frame.copied_by_rule, RULE);
    assert_eq!(disclosure.frame.copies, copies);
    assert_eq!(disclosure.frame.notification.unwrap().summary, "CONTENT");
    let entry = disclosure.audit.unwrap();
    assert_eq!(
        (
            entry.agency.as_str(),
            entry.decision.as_str(),
            entry.reason.as_str()
        ),
        (
            "cz-procuratorate-xiangyuan",
            "FULL",
            "statutory copy (transfer-copied-to-procuratorate)"
        )
    );

    // A listed recipient and the sender see the copies, but were not
    // copied themselves.
    for party in ["cz-psb-xiangyuan", "cz-eeb-xiangyuan"] {
        let (frame, _) = render(&rules, &agency(&rules, party), &stored, 1).unwrap();
        assert!(
            !frame.withheld && frame.copied_by_rule.is_empty(),
            "{party}"
        );
        assert_eq!(frame.copies, copies, "{party}");
    }

    // A stub carries neither.
    let overseer = agency(&rules, "cz-procuratorate");
    let (stub, decision) = render(&rules, &overseer, &stored, 1).unwrap();
    assert!(stub.withheld, "{decision:?}");
    assert!(stub.copies.is_empty() && stub.copied_by_rule.is_empty());
    assert!(!format!("{stub:?}").contains("CONTENT"));

    // A copy whose clearance is now below the level gets a stub, still
    // recorded.
    let mut lowered = copied.clone();
    lowered.clearance = Confidentiality::Internal;
    let disclosure = disclose(&rules, &lowered, &stored, 1, Channel::CaseRead).unwrap();
    assert!(disclosure.frame.withheld && disclosure.frame.copied_by_rule.is_empty());
    assert_eq!(disclosure.audit.unwrap().decision, "WITHHELD");
}
