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

/// A body of honest text: Chinese with full-width punctuation, several
/// lines and a tab in the multi-line fields.
fn honest_body() -> pb::CaseBody {
    pb::CaseBody {
        title: "襄垣县某化工公司非法倾倒危险废物案".into(),
        description: "2026年3月2日，群众举报：某化工公司在厂区外倾倒废酸。\n现场检测pH值为1.2；\t已封存。".into(),
        location: "山西省长治市襄垣县古韩镇（东经113.05°，北纬36.53°）".into(),
        legal_basis: "《中华人民共和国刑法》第三百三十八条；\n《环境保护行政执法与刑事司法衔接工作办法》（2017）".into(),
        decision: "移送公安机关。".into(),
        document_number: "襄环移〔2026〕3号".into(),
        parties: vec![pb::Party {
            role: "company".into(),
            name: "某化工有限公司".into(),
            identifier: "91140423MA0000000X".into(),
            contact: "0355-1234567".into(),
        }],
        measurements: vec![pb::Measurement {
            name: "waste_tonnes".into(),
            value: "12.5".into(),
            unit: "t".into(),
        }],
        ..Default::default()
    }
}

fn with_body(body: pb::CaseBody) -> pb::Notification {
    pb::Notification {
        body: Some(body),
        ..valid()
    }
}

#[test]
fn honest_body_text_is_accepted() {
    Notification::try_from(with_body(honest_body())).unwrap();
}

#[test]
fn body_text_with_control_characters_is_refused() {
    type Edit = fn(&mut pb::CaseBody, String);
    let cases: [(&str, Edit); 12] = [
        ("notification.body.title", |b, t| b.title = t),
        ("notification.body.description", |b, t| b.description = t),
        ("notification.body.location", |b, t| b.location = t),
        ("notification.body.legal_basis", |b, t| b.legal_basis = t),
        ("notification.body.decision", |b, t| b.decision = t),
        ("notification.body.document_number", |b, t| {
            b.document_number = t
        }),
        ("notification.body.parties[0].name", |b, t| {
            b.parties[0].name = t
        }),
        ("notification.body.parties[0].contact", |b, t| {
            b.parties[0].contact = t
        }),
        ("notification.body.measurements[0].value", |b, t| {
            b.measurements[0].value = t
        }),
        ("notification.body.informant.name", |b, t| {
            b.informant = Some(pb::Informant {
                name: t,
                contact: String::new(),
            })
        }),
        ("notification.body.attachments[0].name", |b, t| {
            b.attachments = vec![pb::Attachment {
                name: t,
                media_type: "application/pdf".into(),
                sha256: "a".repeat(64),
                size_bytes: 1,
            }]
        }),
        ("notification.body.alert.awaited", |b, t| {
            b.alert = Some(pb::SupervisionAlert {
                awaited: t,
                ..Default::default()
            })
        }),
    ];
    // ESC (a terminal escape), a carriage return (forged lines), NUL, DEL,
    // and a C1 control.
    for bad in ["\u{1b}[31m", "a\rb", "a\0b", "a\u{7f}b", "a\u{85}b"] {
        for (field, edit) in cases {
            let mut body = honest_body();
            edit(&mut body, format!("正文{bad}"));
            let err = Notification::try_from(with_body(body)).unwrap_err();
            assert_eq!(err.field, field, "{bad:?}");
            assert!(err.reason.contains("control characters"), "{err}");
            assert!(!err.to_string().contains(bad), "the content is not echoed");
        }
    }
    // One-line fields refuse a newline too; multi-line ones keep it.
    let mut body = honest_body();
    body.title = "第一行\n伪造的第二行".into();
    assert_eq!(
        Notification::try_from(with_body(body)).unwrap_err().field,
        "notification.body.title"
    );
    let mut body = honest_body();
    body.decision = "第一行\n第二行\t续".into();
    Notification::try_from(with_body(body)).unwrap();
    // The top-level summary obeys the same rule.
    let mut wire = valid();
    wire.summary = "摘要\u{1b}]0;forged\u{7}".into();
    assert_eq!(
        Notification::try_from(wire).unwrap_err().field,
        "notification.summary"
    );
}

#[test]
fn body_text_over_limit_is_refused() {
    type Edit = fn(&mut pb::CaseBody, usize);
    let cases: [(&str, usize, Edit); 6] = [
        ("notification.body.title", MAX_BODY_LINE_CHARS, |b, n| {
            b.title = "字".repeat(n)
        }),
        (
            "notification.body.description",
            MAX_BODY_TEXT_CHARS,
            |b, n| b.description = "字".repeat(n),
        ),
        ("notification.body.decision", MAX_BODY_TEXT_CHARS, |b, n| {
            b.decision = "字".repeat(n)
        }),
        (
            "notification.body.document_number",
            MAX_BODY_CODE_CHARS,
            |b, n| b.document_number = "号".repeat(n),
        ),
        ("notification.body.parties", MAX_BODY_ENTRIES, |b, n| {
            b.parties = vec![pb::Party::default(); n]
        }),
        (
            "notification.body.measurements",
            MAX_BODY_MEASUREMENTS,
            |b, n| b.measurements = vec![pb::Measurement::default(); n],
        ),
    ];
    for (field, max, edit) in cases {
        // At the limit (counted in characters, not bytes): accepted.
        let mut body = honest_body();
        edit(&mut body, max);
        Notification::try_from(with_body(body)).unwrap_or_else(|e| panic!("{field}: {e}"));
        // One more: refused, naming the field and the limit.
        let mut body = honest_body();
        edit(&mut body, max + 1);
        let err = Notification::try_from(with_body(body)).unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.reason.contains(&max.to_string()), "{err}");
    }
    let mut wire = valid();
    wire.summary = "字".repeat(MAX_SUMMARY_CHARS + 1);
    assert_eq!(
        Notification::try_from(wire).unwrap_err().field,
        "notification.summary"
    );
}
