//! Timer rounds with a controlled clock, on both backends: what falls due
//! with time is emitted once, by the round that finds it due.

use std::path::Path;
use std::sync::Arc;

use prost::Message;

use liandong_core::domain::{AgencyId, Envelope, Notification};
use liandong_core::pb;
use liandong_core::registry::{GATEWAY_SENDER, Registry};

use super::*;
use crate::policy::{Policy, Rules};
use crate::reports::{ReportSettings, Schedule};
use crate::routing::DeliverySettings;
use crate::store::tests::backends;
use crate::store::{NewNotification, PublishOutcome, Store};
use crate::supervision::GatewayKey;

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

/// A clock standing at a chosen time.
#[derive(Debug)]
struct At(Instant);

impl Clock for At {
    fn now(&self) -> Instant {
        self.0
    }
}

fn gateway(store: Store) -> Gateway {
    let rules = Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(GatewayKey::generate()),
    )
}

async fn publish(gateway: &Gateway, wire: pb::Notification) -> u64 {
    let checked = Notification::try_from(wire.clone()).unwrap();
    let sender = AgencyId::parse("sender", &wire.sender).unwrap();
    let new = NewNotification::new(Envelope::of(sender, &checked), wire.encode_to_vec());
    match gateway
        .store
        .publish_supervised(&new, gateway.supervision_context())
        .await
        .unwrap()
    {
        (PublishOutcome::Stored(receipt), emitted) => {
            assert!(emitted.is_empty(), "nothing released at publish");
            receipt.sequence
        }
        (other, _) => panic!("{} not stored: {other:?}", wire.notification_id),
    }
}

fn notice(sender: &str, id: &str, event: pb::EventType) -> pb::Notification {
    pb::Notification {
        notification_id: id.into(),
        case_ref: "CZ-ANN-9".into(),
        event: event as i32,
        confidentiality: pb::Confidentiality::Internal as i32,
        region: "140400".into(),
        occurred_at: Some(Instant::now().to_wire()),
        summary: "公告".into(),
        sender: sender.into(),
        ..Default::default()
    }
}

/// The stored notifications of `event`, decoded.
async fn stored_of(store: &Store, event: pb::EventType) -> Vec<pb::Notification> {
    store
        .read_after(0, 1000)
        .await
        .unwrap()
        .rows
        .into_iter()
        .filter(|row| row.envelope.event.to_wire() == event)
        .map(|row| pb::Notification::decode(row.payload.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn an_approved_announcement_is_released_by_the_round_at_its_time() {
    for (store, _guard) in backends().await {
        let gateway = gateway(store.clone());
        let release_at =
            Instant::from_unix_micros(Instant::now().unix_micros() + 3_600_000_000).unwrap();
        let mut draft = notice("cz-eeb", "d-1", pb::EventType::JointAnnouncement);
        draft.confidentiality = pb::Confidentiality::Public as i32;
        draft.recipients = vec!["cz-psb".into()];
        draft.body = Some(pb::CaseBody {
            announcement: Some(pb::Announcement {
                release_at: Some(release_at.to_wire()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let draft_sequence = publish(&gateway, draft.clone()).await;
        let mut approval = notice("cz-psb", "a-1", pb::EventType::AnnouncementApproved);
        approval.body = Some(pb::CaseBody {
            announcement: Some(pb::Announcement {
                draft: Some(pb::NotificationRef {
                    sender: "cz-eeb".into(),
                    notification_id: "d-1".into(),
                    sha256: liandong_core::signing::signed_digest(&draft, "cz-eeb"),
                    sequence: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        publish(&gateway, approval).await;
        let settings = ReportSettings {
            schedule: Schedule::Off,
            ..ReportSettings::default()
        };

        // Approved, but its time has not come: the round releases nothing.
        let before = At(Instant::from_unix_micros(release_at.unix_micros() - 1).unwrap());
        round(&gateway, &settings, &before).await.unwrap();
        let release = pb::EventType::AnnouncementReleased;
        assert!(stored_of(&store, release).await.is_empty());

        let at = At(release_at);
        round(&gateway, &settings, &at).await.unwrap();
        round(&gateway, &settings, &at).await.unwrap();
        let releases = stored_of(&store, release).await;
        assert_eq!(releases.len(), 1, "released once, by the first round due");
        let release = &releases[0];
        assert_eq!(release.sender, GATEWAY_SENDER);
        let reference = release
            .body
            .as_ref()
            .unwrap()
            .announcement
            .as_ref()
            .unwrap();
        assert_eq!(reference.draft.as_ref().unwrap().sequence, draft_sequence);
        liandong_core::signing::verify(release, GATEWAY_SENDER, &gateway.key.public_key())
            .expect("signed by the gateway's key");
        store.close().await;
    }
}

#[tokio::test]
async fn statistics_reports_go_out_once_per_ended_period_the_gateway_saw() {
    for (store, _guard) in backends().await {
        let gateway = gateway(store.clone());
        publish(&gateway, notice("cz-eeb", "n-1", pb::EventType::ClueShared)).await;
        let settings = ReportSettings {
            schedule: Schedule::Monthly,
            ..ReportSettings::default()
        };
        let report = pb::EventType::StatisticsReport;

        // Now: the month that ended last holds nothing this gateway stored.
        round(&gateway, &settings, &At(Instant::now()))
            .await
            .unwrap();
        assert!(stored_of(&store, report).await.is_empty());

        // Forty days on, the month of the clue has ended: one report per
        // member agency, signed, once.
        let later = At(Instant::from_unix_micros(
            Instant::now().unix_micros() + 40 * 86_400_000_000,
        )
        .unwrap());
        round(&gateway, &settings, &later).await.unwrap();
        let members = gateway
            .rules()
            .registry
            .agencies()
            .filter(|a| a.role.is_member())
            .count();
        let sent = stored_of(&store, report).await;
        assert_eq!(sent.len(), members);
        for notification in &sent {
            liandong_core::signing::verify(notification, GATEWAY_SENDER, &gateway.key.public_key())
                .expect("signed by the gateway's key");
        }
        round(&gateway, &settings, &later).await.unwrap();
        assert_eq!(stored_of(&store, report).await.len(), members, "sent once");
        store.close().await;
    }
}
