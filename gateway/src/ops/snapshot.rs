//! The gateway now, as operators see it: status, agencies, subscriptions,
//! open breaches. Shared by the status page and the `liandong.v1.Operations`
//! service so both always say the same. Read-only; never case content.
//!
//! Everything is read when asked: the TLS material in force, the live
//! connections and sessions of this process, and the store. A
//! subscription's lag is counted by scanning the stored rows after its
//! position with the routing filter and the policy in force now (what it
//! would be sent), at most [`LAG_SCAN_LIMIT`] rows per subscription.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use prost::Message;

use liandong_core::domain::{AgencyId, Instant, Region};
use liandong_core::pb;
use liandong_core::subscription::SubscriptionFilter;

use crate::Gateway;
use crate::audit::Action;
use crate::identity::tls::Expiry;
use crate::reports::{self, SignalQuery, SupervisionSettings, Viewer};
use crate::routing::wake;
use crate::store::StoreError;
use crate::store::operations::SubscriptionRow;

/// The most stored rows looked at to count one subscription's lag; beyond
/// it the count says so (`lag_capped`).
pub const LAG_SCAN_LIMIT: u64 = 10_000;

/// Rows read at a time while counting lag.
const LAG_PAGE: u32 = 1_000;

const SECONDS_PER_DAY: i64 = 86_400;

/// Timestamp of a `time` instant.
pub fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// `2026-11-30 22:41:45 UTC`: how operators' views (the status page, the
/// admin tables) show a time.
pub fn utc_clock(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Timestamp of unix microseconds (as the store keeps times).
pub fn timestamp_micros(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

fn timestamp_system(at: SystemTime) -> prost_types::Timestamp {
    timestamp(time::OffsetDateTime::from(at))
}

/// What the process knows of its status without reading the store:
/// version, uptime, backend, the store's health as its last write left
/// it, connections and streams, certificates, disabled agencies. The
/// store's figures are left at zero and the audit state unset.
pub fn process_status(gateway: &Gateway) -> pb::GatewayStatus {
    pb::GatewayStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: Some(timestamp(gateway.started_at)),
        uptime_seconds: gateway.started.elapsed().as_secs(),
        store_backend: gateway.store.backend().name().to_owned(),
        store_healthy: gateway.store.is_healthy(),
        connections: gateway.tls.connections.len() as u64,
        streams: gateway.sessions.len() as u64,
        disabled_agencies: gateway
            .disabled_agencies()
            .into_iter()
            .map(|state| state.agency)
            .collect(),
        certificates: gateway
            .tls
            .current()
            .map(|material| certificates(&material.expiries, time::OffsetDateTime::now_utc()))
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The gateway's status now: [`process_status`] with what the store
/// holds.
pub async fn status(gateway: &Gateway) -> Result<pb::GatewayStatus, StoreError> {
    let store = &gateway.store;
    Ok(pb::GatewayStatus {
        high_water: store.latest_sequence().await?,
        notifications: store.count_notifications().await?,
        store_bytes: store.store_bytes().await?,
        audit: Some(audit_state(gateway).await?),
        // Open breaches do not depend on the supervision settings.
        breaches_open: breaches(gateway, &SupervisionSettings::default(), None)
            .await?
            .len() as u64,
        ..process_status(gateway)
    })
}

/// The server certificate, each CA and each CRL of the TLS material in
/// force (its `expiries`), with when each stops being valid and the whole
/// days left from `now` (rounded down: negative once expired).
pub fn certificates(expiries: &[Expiry], now: time::OffsetDateTime) -> Vec<pb::CertificateExpiry> {
    expiries
        .iter()
        .map(|expiry| pb::CertificateExpiry {
            what: expiry.what.clone(),
            not_after: Some(timestamp(expiry.at)),
            days_left: (expiry.at - now)
                .whole_seconds()
                .div_euclid(SECONDS_PER_DAY),
        })
        .collect()
}

/// The audit chain's rows, head and latest checkpoint.
async fn audit_state(gateway: &Gateway) -> Result<pb::AuditState, StoreError> {
    let store = &gateway.store;
    let head = store.audit_head().await?;
    let checkpoint = store.latest_audit_checkpoint().await?;
    let rows_since_checkpoint = store.audit_rows_since_checkpoint().await?;
    Ok(pb::AuditState {
        rows: head.map_or(0, |head| head.id),
        head_at: head.map(|head| timestamp_micros(head.at)),
        checkpoint_row: checkpoint.as_ref().map_or(0, |c| c.row_id),
        checkpoint_at: checkpoint.as_ref().map(|c| timestamp_micros(c.at)),
        rows_since_checkpoint,
    })
}

/// The audit actions that record a refused request of a registered
/// agency (a refused TLS handshake is recorded under the peer's address,
/// not an agency).
fn refusal_actions() -> Vec<&'static str> {
    Action::ALL
        .into_iter()
        .filter(|action| *action != Action::TlsRefused)
        .map(Action::as_str)
        .filter(|name| name.ends_with("_REFUSED"))
        .collect()
}

/// Every registered agency with its activity, in registry order.
pub async fn agencies(gateway: &Gateway) -> Result<Vec<pb::AgencyActivity>, StoreError> {
    let rules = gateway.rules();
    let connections = gateway.tls.connections.per_identity();
    let streams = gateway.sessions.per_owner();
    let refusals = refusal_actions();
    let mut activities = Vec::new();
    for agency in rules.registry.agencies() {
        let id = agency.id.as_str();
        // A connection's identity is its certificate's SAN URIs.
        let (count, since) = connections
            .iter()
            .filter(|(identity, _)| identity.split(' ').any(|uri| uri == agency.identity))
            .fold(
                (0_u32, None::<SystemTime>),
                |(count, since), (_, (n, at))| (count + n, Some(since.map_or(*at, |s| s.min(*at)))),
            );
        let last_publish = gateway.store.last_publish(id).await?;
        let refusal = gateway.store.last_refusal(id, &refusals).await?;
        activities.push(pb::AgencyActivity {
            id: id.to_owned(),
            name: agency.name.clone(),
            role: format!("{:?}", agency.role).to_uppercase(),
            state: Some(crate::operations_api::control::agency_state(
                agency.id.as_str(),
                gateway.agency_state(agency.id.as_str()).as_ref(),
                false,
            )),
            connections: count,
            connected_since: since.map(timestamp_system),
            streams: streams.get(id).copied().unwrap_or(0),
            last_publish: last_publish.map(timestamp_micros),
            last_refusal: refusal.as_ref().map(|r| timestamp_micros(r.at)),
            last_refusal_reason: refusal
                .map(|r| format!("{} {}: {}", r.action, r.decision, r.reason))
                .unwrap_or_default(),
        });
    }
    Ok(activities)
}

/// Every stored subscription with its position and lag, filtered by
/// `request` (owner, least lag), by owner and name.
pub async fn subscriptions(
    gateway: &Gateway,
    request: &pb::ListSubscriptionsRequest,
) -> Result<Vec<pb::SubscriptionState>, StoreError> {
    let pb::ListSubscriptionsRequest { min_lag, owner } = request;
    let high_water = gateway.store.latest_sequence().await?;
    let open: HashMap<(String, String), u32> = gateway
        .sessions
        .open()
        .into_iter()
        .map(|session| ((session.owner, session.name), session.in_flight))
        .collect();
    let now = Instant::now().unix_micros();
    let mut states = Vec::new();
    for row in gateway.store.subscriptions().await? {
        if !owner.is_empty() && row.owner != *owner {
            continue;
        }
        let filter = stored_filter(&row);
        let lag = match &filter {
            Some(filter) => lag(gateway, &row, filter, high_water, now, LAG_SCAN_LIMIT).await?,
            None => Lag::default(),
        };
        if lag.messages < *min_lag {
            continue;
        }
        let key = (row.owner.clone(), row.name.clone());
        states.push(pb::SubscriptionState {
            filter: filter.as_ref().map_or_else(
                || "(the stored filter does not decode)".to_owned(),
                describe_filter,
            ),
            acked_through: row.acked_through,
            lag_messages: lag.messages,
            lag_capped: lag.capped,
            lag_seconds: lag.seconds,
            in_flight: open.get(&key).copied().unwrap_or(0),
            connected: open.contains_key(&key),
            updated_at: Some(timestamp_micros(row.updated_at)),
            held_by: row.held_by.unwrap_or_default(),
            owner: row.owner,
            name: row.name,
        });
    }
    Ok(states)
}

/// The filter a subscription was stored with; `None` when the bytes are
/// not a valid filter (then nothing is counted for it).
fn stored_filter(row: &SubscriptionRow) -> Option<SubscriptionFilter> {
    let wire = pb::SubscriptionFilter::decode(row.filter.as_slice()).ok()?;
    SubscriptionFilter::from_wire("filter", wire).ok()
}

/// A filter in words: "everything", or its criteria separated by "; ".
pub fn describe_filter(filter: &SubscriptionFilter) -> String {
    let pb::SubscriptionFilter {
        events,
        case_ref_prefix,
        senders,
        regions,
    } = filter.to_wire();
    let mut parts = Vec::new();
    if !events.is_empty() {
        let names: Vec<&str> = events
            .iter()
            .map(|event| {
                pb::EventType::try_from(*event)
                    .map_or("UNKNOWN", |event| event.as_str_name())
                    .trim_start_matches("EVENT_TYPE_")
            })
            .collect();
        parts.push(format!("events {}", names.join(", ")));
    }
    if !case_ref_prefix.is_empty() {
        parts.push(format!("cases {case_ref_prefix}*"));
    }
    if !senders.is_empty() {
        parts.push(format!("senders {}", senders.join(", ")));
    }
    if !regions.is_empty() {
        parts.push(format!("regions {}", regions.join(", ")));
    }
    if parts.is_empty() {
        "everything".to_owned()
    } else {
        parts.join("; ")
    }
}

/// How far a subscription is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lag {
    messages: u64,
    capped: bool,
    seconds: u64,
}

/// Counts the stored rows after `row`'s position that it would be sent
/// under the rules in force (its filter wants them and the policy gives
/// its owner something of them), looking at most at `scan_limit` rows.
async fn lag(
    gateway: &Gateway,
    row: &SubscriptionRow,
    filter: &SubscriptionFilter,
    high_water: u64,
    now: i64,
    scan_limit: u64,
) -> Result<Lag, StoreError> {
    let mut lag = Lag::default();
    let Ok(owner) = AgencyId::parse("owner", &row.owner) else {
        return Ok(lag);
    };
    let rules = gateway.rules();
    let mut after = row.acked_through;
    let mut scanned = 0_u64;
    let mut oldest: Option<i64> = None;
    while after < high_water {
        if scanned >= scan_limit {
            lag.capped = true;
            break;
        }
        let limit = u64::from(LAG_PAGE).min(scan_limit - scanned) as u32;
        let batch = gateway.store.routed_after(after, limit).await?;
        let Some(through) = batch.through else {
            break;
        };
        scanned += through - after;
        after = through;
        for routed in &batch.rows {
            if wake::delivers(&rules, &owner, filter, &routed.envelope) {
                lag.messages += 1;
                oldest.get_or_insert(routed.received_at);
            }
        }
    }
    lag.seconds = oldest.map_or(0, |at| u64::try_from((now - at) / 1_000_000).unwrap_or(0));
    Ok(lag)
}

/// The open deadline breaches (the BREACH signals over everything stored,
/// as the operator sees them), of cases within `region` when given.
pub async fn breaches(
    gateway: &Gateway,
    settings: &SupervisionSettings,
    region: Option<Region>,
) -> Result<Vec<pb::Signal>, StoreError> {
    let query = SignalQuery {
        kinds: BTreeSet::from([pb::SignalKind::OpenBreach as i32]),
        stuck_days: reports::signals::DEFAULT_STUCK_DAYS,
        region,
    };
    let mut conn = gateway.store.read_connection().await?;
    reports::signals::signals(
        &mut conn,
        &gateway.rules(),
        &Viewer::Operator,
        settings,
        &query,
        Instant::now(),
    )
    .await
}

#[cfg(test)]
mod tests;
