//! The `liandong.v1.Exchange` service: the agency-facing RPCs.
//!
//! Every handler first turns the TLS peer into a registered agency
//! (`identity::authenticate`); nothing else about the caller is trusted.
//! Handlers validate, ask `policy`, and hand over to `store` and `routing`.
//! Errors leave through `error::ApiError`, the one place mapping to status
//! codes.
//!
//! A unary publish runs as a task of its own, which the handler awaits: an
//! expired deadline or a dropped connection drops only the waiting, never
//! the work, so the publish completes (and is answered to a republish of
//! the same id) or leaves nothing, and nothing it holds is left half done
//! for the next request. Those tasks are bounded in number
//! ([`MAX_PUBLISHES_IN_FLIGHT`]) and tracked, so shutdown waits for them
//! before it closes the store. A publish arriving after shutdown began is
//! refused with `UNAVAILABLE`. Audit writes (refusals, `GetCase`
//! disclosures) run as awaited tasks of their own for the same reason.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use liandong_core::domain::{CaseRef, Envelope, FieldError, Notification};
use liandong_core::pb;
use liandong_core::pb::exchange_server::Exchange;
use liandong_core::signing::{self, SignatureError};

use crate::Gateway;
use crate::error::ApiError;
use crate::identity::{self, PeerIdentity, Principal};
use crate::policy::{self, PublishRefusal};
use crate::refusals::Rpc;
use crate::routing::{self, OpenRequest, Session};
use crate::store::{AuditEntry, NewNotification, PublishOutcome};

/// Unary publishes running at once; more wait (until their deadline) for
/// one to finish. Bounds the work a client can leave behind by abandoning
/// calls.
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 256;

/// The Exchange service over a running gateway.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    gateway: Arc<Gateway>,
    /// The unary publishes running as tasks of their own.
    publishes: TaskTracker,
    /// Bounds [`publishes`](Self::publishes).
    publish_slots: Arc<Semaphore>,
}

impl ExchangeService {
    /// The service for `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self {
            gateway,
            publishes: TaskTracker::new(),
            publish_slots: Arc::new(Semaphore::new(MAX_PUBLISHES_IN_FLIGHT)),
        }
    }

    /// The unary publishes still running, including those whose caller
    /// went away: shutdown waits for them before closing the store.
    pub fn publishes(&self) -> TaskTracker {
        self.publishes.clone()
    }

    /// The registered agency behind the request; a refusal is audited
    /// under the refusal action of the RPC called.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let peer = request.extensions().get::<PeerIdentity>();
        let rules = self.gateway.rules();
        match identity::authenticate(peer, &rules.registry) {
            Ok(principal) => Ok(principal),
            Err(error) => {
                let who = peer
                    .map(|p| p.uris.join(" "))
                    .filter(|uris| !uris.is_empty())
                    .unwrap_or_else(|| "<no identity>".into());
                let action = request
                    .extensions()
                    .get::<Rpc>()
                    .map_or("PUBLISH_REFUSED", |rpc| rpc.refused_action());
                audit_refusal(&self.gateway, action, who, "", "", &error).await;
                Err(error.into())
            }
        }
    }
}

/// Records a refused request in the audit log under `action`. A failure to
/// record is logged; the request stays refused.
async fn audit_refusal(
    gateway: &Gateway,
    action: &'static str,
    agency: String,
    sender: &str,
    notification_id: &str,
    error: &ApiError,
) {
    let Some(code) = error.refusal_code() else {
        return;
    };
    let entry = AuditEntry {
        agency: truncate(&agency, 256),
        action,
        sequence: None,
        sender: sender.to_owned(),
        notification_id: truncate(notification_id, 128),
        decision: code.to_owned(),
        reason: error.to_string(),
    };
    // The store runs the write as a task of its own: a caller dropped
    // meanwhile never cuts it short.
    if let Err(cause) = gateway.store.append_audit(&[entry]).await {
        tracing::error!(error = %cause, "could not record a refusal in the audit log");
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Validates and stores one notification for `principal`; a refusal is
/// recorded in the audit log.
pub async fn publish_one(
    gateway: &Gateway,
    principal: &Principal,
    request: pb::PublishRequest,
) -> Result<pb::PublishReceipt, ApiError> {
    let notification_id = request
        .notification
        .as_ref()
        .map(|n| n.notification_id.clone())
        .unwrap_or_default();
    let result = publish_checked(gateway, principal, request).await;
    if let Err(error) = &result {
        let sender = principal.agency.id.to_string();
        audit_refusal(
            gateway,
            "PUBLISH_REFUSED",
            sender.clone(),
            &sender,
            &notification_id,
            error,
        )
        .await;
    }
    result
}

#[tracing::instrument(skip_all, fields(agency.id = %principal.agency.id, notification.id, case.ref))]
async fn publish_checked(
    gateway: &Gateway,
    principal: &Principal,
    request: pb::PublishRequest,
) -> Result<pb::PublishReceipt, ApiError> {
    let pb::PublishRequest { notification } = request;
    let mut wire = notification.ok_or_else(|| FieldError::new("notification", "is required"))?;
    let span = tracing::Span::current();
    span.record("notification.id", wire.notification_id.as_str());
    span.record("case.ref", wire.case_ref.as_str());
    let notification = Notification::try_from(wire.clone()).inspect_err(|error| {
        tracing::info!(%error, "publish refused: invalid notification");
    })?;
    let sender = &principal.agency.id;
    if let Some(claimed) = notification
        .claimed_sender
        .as_ref()
        .filter(|claimed| *claimed != sender)
    {
        tracing::warn!(notification.claimed_sender = %claimed, "publish refused: message names another sender");
        return Err(ApiError::PermissionDenied(format!(
            "notification.sender names {claimed}, but the client certificate proves {sender}"
        )));
    }
    if let Some(key) = &principal.agency.signing_public_key {
        // A registered key makes the signature mandatory and checked.
        signing::verify(&wire, sender.as_str(), key).map_err(|error| {
            tracing::warn!(%error, "publish refused: signature");
            match error {
                SignatureError::Invalid { .. } => ApiError::PermissionDenied(error.to_string()),
                // The error's text is "<field>: <reason>".
                _ => {
                    let text = error.to_string();
                    let (field, reason) = text
                        .split_once(": ")
                        .unwrap_or(("notification.signature", &text));
                    ApiError::InvalidArgument(FieldError::new(field, reason))
                }
            }
        })?;
    }
    match policy::check_publish(&gateway.rules(), &principal.agency, &notification) {
        Ok(()) => {}
        Err(PublishRefusal::Forbidden(rule)) => {
            tracing::info!(%rule, "publish refused by policy");
            return Err(ApiError::PermissionDenied(rule));
        }
        Err(PublishRefusal::Field(error)) => {
            tracing::info!(%error, "publish refused by policy");
            return Err(ApiError::InvalidArgument(error));
        }
    }
    wire.sender = sender.to_string();
    let payload = wire.encode_to_vec();
    let new = NewNotification::new(Envelope::of(sender.clone(), &notification), payload);
    let (receipt, duplicate) = match gateway.store.publish(&new).await? {
        PublishOutcome::Stored(receipt) => {
            routing::wake::stored(gateway, &receipt, &new);
            tracing::info!(
                notification.sequence = receipt.sequence,
                "notification stored"
            );
            (receipt, false)
        }
        PublishOutcome::Duplicate(receipt) => {
            tracing::info!(
                notification.sequence = receipt.sequence,
                "identical republish answered with the original receipt"
            );
            (receipt, true)
        }
        PublishOutcome::Conflict => {
            tracing::warn!("publish refused: notification id reused for different content");
            return Err(ApiError::FailedPrecondition(format!(
                "notification_id {} was already used by {sender} for different content",
                notification.id
            )));
        }
    };
    Ok(pb::PublishReceipt {
        notification_id: notification.id.to_string(),
        sequence: receipt.sequence,
        received_at: Some(receipt.received_at.to_wire()),
        duplicate,
    })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReceipt>, Status> {
        let refused_stopping = || {
            Status::from(ApiError::Unavailable(
                "the gateway is shutting down; resend what has no receipt".into(),
            ))
        };
        if self.gateway.stop.is_cancelled() {
            return Err(refused_stopping());
        }
        // Waiting for a slot holds nothing: a caller gone meanwhile leaves
        // nothing behind.
        let slot = self
            .publish_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| refused_stopping())?;
        let gateway = self.gateway.clone();
        let service = self.clone();
        // From here on the work is the task's: dropping this future (an
        // expired deadline, a dropped connection) only stops the waiting.
        let work = self.publishes.spawn(async move {
            let _slot = slot;
            let principal = service.authenticate(&request).await?;
            publish_one(&gateway, &principal, request.into_inner())
                .await
                .map_err(Status::from)
        });
        match work.await {
            Ok(result) => result.map(Response::new),
            Err(failure) if failure.is_panic() => std::panic::resume_unwind(failure.into_panic()),
            Err(_) => Err(refused_stopping()),
        }
    }

    type PublishStreamStream = BoxStream<pb::PublishReceipt>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let principal = self.authenticate(&request).await?;
        let cap = self.gateway.delivery.max_streams_per_agency;
        let slot = match self.gateway.publish_streams.open(&principal.agency.id, cap) {
            Ok(slot) => slot,
            Err(open) => {
                let error = ApiError::ResourceExhausted(format!(
                    "{} has {open} publishing streams open, the most limits.max_streams_per_agency ({cap}) allows; close one first",
                    principal.agency.id
                ));
                let agency = principal.agency.id.to_string();
                audit_refusal(&self.gateway, "PUBLISH_REFUSED", agency, "", "", &error).await;
                return Err(error.into());
            }
        };
        let mut inbound = request.into_inner();
        let gateway = self.gateway.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // The slot is given back however the stream ends.
            let _slot = slot;
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = gateway.stop.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the gateway is shutting down; resend what has no receipt"))).await;
                        return;
                    }
                };
                match next {
                    Ok(Some(request)) => match publish_one(&gateway, &principal, request).await {
                        Ok(receipt) => {
                            if tx.send(Ok(receipt)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error.into())).await;
                            return;
                        }
                    },
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::Delivery>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = self.authenticate(&request).await?;
        let inbound = request.into_inner();
        match open_session(&self.gateway, principal.clone(), inbound).await {
            Ok(stream) => Ok(Response::new(Box::pin(stream))),
            // Undecodable requests are recorded by `refusals`, with the rest
            // of the refusals made before any handler.
            Err(status) if liandong_proto::codec::is_decode_refusal(&status) => Err(status),
            Err(status) => {
                let error = ApiError::Status(status);
                let agency = principal.agency.id.to_string();
                audit_refusal(&self.gateway, "SUBSCRIBE_REFUSED", agency, "", "", &error).await;
                Err(error.into())
            }
        }
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseView>, Status> {
        let principal = self.authenticate(&request).await?;
        let pb::GetCaseRequest { case_ref } = request.into_inner();
        let case_ref = match CaseRef::parse_field("case_ref", &case_ref) {
            Ok(case_ref) => case_ref,
            Err(error) => {
                let error = ApiError::from(error);
                let agency = principal.agency.id.to_string();
                audit_refusal(&self.gateway, "CASE_READ_REFUSED", agency, "", "", &error).await;
                return Err(error.into());
            }
        };
        let rows = self
            .gateway
            .store
            .case_timeline(case_ref.as_str())
            .await
            .map_err(ApiError::from)?;
        let rules = self.gateway.rules();
        let mut timeline = Vec::new();
        let mut audit = Vec::new();
        for row in &rows {
            if let Some((delivery, decision)) = routing::render(&rules, &principal.agency, row, 0) {
                audit.extend(routing::audit_entry(
                    &principal.agency,
                    "CASE_READ",
                    row,
                    &decision,
                ));
                timeline.push(delivery);
            }
        }
        // Nothing is disclosed unless its disclosure is recorded first.
        self.gateway
            .store
            .append_audit(&audit)
            .await
            .map_err(ApiError::from)?;
        if timeline.is_empty() {
            return Err(ApiError::NotFound(format!(
                "no case {case_ref} that {} may see",
                principal.agency.id
            ))
            .into());
        }
        Ok(Response::new(pb::CaseView {
            case_ref: case_ref.to_string(),
            timeline,
        }))
    }
}

/// Reads the opening request of a Subscribe stream, opens the session and
/// starts it; the status says why a subscription could not be opened.
async fn open_session(
    gateway: &Arc<Gateway>,
    principal: Principal,
    mut inbound: Streaming<pb::SubscribeRequest>,
) -> Result<routing::Outbound, Status> {
    let open = match inbound.message().await? {
        Some(pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Open(open)),
        }) => open,
        Some(_) => {
            return Err(Status::invalid_argument(
                "open: the first request must open the subscription",
            ));
        }
        None => {
            return Err(Status::invalid_argument(
                "open: the request stream ended before opening",
            ));
        }
    };
    let open = OpenRequest::try_from(open).map_err(ApiError::from)?;
    let session = Session::open(gateway.clone(), principal, open).await?;
    let (sink, stream) = routing::outbound();
    tokio::spawn(session.run(inbound, sink));
    Ok(stream)
}
