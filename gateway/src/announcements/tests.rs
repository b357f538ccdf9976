//! Announcement rules on both backends: each step runs in a write
//! transaction, as the publishing transaction runs it.

use std::path::Path;
use std::sync::Arc;

use liandong_core::domain::{Envelope, Notification};
use prost::Message;

use super::*;
use crate::store::tests::backends;
use crate::store::{PublishOutcome, Store};

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

fn registry() -> Arc<Registry> {
    Arc::new(Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap())
}

fn at(seconds: i64) -> Instant {
    Instant::from_unix_micros(1_800_000_000_000_000 + seconds * 1_000_000).unwrap()
}

/// A draft by `sender` naming `cosigners`, the text being `summary`.
fn draft(
    sender: &str,
    id: &str,
    cosigners: &[&str],
    summary: &str,
    release_at: Option<Instant>,
    simultaneous: bool,
) -> pb::Notification {
    pb::Notification {
        notification_id: id.into(),
        case_ref: "CZ-ANN-1".into(),
        event: pb::EventType::JointAnnouncement as i32,
        confidentiality: pb::Confidentiality::Public as i32,
        recipients: cosigners.iter().map(|c| (*c).to_owned()).collect(),
        region: "140400".into(),
        occurred_at: Some(at(0).to_wire()),
        summary: summary.into(),
        body: Some(pb::CaseBody {
            title: "联合发布".into(),
            announcement: Some(pb::Announcement {
                release_at: release_at.map(Instant::to_wire),
                simultaneous,
                ..Default::default()
            }),
            ..Default::default()
        }),
        sender: sender.into(),
        ..Default::default()
    }
}

/// An answer by `sender` to the draft `of`.
fn answer(sender: &str, id: &str, of: &pb::Notification, approve: bool) -> pb::Notification {
    answer_with_digest(sender, id, of, approve, &digest(of, &of.sender))
}

fn answer_with_digest(
    sender: &str,
    id: &str,
    of: &pb::Notification,
    approve: bool,
    sha256: &str,
) -> pb::Notification {
    let event = if approve {
        pb::EventType::AnnouncementApproved
    } else {
        pb::EventType::AnnouncementRejected
    };
    pb::Notification {
        notification_id: id.into(),
        case_ref: of.case_ref.clone(),
        event: event as i32,
        confidentiality: pb::Confidentiality::Internal as i32,
        region: "140400".into(),
        occurred_at: Some(at(0).to_wire()),
        summary: "answer".into(),
        body: Some(pb::CaseBody {
            announcement: Some(pb::Announcement {
                draft: Some(pb::NotificationRef {
                    sender: of.sender.clone(),
                    notification_id: of.notification_id.clone(),
                    sha256: sha256.to_owned(),
                    sequence: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sender: sender.into(),
        ..Default::default()
    }
}

/// Stores `wire` the way the publishing transaction does: check, insert,
/// record; the releases it makes due at `now`, or the refusal.
async fn step(
    store: &Store,
    wire: &pb::Notification,
    now: Instant,
) -> Result<Vec<Release>, Refusal> {
    let registry = registry();
    let notification = Notification::try_from(wire.clone()).expect("well-formed");
    let sender = liandong_core::domain::AgencyId::parse("sender", &wire.sender).unwrap();
    let new = NewNotification::new(Envelope::of(sender, &notification), wire.encode_to_vec());
    let checked = {
        let new = new.clone();
        store
            .write("check", move |conn| {
                Box::pin(async move { check_in(conn, &registry, &new).await })
            })
            .await
            .unwrap()?
    };
    let PublishOutcome::Stored(receipt) = store.publish(&new).await.unwrap() else {
        panic!("{} stored once", wire.notification_id);
    };
    Ok(store
        .write("record", move |conn| {
            Box::pin(async move { record_in(conn, &new, &checked, receipt.sequence, now).await })
        })
        .await
        .unwrap())
}

async fn due(store: &Store, now: Instant) -> Vec<Release> {
    store
        .write("due", move |conn| {
            Box::pin(async move { due_in(conn, now).await })
        })
        .await
        .unwrap()
}

async fn mark(store: &Store, release: &Release, release_sequence: u64) -> bool {
    let draft = release.draft_sequence;
    store
        .write("mark", move |conn| {
            Box::pin(async move { mark_released_in(conn, draft, release_sequence, at(0)).await })
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn released_only_after_the_last_cosigner_approves() {
    for (store, _guard) in backends().await {
        let text = draft(
            "cz-eeb",
            "d1",
            &["cz-psb", "cz-procuratorate"],
            "整治成果",
            None,
            false,
        );
        assert!(step(&store, &text, at(1)).await.unwrap().is_empty());
        let first = step(&store, &answer("cz-psb", "a1", &text, true), at(2)).await;
        assert!(first.unwrap().is_empty(), "one of two co-signers approved");
        let releases = step(
            &store,
            &answer("cz-procuratorate", "a2", &text, true),
            at(3),
        )
        .await
        .unwrap();
        assert_eq!(releases.len(), 1);
        let release = &releases[0];
        assert_eq!(release.draft.summary, "整治成果");
        assert_eq!(release.draft_ref.sha256, digest(&text, "cz-eeb"));
        let approvers: Vec<_> = release
            .approvals
            .iter()
            .map(|a| a.sender.as_str())
            .collect();
        assert_eq!(approvers, ["cz-psb", "cz-procuratorate"]);
        let public = release.notification(at(3));
        assert_eq!(public.event, pb::EventType::AnnouncementReleased as i32);
        assert_eq!(public.confidentiality, pb::Confidentiality::Public as i32);
        assert_eq!(public.sender, GATEWAY_SENDER);
        assert!(mark(&store, release, 99).await, "first release marked");
        assert!(
            !mark(&store, release, 100).await,
            "a second release is refused"
        );
        assert!(due(&store, at(10)).await.is_empty());
    }
}

#[tokio::test]
async fn rejected_draft_is_never_released() {
    for (store, _guard) in backends().await {
        let text = draft(
            "cz-eeb",
            "d1",
            &["cz-psb", "cz-procuratorate"],
            "t",
            None,
            false,
        );
        step(&store, &text, at(1)).await.unwrap();
        step(&store, &answer("cz-psb", "r1", &text, false), at(2))
            .await
            .unwrap();
        let late = step(
            &store,
            &answer("cz-procuratorate", "a2", &text, true),
            at(3),
        )
        .await;
        assert_eq!(
            late.unwrap_err(),
            Refusal::State("the draft cz-eeb/d1 is already rejected".into())
        );
        assert!(due(&store, at(100)).await.is_empty());
    }
}

#[tokio::test]
async fn answers_that_do_not_fit_are_refused() {
    for (store, _guard) in backends().await {
        let text = draft("cz-eeb", "d1", &["cz-psb"], "t", None, false);
        step(&store, &text, at(1)).await.unwrap();

        let stranger = step(
            &store,
            &answer("cz-procuratorate", "x1", &text, true),
            at(2),
        )
        .await;
        assert_eq!(
            stranger.unwrap_err(),
            Refusal::NotCosigner(
                "cz-procuratorate is not a co-signer of the draft cz-eeb/d1 (co-signers: cz-psb)"
                    .into()
            )
        );
        let other_text = answer_with_digest("cz-psb", "x2", &text, true, &"0".repeat(64));
        let Err(Refusal::State(reason)) = step(&store, &other_text, at(2)).await else {
            panic!("an approval of another text is refused");
        };
        assert!(reason.contains("another text"), "{reason}");

        let mut unknown = text.clone();
        unknown.notification_id = "nope".into();
        let missing = step(&store, &answer("cz-psb", "x3", &unknown, true), at(2)).await;
        assert_eq!(
            missing.unwrap_err(),
            Refusal::State("no draft announcement cz-eeb/nope is stored".into())
        );

        let mut bare = answer("cz-psb", "x4", &text, true);
        bare.body = None;
        let Err(Refusal::Field { field, .. }) = step(&store, &bare, at(2)).await else {
            panic!("an approval naming no draft is refused");
        };
        assert_eq!(field, "notification.body.announcement.draft");

        let nobody = draft("cz-eeb", "d2", &[], "t", None, false);
        let Err(Refusal::Field { field, .. }) = step(&store, &nobody, at(2)).await else {
            panic!("a draft without co-signers is refused");
        };
        assert_eq!(field, "notification.recipients");

        let observer = draft("cz-eeb", "d3", &["cz-press-office"], "t", None, false);
        let Err(Refusal::Field { field, .. }) = step(&store, &observer, at(2)).await else {
            panic!("an observer cannot co-sign");
        };
        assert_eq!(field, "notification.recipients[0]");

        // The refusals changed nothing: the one co-signer still releases it.
        let releases = step(&store, &answer("cz-psb", "a1", &text, true), at(3))
            .await
            .unwrap();
        assert_eq!(releases.len(), 1);
        mark(&store, &releases[0], 50).await;
        let again = step(&store, &answer("cz-psb", "a1b", &text, true), at(4)).await;
        assert_eq!(
            again.unwrap_err(),
            Refusal::State("the draft cz-eeb/d1 is already released".into())
        );
    }
}

#[tokio::test]
async fn an_approved_draft_waits_for_its_release_time() {
    for (store, _guard) in backends().await {
        let text = draft("cz-eeb", "d1", &["cz-psb"], "t", Some(at(60)), false);
        step(&store, &text, at(1)).await.unwrap();
        let now = step(&store, &answer("cz-psb", "a1", &text, true), at(2)).await;
        assert!(now.unwrap().is_empty(), "not before release_at");
        assert!(due(&store, at(59)).await.is_empty());
        let releases = due(&store, at(60)).await;
        assert_eq!(releases.len(), 1);
        assert!(mark(&store, &releases[0], 70).await);
        assert!(due(&store, at(61)).await.is_empty(), "released once");
    }
}

#[tokio::test]
async fn simultaneous_versions_go_out_together_at_their_time() {
    for (store, _guard) in backends().await {
        let when = Some(at(60));
        let eeb = draft("cz-eeb", "v1", &["cz-psb"], "环保局版本", when, true);
        let psb = draft("cz-psb", "v2", &["cz-eeb"], "公安局版本", when, true);
        let wrong_group = draft("cz-psb", "v3", &["cz-procuratorate"], "x", when, true);
        assert!(step(&store, &eeb, at(1)).await.unwrap().is_empty());
        let Err(Refusal::Field { field, .. }) = step(&store, &wrong_group, at(2)).await else {
            panic!("a version naming another group is refused");
        };
        assert_eq!(field, "notification.recipients");
        assert!(due(&store, at(60)).await.is_empty(), "one version missing");
        assert!(
            step(&store, &psb, at(2)).await.unwrap().is_empty(),
            "too early"
        );
        let again = draft("cz-psb", "v4", &["cz-eeb"], "again", when, true);
        assert!(matches!(
            step(&store, &again, at(3)).await,
            Err(Refusal::State(_))
        ));
        assert!(due(&store, at(59)).await.is_empty());
        let releases = due(&store, at(60)).await;
        let texts: Vec<_> = releases.iter().map(|r| r.draft.summary.as_str()).collect();
        assert_eq!(texts, ["环保局版本", "公安局版本"]);
        assert_eq!(releases[0].approvals[0].sender, "cz-psb");
        for (i, release) in releases.iter().enumerate() {
            assert!(mark(&store, release, 80 + i as u64).await);
        }
        assert!(due(&store, at(61)).await.is_empty());
    }
}
