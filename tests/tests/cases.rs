//! The case picture end to end: events that do not fit their case's state
//! are refused with the state named and nothing stored, and `GetCase`
//! answers a large case in pages that each fit a client's message limit.

use prost::Message;
use tonic::Code;

use liandong_core::pb::{self, CaseState, Confidentiality as Level, EventType as Event};
use liandong_tests::{Testbed, notification, publish, publish_lifecycle};

/// The audit log's refusals, as (agency, action, decision, reason).
async fn refusals(bed: &Testbed) -> Vec<(String, String, String, String)> {
    let mut conn = bed.connect_database().await;
    sqlx::query_as(
        "SELECT agency, action, decision, reason FROM audit_log \
         WHERE action IN ('PUBLISH_REFUSED', 'CASE_READ_REFUSED') ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// The first page of `case_ref` as `agency` reads it.
async fn first_page(bed: &Testbed, agency: &str, case_ref: &str) -> pb::CaseView {
    bed.client(agency)
        .await
        .get_case(pb::GetCaseRequest {
            case_ref: case_ref.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn filing_decision_for_a_never_transferred_case_is_refused_naming_its_state() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification("clue-1", "CZ-CL-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let mut police = bed.client("cz-psb").await;

    let filing = notification("f-1", "CZ-CL-1", Event::CaseFiled, Level::Internal, &[]);
    let status = publish(&mut police, filing.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let clue_refusal = "case CZ-CL-1 is CLUE; CASE_FILED needs TRANSFERRED, \
                        TRANSFER_RECEIVED, RECONSIDERATION or FILING_SUPERVISED";
    assert_eq!(status.message(), clue_refusal);

    // A case the gateway never saw is not opened by a decision on it.
    let unknown = notification("f-2", "CZ-NONE", Event::CaseFiled, Level::Internal, &[]);
    let status = publish(&mut police, unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let none_refusal = "case CZ-NONE does not exist; CASE_FILED needs TRANSFERRED, \
                        TRANSFER_RECEIVED, RECONSIDERATION or FILING_SUPERVISED";
    assert_eq!(status.message(), none_refusal);

    // Nothing was stored, the case did not move, and both refusals are
    // in the audit log.
    assert_eq!(bed.stored_count().await, 1);
    let view = first_page(&bed, "cz-psb", "CZ-CL-1").await;
    assert_eq!(view.state, CaseState::Clue as i32);
    assert_eq!(view.timeline.len(), 1);
    let missing = bed
        .client("cz-psb")
        .await
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-NONE".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let refused = refusals(&bed).await;
    for reason in [clue_refusal, none_refusal] {
        let row = (
            "cz-psb".to_owned(),
            "PUBLISH_REFUSED".to_owned(),
            "FAILED_PRECONDITION".to_owned(),
            format!("failed precondition: {reason}"),
        );
        assert!(refused.contains(&row), "{refused:?}");
    }

    // Once transferred, the same notification is accepted under its id.
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification(
            "t-1",
            "CZ-CL-1",
            Event::CaseTransferred,
            Level::Internal,
            &[],
        ),
    )
    .await
    .unwrap();
    let receipt = publish(&mut police, filing).await.unwrap();
    assert!(!receipt.duplicate);
    let view = first_page(&bed, "cz-psb", "CZ-CL-1").await;
    assert_eq!(view.state, CaseState::Filed as i32);
}

#[tokio::test]
async fn second_judgment_is_refused_naming_the_closed_state() {
    let bed = Testbed::start().unwrap();
    let receipts = publish_lifecycle(&bed, "CZ-J-1", Event::JudgmentRecorded).await;
    let stored = bed.stored_count().await;
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let again = notification(
        "j-2",
        "CZ-J-1",
        Event::JudgmentRecorded,
        Level::Internal,
        &[],
    );
    let status = publish(&mut procuratorate, again).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "case CZ-J-1 is JUDGED, which is closed; JUDGMENT_RECORDED needs PROSECUTED"
    );
    assert_eq!(bed.stored_count().await, stored);

    // The picture: closed, where and by whom, since when.
    let view = first_page(&bed, "cz-procuratorate", "CZ-J-1").await;
    assert_eq!(view.state, CaseState::Judged as i32);
    assert_eq!(view.region, "140423");
    assert_eq!(view.agencies, ["cz-eeb", "cz-procuratorate", "cz-psb"]);
    assert_eq!(view.opened_at, receipts[0].received_at);
    assert_eq!(view.state_since, receipts.last().unwrap().received_at);
    assert_eq!(view.timeline.len(), receipts.len());
    assert!(view.next_page_token.is_empty());
}

/// Bytes of content per notification of the large case.
const LARGE: usize = 200 * 1024;

/// Above what a client accepts by default in one message.
const CLIENT_LIMIT: usize = 4 * 1024 * 1024;

#[tokio::test]
async fn get_case_pages_a_large_case_each_page_under_4_mib() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut sequences = Vec::new();
    for i in 0..45 {
        let mut n = notification(
            &format!("big-{i}"),
            "CZ-BIG",
            Event::ClueShared,
            Level::Internal,
            &[],
        );
        n.body = Some(pb::CaseBody {
            description: format!("{i:03}").repeat(LARGE / 3),
            ..Default::default()
        });
        sequences.push(publish(&mut eeb, n).await.unwrap().sequence);
    }
    let mut police = bed.client("cz-psb").await;
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    let mut first_token = None;
    loop {
        let view = police
            .get_case(pb::GetCaseRequest {
                case_ref: "CZ-BIG".into(),
                page_size: 0,
                page_token: token.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("page {pages}: {status:?}"))
            .into_inner();
        pages += 1;
        assert!(
            view.encoded_len() < CLIENT_LIMIT,
            "page {pages}: {} bytes",
            view.encoded_len()
        );
        assert!(!view.timeline.is_empty(), "page {pages} is empty");
        assert_eq!(view.state, CaseState::Clue as i32);
        seen.extend(view.timeline.iter().map(|d| d.sequence));
        if view.next_page_token.is_empty() {
            break;
        }
        first_token.get_or_insert_with(|| view.next_page_token.clone());
        token = view.next_page_token;
    }
    assert_eq!(seen, sequences, "every entry once, in order");
    assert!(
        pages >= 5,
        "45 × 200 KiB needs at least 5 pages of 2 MiB, got {pages}"
    );

    // Small pages by count.
    let view = police
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-BIG".into(),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.timeline.len(), 3);
    assert!(!view.next_page_token.is_empty());

    // Every disclosure was audited, page by page.
    let mut conn = bed.connect_database().await;
    let (reads,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_log WHERE agency = 'cz-psb' AND action = 'CASE_READ'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(reads, 45 + 3);

    // Misuse: a token of another case, a made-up token, a page too large.
    let first_token = first_token.expect("more than one page");
    let misuse = [
        (
            "CZ-OTHER",
            0,
            first_token.as_str(),
            "page_token: belongs to another case than CZ-OTHER",
        ),
        ("CZ-BIG", 0, "garbage", "page_token: is not a page token"),
        ("CZ-BIG", 501, "", "page_size: must be 1 to 500"),
    ];
    for (case_ref, page_size, page_token, message) in misuse {
        let status = police
            .get_case(pb::GetCaseRequest {
                case_ref: case_ref.into(),
                page_size,
                page_token: page_token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{case_ref} {page_token}"
        );
        assert!(
            status.message().starts_with(message),
            "{}",
            status.message()
        );
    }
    let refused = refusals(&bed).await;
    let case_read_refused = refused
        .iter()
        .filter(|(agency, action, decision, _)| {
            agency == "cz-psb" && action == "CASE_READ_REFUSED" && decision == "INVALID_ARGUMENT"
        })
        .count();
    assert_eq!(case_read_refused, 3, "{refused:?}");
    // The refusals disclosed nothing more.
    let (after,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_log WHERE agency = 'cz-psb' AND action = 'CASE_READ'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(after, reads);
}
