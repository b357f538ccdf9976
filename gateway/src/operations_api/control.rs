//! What operators change: disable and enable an agency, move a
//! subscription's position. Each change is audited with the operator, in
//! the transaction that stores it; each refused change is audited too.
//!
//! Disabling puts the agency's state in force at once: its requests are
//! refused before any handler, each of its publishes is refused when it
//! is about to be stored, its subscription and publishing streams end
//! with `PERMISSION_DENIED`, and — [`CLOSE_GRACE`] later, once those
//! endings are sent — its live connections are closed; new ones are
//! refused after the handshake. The call answers once all that is done.
//! Other gateway replicas pick the change up from the store within
//! [`FOLLOW_INTERVAL`] ([`follow_agency_states`]).
//!
//! Moving a subscription's position is refused while it has an open
//! stream on this gateway: the session holds the position in memory.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use liandong_core::domain::{AgencyId, FieldError, Instant};
use liandong_core::pb;

use super::Operator;
use crate::Gateway;
use crate::audit;
use crate::error::ApiError;
use crate::identity::{Caller, Principal};
use crate::ops::snapshot;
use crate::store::agency_state::{Actor, DisabledAgency, SeekOutcome};

/// How long a disabled agency's streams have to send their ending status
/// before its connections are closed.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// How often the agency states are read again from the store, for the
/// changes made through another replica.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// Longest reason kept, in characters.
const MAX_REASON_CHARS: usize = 512;

/// `DisableAgency`.
pub async fn disable(
    gateway: &Gateway,
    operator: &Operator,
    request: pb::DisableAgencyRequest,
) -> Result<pb::AgencyState, Status> {
    let pb::DisableAgencyRequest { agency, reason } = request;
    let checked = registered(gateway, &agency)
        .and_then(|agency| Ok((agency, required_reason(&reason)?)))
        .and_then(|(agency, reason)| {
            if agency == operator.id {
                return Err(ApiError::FailedPrecondition(format!(
                    "{agency} may not disable itself: no operator could enable it again through it"
                )));
            }
            Ok((agency, reason))
        });
    let (agency, reason) = match checked {
        Ok(checked) => checked,
        Err(error) => return Err(refuse(gateway, operator, error).await),
    };
    let change = gateway
        .store
        .disable_agency(agency.as_str(), actor(operator, reason))
        .await
        .map_err(ApiError::from)?;
    // What the store holds is put in force, also when it was there
    // already (disabled through another replica and not followed yet).
    if let Some(disabled) = &change.disabled {
        tracing::warn!(agency.id = %agency, operator.id = %operator.id, changed = change.changed, "agency disabled by an operator");
        enforce(gateway, disabled.clone()).await;
    }
    Ok(agency_state(
        agency.as_str(),
        change.disabled.as_ref(),
        change.changed,
    ))
}

/// `EnableAgency`.
pub async fn enable(
    gateway: &Gateway,
    operator: &Operator,
    request: pb::EnableAgencyRequest,
) -> Result<pb::AgencyState, Status> {
    let pb::EnableAgencyRequest { agency, reason } = request;
    // An agency removed from the registry while disabled may still be
    // enabled, so that its state is not kept for ever.
    let checked = match registered(gateway, &agency) {
        Err(ApiError::NotFound(_)) if gateway.agency_state(&agency).is_some() => {
            AgencyId::parse("agency", &agency).map_err(ApiError::from)
        }
        other => other,
    }
    .and_then(|agency| Ok((agency, required_reason(&reason)?)));
    let (agency, reason) = match checked {
        Ok(checked) => checked,
        Err(error) => return Err(refuse(gateway, operator, error).await),
    };
    let change = gateway
        .store
        .enable_agency(agency.as_str(), actor(operator, reason))
        .await
        .map_err(ApiError::from)?;
    gateway.put_agency_state_in_force(agency.as_str(), None);
    if change.changed {
        tracing::warn!(agency.id = %agency, operator.id = %operator.id, "agency enabled by an operator");
    }
    Ok(agency_state(agency.as_str(), None, change.changed))
}

/// `SeekSubscription`.
pub async fn seek(
    gateway: &Gateway,
    operator: &Operator,
    request: pb::SeekSubscriptionRequest,
) -> Result<pb::SubscriptionState, Status> {
    let pb::SeekSubscriptionRequest {
        owner,
        name,
        acked_through,
        reason,
    } = request;
    let checked = AgencyId::parse("owner", &owner)
        .map_err(ApiError::from)
        .and_then(|owner| {
            if name.is_empty() {
                return Err(FieldError::new("name", "is required").into());
            }
            Ok((owner, required_reason(&reason)?))
        });
    let (owner, reason) = match checked {
        Ok(checked) => checked,
        Err(error) => return Err(refuse(gateway, operator, error).await),
    };
    // Held across the write: no stream of it opens meanwhile on this
    // gateway and starts from the position being replaced.
    let Some(closed) = gateway.sessions.hold_closed(owner.as_str(), &name).await else {
        let error = ApiError::FailedPrecondition(format!(
            "subscription {name} of {owner} has an open stream; its position can be moved once it is closed"
        ));
        return Err(refuse(gateway, operator, error).await);
    };
    let outcome = gateway
        .store
        .seek_subscription(
            owner.as_str(),
            &name,
            acked_through,
            actor(operator, reason),
        )
        .await
        .map_err(ApiError::from)?;
    drop(closed);
    let error = match outcome {
        SeekOutcome::Moved { from, to } => {
            tracing::warn!(agency.id = %owner, subscription.name = %name, from, to, operator.id = %operator.id, "subscription position moved by an operator");
            None
        }
        SeekOutcome::NotFound => Some(ApiError::NotFound(format!(
            "no subscription {name} of {owner}"
        ))),
        SeekOutcome::BeyondHighWater { high_water } => {
            Some(ApiError::InvalidArgument(FieldError::new(
                "acked_through",
                format!("is beyond the highest sequence stored ({high_water})"),
            )))
        }
    };
    if let Some(error) = error {
        return Err(refuse(gateway, operator, error).await);
    }
    let request = pb::ListSubscriptionsRequest {
        min_lag: 0,
        owner: owner.to_string(),
    };
    let states = snapshot::subscriptions(gateway, &request)
        .await
        .map_err(ApiError::from)?;
    Ok(states
        .into_iter()
        .find(|state| state.name == name)
        .unwrap_or_else(|| pb::SubscriptionState {
            owner: owner.to_string(),
            name,
            acked_through,
            ..Default::default()
        }))
}

/// An agency's state as the Operations service answers it: `state` while
/// disabled; `changed` says whether the call changed it.
pub fn agency_state(
    agency: &str,
    state: Option<&DisabledAgency>,
    changed: bool,
) -> pb::AgencyState {
    pb::AgencyState {
        agency: agency.to_owned(),
        disabled: state.is_some(),
        reason: state.map(|s| s.reason.clone()).unwrap_or_default(),
        disabled_by: state.map(|s| s.disabled_by.clone()).unwrap_or_default(),
        disabled_at: state
            .and_then(|s| Instant::from_unix_micros(s.disabled_at))
            .map(Instant::to_wire),
        changed,
    }
}

/// Keeps the agency states in force in step with the store, for changes
/// made through another replica, until the gateway stops. A change made
/// on this process while the store is read is left for the next round.
pub async fn follow_agency_states(gateway: Arc<Gateway>) {
    let mut ticks = tokio::time::interval(FOLLOW_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = gateway.stop.cancelled() => return,
        }
        let before = gateway.agency_states.load_full();
        let stored = match gateway.store.disabled_agencies().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::debug!(%error, "agency states not read; kept as they are");
                continue;
            }
        };
        if !Arc::ptr_eq(&before, &gateway.agency_states.load_full()) {
            continue;
        }
        for agency in before.keys() {
            if !stored.iter().any(|state| &state.agency == agency) {
                tracing::info!(agency.id = %agency, "agency enabled through another replica");
                gateway.put_agency_state_in_force(agency, None);
            }
        }
        for state in stored {
            if before.get(&state.agency) != Some(&state) {
                tracing::warn!(agency.id = %state.agency, "agency disabled through another replica");
                enforce(&gateway, state).await;
            }
        }
    }
}

/// Puts `disabled` in force, then closes the agency's live connections
/// once its streams had [`CLOSE_GRACE`] to send their ending; each closed
/// connection is audited. The closing runs as a task of its own, so a
/// caller that goes away does not leave the connections open.
async fn enforce(gateway: &Gateway, disabled: DisabledAgency) {
    gateway.put_agency_state_in_force(&disabled.agency, Some(disabled.clone()));
    let rules = gateway.rules();
    let Some(identity) = rules
        .registry
        .agencies()
        .find(|agency| agency.id.as_str() == disabled.agency)
        .map(|agency| agency.identity.clone())
    else {
        return;
    };
    let connections = gateway.tls.connections.clone();
    let store = gateway.store.clone();
    let closing = tokio::spawn(async move {
        tokio::time::sleep(CLOSE_GRACE).await;
        let reason = format!("connection closed: {disabled}");
        for peer in connections.close_identity(&identity) {
            tracing::warn!(peer.addr = %peer, agency.id = %disabled.agency, "live connection of a disabled agency closed");
            if let Err(error) = store
                .append_audit(&[audit::tls_refused(peer, &reason)])
                .await
            {
                tracing::error!(%error, peer.addr = %peer, "cannot audit a closed connection");
            }
        }
    });
    let _ = closing.await;
}

/// The registered agency `id` names: `INVALID_ARGUMENT` when it is no
/// agency id, `NOT_FOUND` when none is registered under it.
fn registered(gateway: &Gateway, id: &str) -> Result<AgencyId, ApiError> {
    let agency = AgencyId::parse("agency", id)?;
    if gateway.rules().registry.get(&agency).is_none() {
        return Err(ApiError::NotFound(format!("no registered agency {agency}")));
    }
    Ok(agency)
}

/// The operator's reason: required, and short enough to keep whole.
fn required_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(FieldError::new("reason", "is required: say why, for the audit log").into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(FieldError::new(
            "reason",
            format!("is longer than {MAX_REASON_CHARS} characters"),
        )
        .into());
    }
    Ok(reason)
}

fn actor<'a>(operator: &'a Operator, reason: &'a str) -> Actor<'a> {
    Actor {
        operator: operator.id.as_str(),
        reason,
        peer: operator.peer,
    }
}

/// Records the refusal of an operator's change and answers it.
async fn refuse(gateway: &Gateway, operator: &Operator, error: ApiError) -> Status {
    tracing::info!(operator.id = %operator.id, %error, "operator's change refused");
    let rules = gateway.rules();
    if let Some(agency) = rules.registry.get(&operator.id) {
        let caller = Caller::Agency(Principal {
            agency: agency.clone(),
        });
        if let Some(entry) = audit::operations_refused(&caller, &error)
            && let Err(cause) = gateway
                .store
                .append_audit(&[entry.with_peer(operator.peer)])
                .await
        {
            tracing::error!(error = %cause, "could not record a refusal in the audit log");
        }
    }
    error.into()
}

#[cfg(test)]
mod tests;
