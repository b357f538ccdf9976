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

#[test]
fn a_statistics_report_reads_back_from_its_json_form() {
    let text = r#"{
        "from": "2026-11-01", "to": "2026-11-30", "region": "", "reader": "",
        "events": [{"agency": "liandong-gateway", "event": "EVENT_TYPE_SUPERVISION_ALERT", "count": 1}],
        "cases_opened": 2, "cases_transferred": 1, "cases_filed": 1, "cases_declined": 0,
        "cases_prosecuted": 0, "cases_judged": 0, "lead_time_samples": 1,
        "lead_time_median_hours": 2.5, "lead_time_p90_hours": 2.5,
        "breaches_opened": 1, "breaches_closed_late": 1,
        "generated_at": "2026-12-01T00:00:00Z"
    }"#;
    let report: pb::StatisticsReport = from_json(text).unwrap();
    assert_eq!(
        report.events[0].event,
        pb::EventType::SupervisionAlert as i32
    );
    assert_eq!(report.events[0].count, 1);
    assert_eq!(report.cases_opened, 2);
    assert_eq!(report.lead_time_median_hours, 2.5);
    assert_eq!(to_json(&report)["breaches_closed_late"], 1);
    let err = from_json::<pb::StatisticsReport>(r#"{"cases_opend": 1}"#).unwrap_err();
    assert!(err.reason.contains("cases_opend"), "{err}");
}
