use super::*;

#[test]
fn notification_json_round_trips_with_enum_names() {
    let text = r#"{
        "notification_id": "n-1",
        "case_ref": "CZ-2026-HW-0042",
        "event": "EVENT_TYPE_CLUE_SHARED",
        "confidentiality": "CONFIDENTIALITY_INTERNAL",
        "region": "140423",
        "occurredAt": "2026-11-20T08:30:00Z",
        "summary": "废机油倾倒线索",
        "body": {"parties": [{"role": "company", "name": "某化工公司"}]}
    }"#;
    let n: pb::Notification = from_json(text).unwrap();
    assert_eq!(n.event, pb::EventType::ClueShared as i32);
    assert_eq!(n.occurred_at.unwrap().seconds, 1_795_163_400);
    let back = to_json(&n);
    assert_eq!(back["event"], "EVENT_TYPE_CLUE_SHARED");
    assert_eq!(back["occurred_at"], "2026-11-20T08:30:00Z");
    assert_eq!(back["body"]["parties"][0]["name"], "某化工公司");
}

#[test]
fn unknown_fields_and_bad_enums_are_refused_with_the_field() {
    let err = from_json::<pb::Notification>(r#"{"case_reff": "x"}"#).unwrap_err();
    assert!(err.reason.contains("case_reff"), "{err}");
    let err = from_json::<pb::Notification>(r#"{"event": "EVENT_TYPE_BOGUS"}"#).unwrap_err();
    assert!(err.reason.contains("EVENT_TYPE_BOGUS"), "{err}");
    assert!(from_json::<pb::Notification>("{} trailing").is_err());
}
