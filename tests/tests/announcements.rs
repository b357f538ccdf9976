//! Joint announcements (联合发布) end to end: a draft reaches only its
//! co-signers, the public receives the gateway's signed release only once
//! every co-signer approved the same text, and a rejected draft is never
//! released. Real agencies over mutual TLS against the real gateway.

use std::time::Duration;

use tonic::Code;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::registry::GATEWAY_SENDER;
use liandong_core::signing;
use liandong_tests::{Next, Subscriber, Testbed, notification, publish};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(800);
const CASE: &str = "CZ-ANN-2026-12";
const TEXT: &str = "长治市联合打击环境污染犯罪专项行动成果通报";

/// The draft: by the city bureau, PUBLIC once released, co-signed by
/// `cosigners`.
fn draft(id: &str, cosigners: &[&str]) -> pb::Notification {
    let mut n = notification(id, CASE, Event::JointAnnouncement, Level::Public, cosigners);
    n.region = "140400".into();
    n.summary = TEXT.into();
    n.body = Some(pb::CaseBody {
        title: "联合发布".into(),
        description: "2026年查处环境污染犯罪案件情况".into(),
        ..Default::default()
    });
    n
}

/// `agency`'s answer to the draft `of` (as `drafter` published it),
/// naming it by the digest of `text_of`.
fn answer(
    agency_id: &str,
    approve: bool,
    of: &pb::Notification,
    drafter: &str,
    text_of: &pb::Notification,
) -> pb::Notification {
    let event = if approve {
        Event::AnnouncementApproved
    } else {
        Event::AnnouncementRejected
    };
    let mut n = notification(
        &format!("{agency_id}-{}", of.notification_id),
        CASE,
        event,
        Level::Internal,
        &[],
    );
    // Within the answering agency's own jurisdiction.
    n.region = match agency_id {
        "cz-eeb-luzhou" => "140403",
        "cz-eeb-xiangyuan" => "140423",
        _ => "140400",
    }
    .into();
    n.body = Some(pb::CaseBody {
        announcement: Some(pb::Announcement {
            draft: Some(pb::NotificationRef {
                sender: drafter.into(),
                notification_id: of.notification_id.clone(),
                sha256: signing::signed_digest(text_of, drafter),
                sequence: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    n
}

fn gateway_public_key(bed: &Testbed) -> [u8; 32] {
    let text = std::fs::read_to_string(bed.dir.path().join("pki/gateway.signing.pub")).unwrap();
    hex::decode(text.trim()).unwrap().try_into().unwrap()
}

async fn silent(subscriber: &mut Subscriber, who: &str) {
    match subscriber.next_event(QUIET).await {
        Next::Silent => {}
        other => panic!("{who} must receive nothing yet, but the stream {other}"),
    }
}

#[tokio::test]
async fn announcement_released_only_after_all_cosigners() {
    let bed = Testbed::start().unwrap();
    let mut press = bed.client("cz-press-office").await;
    let mut public = Subscriber::open(&mut press, "public").await.unwrap();
    let mut bystander = bed.client("cz-eeb-luzhou").await;
    let mut members = Subscriber::open(&mut bystander, "member").await.unwrap();

    let cosigners = ["cz-psb", "cz-procuratorate", "cz-eeb-xiangyuan"];
    let text = draft("ann-1", &cosigners);
    let mut city_bureau = bed.client("cz-eeb").await;
    let drafted = publish(&mut city_bureau, text.clone()).await.unwrap();

    // A draft is for its co-signers: the public and other members see
    // nothing of it, whatever level it is marked.
    silent(&mut public, "the press office").await;
    silent(&mut members, "a member that is no co-signer").await;
    let mut psb = bed.client("cz-psb").await;
    let mut psb_inbox = Subscriber::open(&mut psb, "drafts").await.unwrap();
    let seen = psb_inbox.take_acked(1, WAIT).await.remove(0);
    assert_eq!(seen.sequence, drafted.sequence);
    assert_eq!(seen.notification.unwrap().summary, TEXT);

    // Answers that do not fit are refused and change nothing.
    let stored = bed.stored_count().await;
    let mut luzhou = bed.client("cz-eeb-luzhou").await;
    let stranger = publish(
        &mut luzhou,
        answer("cz-eeb-luzhou", true, &text, "cz-eeb", &text),
    )
    .await
    .unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied, "{stranger:?}");
    assert!(
        stranger
            .message()
            .contains("cz-eeb-luzhou is not a co-signer of the draft cz-eeb/ann-1"),
        "{stranger:?}"
    );
    let mut altered = text.clone();
    altered.summary = "另一个文本".into();
    let other_text = publish(&mut psb, answer("cz-psb", true, &text, "cz-eeb", &altered))
        .await
        .unwrap_err();
    assert_eq!(
        other_text.code(),
        Code::FailedPrecondition,
        "{other_text:?}"
    );
    assert!(
        other_text.message().contains("another text"),
        "{other_text:?}"
    );
    assert_eq!(bed.stored_count().await, stored, "refusals store nothing");

    // Two of three approve: still nothing for the public.
    let mut procuratorate = bed.client("cz-procuratorate").await;
    for (client, agency) in [
        (&mut psb, "cz-psb"),
        (&mut procuratorate, "cz-procuratorate"),
    ] {
        publish(client, answer(agency, true, &text, "cz-eeb", &text))
            .await
            .unwrap();
    }
    silent(&mut public, "the press office after two of three approvals").await;

    // The third approval releases it, signed by the gateway.
    let mut county = bed.client("cz-eeb-xiangyuan").await;
    let last = publish(
        &mut county,
        answer("cz-eeb-xiangyuan", true, &text, "cz-eeb", &text),
    )
    .await
    .unwrap();
    let release = public.take_acked(1, WAIT).await.remove(0);
    assert_eq!(release.sender, GATEWAY_SENDER);
    assert!(release.sequence > last.sequence);
    assert!(!release.withheld);
    let released = release.notification.unwrap();
    assert_eq!(released.event, Event::AnnouncementReleased as i32);
    assert_eq!(released.confidentiality, Level::Public as i32);
    assert_eq!(released.summary, TEXT);
    let announcement = released
        .body
        .as_ref()
        .and_then(|b| b.announcement.clone())
        .unwrap();
    let draft_ref = announcement.draft.unwrap();
    assert_eq!(
        (draft_ref.sender.as_str(), draft_ref.sequence),
        ("cz-eeb", drafted.sequence)
    );
    assert_eq!(draft_ref.sha256, signing::signed_digest(&text, "cz-eeb"));
    let approvers: Vec<_> = announcement
        .approvals
        .iter()
        .map(|a| a.sender.as_str())
        .collect();
    assert_eq!(
        approvers,
        ["cz-psb", "cz-procuratorate", "cz-eeb-xiangyuan"]
    );
    signing::verify(&released, GATEWAY_SENDER, &gateway_public_key(&bed))
        .expect("the release carries the gateway's signature");
    // Another member received the three INTERNAL approvals and the
    // release, never the draft.
    let seen: Vec<u64> = members
        .take_acked(4, WAIT)
        .await
        .iter()
        .map(|d| d.sequence)
        .collect();
    assert_eq!(seen.last(), Some(&release.sequence));
    assert!(!seen.contains(&drafted.sequence), "{seen:?}");

    // Released once: a late answer is refused.
    let late = publish(&mut psb, answer("cz-psb", false, &text, "cz-eeb", &text))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
}

#[tokio::test]
async fn rejected_announcement_never_released() {
    let bed = Testbed::start().unwrap();
    let mut press = bed.client("cz-press-office").await;
    let mut public = Subscriber::open(&mut press, "public").await.unwrap();

    let text = draft("ann-2", &["cz-psb", "cz-procuratorate"]);
    let mut city_bureau = bed.client("cz-eeb").await;
    publish(&mut city_bureau, text.clone()).await.unwrap();
    let mut psb = bed.client("cz-psb").await;
    publish(&mut psb, answer("cz-psb", false, &text, "cz-eeb", &text))
        .await
        .unwrap();

    // The other co-signer's approval comes too late: the draft is dead.
    let stored = bed.stored_count().await;
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let refused = publish(
        &mut procuratorate,
        answer("cz-procuratorate", true, &text, "cz-eeb", &text),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("already rejected"),
        "{refused:?}"
    );
    assert_eq!(bed.stored_count().await, stored);
    silent(&mut public, "the press office after a rejection").await;

    // Nor does a restart release it.
    let mut bed = bed;
    bed.restart().unwrap();
    let mut press = bed.client("cz-press-office").await;
    let mut public = Subscriber::open(&mut press, "public").await.unwrap();
    silent(&mut public, "the press office after a restart").await;
    let mut conn = bed.connect_database().await;
    let releases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE event = $1")
        .bind(Event::AnnouncementReleased as i32 as i64)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(releases, 0);
}
