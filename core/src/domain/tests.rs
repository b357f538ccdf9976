use super::*;

fn valid() -> pb::Notification {
    pb::Notification {
        notification_id: "eeb-xy-2026-0001".into(),
        case_ref: "CZ-2026-HW-0042".into(),
        event: pb::EventType::CaseTransferred as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: vec!["cz-psb-xiangyuan".into(), "cz-psb-xiangyuan".into()],
        confidentiality_note: "suspects not yet detained".into(),
        region: "140423".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        summary: "suspected dumping of hazardous waste".into(),
        ..Default::default()
    }
}

#[test]
fn valid_notification_converts_and_dedups_recipients() {
    let n = Notification::try_from(valid()).unwrap();
    assert_eq!(n.recipients.len(), 1);
    assert_eq!(n.event.name(), "CASE_TRANSFERRED");
    assert_eq!(n.confidentiality, Confidentiality::Restricted);
}

#[test]
fn unspecified_and_unknown_enums_are_refused() {
    let mut wire = valid();
    wire.confidentiality = 0;
    let err = Notification::try_from(wire).unwrap_err();
    assert_eq!(err.field, "notification.confidentiality");
    let mut wire = valid();
    wire.event = 999;
    let err = Notification::try_from(wire).unwrap_err();
    assert_eq!(err.field, "notification.event");
    assert!(err.reason.contains("999"));
}

#[test]
fn restricted_needs_recipients_and_a_reason() {
    let mut wire = valid();
    wire.recipients.clear();
    assert_eq!(
        Notification::try_from(wire).unwrap_err().field,
        "notification.recipients"
    );
    let mut wire = valid();
    wire.confidentiality_note = "  ".into();
    assert_eq!(
        Notification::try_from(wire).unwrap_err().field,
        "notification.confidentiality_note"
    );
}

#[test]
fn missing_fields_are_named() {
    for (field, edit) in [
        (
            "notification.notification_id",
            (|w: &mut pb::Notification| w.notification_id.clear()) as fn(&mut pb::Notification),
        ),
        ("notification.case_ref", |w| w.case_ref = "bad ref".into()),
        ("notification.region", |w| w.region = "1404".into()),
        ("notification.occurred_at", |w| w.occurred_at = None),
        ("notification.summary", |w| w.summary.clear()),
        ("notification.sender", |w| w.sender = "Not An Id".into()),
        ("notification.recipients[0]", |w| {
            w.recipients = vec!["".into()]
        }),
    ] {
        let mut wire = valid();
        edit(&mut wire);
        assert_eq!(Notification::try_from(wire).unwrap_err().field, field);
    }
}

#[test]
fn region_containment_follows_gb2260() {
    let city: Region = Region::parse("r", "140400").unwrap();
    let county = Region::parse("r", "140423").unwrap();
    let other_city = Region::parse("r", "140500").unwrap();
    let province = Region::parse("r", "140000").unwrap();
    assert!(city.contains(&county));
    assert!(!county.contains(&city));
    assert!(!city.contains(&other_city));
    assert!(province.contains(&other_city));
}

#[test]
fn instant_round_trips_through_the_wire() {
    let now = Instant::now();
    assert_eq!(Instant::from_wire("t", Some(now.to_wire())).unwrap(), now);
    let bad = prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    };
    assert!(Instant::from_wire("t", Some(bad)).is_err());
}

#[test]
fn names_parse_in_short_and_full_form() {
    assert_eq!(
        "CASE_FILED".parse::<Event>().unwrap().to_wire(),
        pb::EventType::CaseFiled
    );
    assert_eq!(
        "EVENT_TYPE_CASE_FILED".parse::<Event>().unwrap().to_wire(),
        pb::EventType::CaseFiled
    );
    assert!("UNSPECIFIED".parse::<Event>().is_err());
    assert_eq!(
        "CONFIDENTIALITY_PUBLIC".parse::<Confidentiality>().unwrap(),
        Confidentiality::Public
    );
}

#[test]
fn announcement_fields_only_on_announcements() {
    let announcement = pb::CaseBody {
        announcement: Some(pb::Announcement::default()),
        ..Default::default()
    };
    let mut clue = valid();
    clue.event = pb::EventType::ClueShared as i32;
    clue.body = Some(announcement.clone());
    assert_eq!(
        Notification::try_from(clue).unwrap_err(),
        FieldError::new(
            "notification.body.announcement",
            "is only for announcements, not CLUE_SHARED"
        )
    );
    for event in [
        pb::EventType::JointAnnouncement,
        pb::EventType::AnnouncementApproved,
        pb::EventType::AnnouncementRejected,
        pb::EventType::AnnouncementReleased,
    ] {
        let mut n = valid();
        n.event = event as i32;
        n.body = Some(announcement.clone());
        assert!(Notification::try_from(n).is_ok(), "{event:?}");
    }
}
