use liandong_core::domain::{Instant, Region, Role};

use super::*;

fn agency(id: &str) -> Agency {
    Agency {
        id: AgencyId::parse("id", id).unwrap(),
        name: id.to_owned(),
        role: Role::Police,
        region: Region::parse("region", "140400").unwrap(),
        parent: None,
        clearance: Confidentiality::Confidential,
        identity: format!("urn:liandong:agency:{id}"),
        contact: String::new(),
        signing_public_key: None,
    }
}

fn stored(level: Confidentiality, recipients: &[&str]) -> StoredNotification {
    StoredNotification {
        sequence: 1,
        sender: "cz-eeb".into(),
        notification_id: "n".into(),
        case_ref: "C".into(),
        event: pb::EventType::CaseTransferred as i32,
        confidentiality: level.to_wire() as i32,
        region: "140423".into(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        received_at: Instant::now(),
        payload: Vec::new(),
    }
}

#[test]
fn restricted_reaches_only_recipients_and_sender() {
    let n = stored(Confidentiality::Restricted, &["cz-psb"]);
    assert_eq!(decide(&agency("cz-psb"), &n), Decision::Full);
    assert_eq!(decide(&agency("cz-eeb"), &n), Decision::Full);
    assert_eq!(decide(&agency("cz-press"), &n), Decision::Nothing);
    let n = stored(Confidentiality::Confidential, &["cz-psb"]);
    assert_eq!(decide(&agency("cz-procuratorate"), &n), Decision::Nothing);
}

#[test]
fn open_levels_reach_everyone_and_unknown_levels_nobody() {
    assert_eq!(
        decide(&agency("cz-press"), &stored(Confidentiality::Public, &[])),
        Decision::Full
    );
    assert_eq!(
        decide(&agency("cz-press"), &stored(Confidentiality::Internal, &[])),
        Decision::Full
    );
    let mut n = stored(Confidentiality::Public, &[]);
    n.confidentiality = 0;
    assert_eq!(decide(&agency("cz-eeb"), &n), Decision::Nothing);
    n.confidentiality = 77;
    assert_eq!(decide(&agency("cz-eeb"), &n), Decision::Nothing);
}

#[test]
fn stub_keeps_no_content() {
    let full = pb::Notification {
        notification_id: "n".into(),
        case_ref: "C".into(),
        summary: "CANARY".into(),
        confidentiality_note: "CANARY".into(),
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
