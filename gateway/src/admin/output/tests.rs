use super::*;

fn at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

#[test]
fn durations_read_in_their_largest_unit() {
    assert_eq!(duration(42), "42 s");
    assert_eq!(duration(180), "3 min");
    assert_eq!(duration(3 * 3600), "3 h");
    assert_eq!(duration(5 * 3600 + 12 * 60 + 7), "5 h 12 min");
    assert_eq!(duration(2 * 86_400), "2 d");
    assert_eq!(duration(2 * 86_400 + 3 * 3600), "2 d 3 h");
}

#[test]
fn times_read_as_how_long_ago() {
    let now = 1_800_000_000;
    assert_eq!(ago(None, now), "-");
    assert_eq!(ago(Some(&at(now)), now), "just now");
    assert_eq!(ago(Some(&at(now - 200)), now), "3 min ago");
    assert_eq!(ago(Some(&at(now + 120)), now), "in 2 min");
}

#[test]
fn timestamps_read_as_utc_date_and_time() {
    assert_eq!(when(None), "-");
    assert_eq!(when(Some(&at(0))), "1970-01-01 00:00:00 UTC");
    assert_eq!(when(Some(&at(1_800_000_000))), "2027-01-15 08:00:00 UTC");
}

#[test]
fn sizes_read_in_binary_units() {
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(3 * 1024 + 400), "3.4 KiB");
    assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
}

#[test]
fn lag_reads_in_words_and_says_when_it_was_capped() {
    assert_eq!(lag(0, false, 0), "up to date");
    assert_eq!(lag(1, false, 30), "1 notification, oldest 30 s");
    assert_eq!(lag(12, false, 200), "12 notifications, oldest 3 min");
    assert_eq!(
        lag(10_000, true, 2 * 86_400),
        "10000+ notifications, oldest 2 d"
    );
}

#[test]
fn json_is_the_proto3_form_with_every_field() {
    let list = liandong_core::pb::SubscriptionList {
        subscriptions: vec![liandong_core::pb::SubscriptionState {
            owner: "cz-psb".into(),
            name: "all".into(),
            updated_at: Some(at(0)),
            ..Default::default()
        }],
    };
    let text = json(&list, "liandong.v1.SubscriptionList");
    assert!(text.ends_with('\n'));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let state = &value["subscriptions"][0];
    assert_eq!(state["owner"], "cz-psb");
    assert_eq!(state["lag_messages"], 0, "zero fields are present");
    assert_eq!(state["connected"], false);
    assert_eq!(state["updated_at"], "1970-01-01T00:00:00Z");
}

#[test]
fn chinese_names_line_up_in_a_table() {
    assert_eq!(display_width("cz-psb"), 6);
    assert_eq!(display_width("长治市公安局"), 12);
    let text = table(
        &["AGENCY", "NAME", "ROLE"],
        &[
            ["cz-psb".into(), "长治市公安局".into(), "POLICE".into()],
            ["cz-ops".into(), "运维".into(), "OPERATOR".into()],
        ],
    );
    let columns: Vec<usize> = text
        .lines()
        .map(|line| display_width(&line[..line.find(['P', 'O']).unwrap()]))
        .collect();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(columns[1], columns[2], "the ROLE column lines up:\n{text}");
}
