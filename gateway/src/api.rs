//! The `liandong.v1.Exchange` service: the agency-facing RPCs.
//!
//! Every request's caller was resolved once, before any handler, by
//! `identity::ResolveCaller`; each handler starts from that [`Principal`]
//! (an unknown caller is refused and audited) and trusts nothing else about
//! the caller. Handlers validate, ask `policy`, and hand over to `store`,
//! `routing` and `disclosure`. Errors leave as `error::ApiError`, the one
//! place mapping to status codes: this module builds no status itself.
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
//!
//! Every notification takes a token of its sender's publish rate
//! (`quota::rate`): a unary publish finding none is refused with
//! `RESOURCE_EXHAUSTED` (audited, nothing stored) before it takes one of
//! the [`MAX_PUBLISHES_IN_FLIGHT`] slots, so a flooding agency cannot fill
//! them; a `PublishStream` waits for the token before it reads its next
//! request, so HTTP/2 flow control holds the sender back and the stream
//! stays open.
//!
//! An agency an operator disabled is refused before any handler
//! (`identity::ResolveCaller`); each publish is decided again when it is
//! about to be stored, and an open `PublishStream` ends with
//! `PERMISSION_DENIED` as soon as its sender is disabled; each of these
//! refusals is [`ApiError::AgencyDisabled`], which marks the status
//! `liandong-refusal: agency-disabled` so that clients retry.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use liandong_core::domain::{Envelope, FieldError, Notification, StatutoryCopy};
use liandong_core::pb;
use liandong_core::pb::exchange_server::Exchange;

use crate::Gateway;
use crate::announcements;
use crate::audit;
use crate::cases::{self, page::PageRequest};
use crate::disclosure::{self, CasePage};
use crate::error::ApiError;
use crate::identity::{Caller, Principal};
use crate::policy::{self, PublishRefusal};
use crate::quota::rate::RateLimited;
use crate::refusals::Rpc;
use crate::routing::{self, OpenRequest, Session, SessionEnd};
use crate::signatures;
use crate::store::{AuditEntry, NewNotification, PublishOutcome};
use crate::supervision;

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

    /// The registered agency behind the request, as resolved when it
    /// arrived; an unknown caller is refused, and audited under the
    /// refusal action of the RPC called.
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let caller = Caller::of(request.extensions());
        let error = match &caller {
            Caller::Agency(principal) => return Ok(principal.clone()),
            Caller::Refused { error, .. } => ApiError::from(error.clone()),
        };
        let rpc = request.extensions().get::<Rpc>().copied();
        let entry = audit::refused(rpc, &caller, &error).map(|e| e.with_peer(peer_addr(request)));
        record(&self.gateway, entry).await;
        Err(error.into())
    }
}

/// Records a refused request in the audit log (nothing when `entry` is
/// `None`: the gateway failed rather than refused). A failure to record is
/// logged; the request stays refused.
async fn record(gateway: &Gateway, entry: Option<AuditEntry>) {
    let Some(entry) = entry else {
        return;
    };
    // The store runs the write as a task of its own: a caller dropped
    // meanwhile never cuts it short.
    if let Err(cause) = gateway.store.append_audit(&[entry]).await {
        tracing::error!(error = %cause, "could not record a refusal in the audit log");
    }
}

/// The remote address of the connection a request came on, when known.
fn peer_addr<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<crate::identity::PeerIdentity>()
        .map(|peer| peer.remote_addr)
}

/// Refuses a unary publish of `principal` over its rate, and records the
/// refusal in the audit log.
async fn refuse_over_rate(
    gateway: &Gateway,
    principal: &Principal,
    request: &pb::PublishRequest,
    limited: RateLimited,
) -> Status {
    let notification_id = request
        .notification
        .as_ref()
        .map(|n| n.notification_id.as_str())
        .unwrap_or_default();
    tracing::info!(agency.id = %principal.agency.id, retry_after_ms = limited.retry_after.as_millis() as u64, "publish refused: rate limit");
    let error = ApiError::ResourceExhausted(limited.to_string());
    record(
        gateway,
        audit::publish_refused(principal, notification_id, &error),
    )
    .await;
    error.into()
}

/// The refusal of a publish arriving once shutdown began.
fn publish_stopped() -> ApiError {
    ApiError::Unavailable("the gateway is shutting down; resend what has no receipt".into())
}

/// Validates and stores one notification for `principal`; a refusal is
/// recorded in the audit log.
pub async fn publish_one(
    gateway: &Gateway,
    principal: &Principal,
    request: pb::PublishRequest,
) -> Result<pb::PublishReceipt, ApiError> {
    publish_one_from(gateway, principal, None, request).await
}

/// [`publish_one`] of a request sent from `peer`, which its audit rows
/// record.
pub async fn publish_one_from(
    gateway: &Gateway,
    principal: &Principal,
    peer: Option<std::net::SocketAddr>,
    request: pb::PublishRequest,
) -> Result<pb::PublishReceipt, ApiError> {
    let notification_id = requested_id(&request);
    let result = async {
        let checked = check_publish(gateway, principal, request)?;
        let prepared = prepare_publish(gateway, principal, peer, checked).await?;
        store_publish(gateway, prepared).await
    }
    .await;
    if let Err(error) = &result {
        record_publish_refused(gateway, principal, peer, &notification_id, error).await;
    }
    result
}

/// The notification id a publish request names, as sent (empty when it
/// names none): what its refusal is audited under.
fn requested_id(request: &pb::PublishRequest) -> String {
    request
        .notification
        .as_ref()
        .map(|n| n.notification_id.clone())
        .unwrap_or_default()
}

/// Records a refused publish in the audit log.
async fn record_publish_refused(
    gateway: &Gateway,
    principal: &Principal,
    peer: Option<std::net::SocketAddr>,
    notification_id: &str,
    error: &ApiError,
) {
    record(
        gateway,
        audit::publish_refused(principal, notification_id, error)
            .map(|entry| entry.with_peer(peer)),
    )
    .await;
}

/// A publish request that passed every check needing no store: decoded,
/// sent by its caller, signed, allowed by policy.
struct CheckedPublish {
    wire: pb::Notification,
    notification: Notification,
    rules: Arc<crate::Rules>,
    span: tracing::Span,
}

impl CheckedPublish {
    /// Whether preparing it reads the store (the case's transferor, for
    /// its statutory copies): a pipelined stream first waits for the
    /// publishes it sent before.
    fn reads_store(&self) -> bool {
        self.rules.policy.needs_transferor(self.notification.event)
    }
}

/// A publish ready to be stored.
struct PreparedPublish {
    new: NewNotification,
    notification: Notification,
    span: tracing::Span,
}

/// Checks a publish request under the rules in force now.
fn check_publish(
    gateway: &Gateway,
    principal: &Principal,
    request: pb::PublishRequest,
) -> Result<CheckedPublish, ApiError> {
    let span = tracing::info_span!(
        "publish_checked",
        agency.id = %principal.agency.id,
        notification.id = tracing::field::Empty,
        case.ref = tracing::field::Empty,
    );
    let _entered = span.enter();
    let pb::PublishRequest { notification } = request;
    let wire = notification.ok_or_else(|| FieldError::new("notification", "is required"))?;
    let notification = Notification::try_from(wire.clone()).inspect_err(|error| {
        tracing::info!(%error, "publish refused: invalid notification");
    })?;
    // Only validated values enter the span.
    span.record("notification.id", tracing::field::display(&notification.id));
    span.record("case.ref", tracing::field::display(&notification.case_ref));
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
    let rules = gateway.rules();
    // Decided under the registry in force now: a key retired by a reload
    // no longer verifies, even on a stream opened before it.
    signatures::check_publish(
        &rules.registry,
        gateway.require_signatures,
        &wire,
        sender.as_str(),
    )
    .inspect_err(|error| {
        tracing::warn!(%error, "publish refused: signature");
    })?;
    match policy::check_publish(&rules, &principal.agency, &notification) {
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
    supervision::check_notification(&notification)?;
    drop(_entered);
    Ok(CheckedPublish {
        wire,
        notification,
        rules,
        span,
    })
}

/// Builds what is stored: the payload with the proven sender, the routing
/// envelope and its statutory copies; refuses a sender an operator
/// disabled, decided again now.
async fn prepare_publish(
    gateway: &Gateway,
    principal: &Principal,
    peer: Option<std::net::SocketAddr>,
    checked: CheckedPublish,
) -> Result<PreparedPublish, ApiError> {
    let CheckedPublish {
        mut wire,
        notification,
        rules,
        span,
    } = checked;
    let sender = &principal.agency.id;
    wire.sender = sender.to_string();
    let payload = wire.encode_to_vec();
    let mut envelope = Envelope::of(sender.clone(), &notification);
    let transferor = if rules.policy.needs_transferor(notification.event) {
        gateway
            .store
            .case_transferor(&notification.case_ref)
            .await?
    } else {
        None
    };
    envelope.copies =
        policy::statutory_copies(&rules, &principal.agency, &envelope, transferor.as_ref());
    let new = NewNotification::new(envelope, payload).from_peer(peer);
    // Decided again at the moment it is stored: a stream opened before an
    // operator disabled the sender stores nothing more.
    if let Some(disabled) = gateway.agency_state(sender.as_str()) {
        span.in_scope(|| tracing::info!("publish refused: the sender is disabled by an operator"));
        return Err(ApiError::AgencyDisabled(disabled));
    }
    Ok(PreparedPublish {
        new,
        notification,
        span,
    })
}

/// Queues the prepared publish for the store now (publishes queued one
/// after the other are stored in that order); the future answers with its
/// receipt once it is durably stored, or with its refusal.
fn store_publish<'g>(
    gateway: &'g Gateway,
    prepared: PreparedPublish,
) -> impl Future<Output = Result<pb::PublishReceipt, ApiError>> + Send + 'g {
    let PreparedPublish {
        new,
        notification,
        span,
    } = prepared;
    let stored = gateway
        .store
        .publish_supervised(&new, gateway.supervision_context());
    let answer = async move {
        let (outcome, emitted) = stored.await?;
        let sender = &new.envelope.sender;
        let (receipt, duplicate) = match outcome {
            PublishOutcome::Stored(receipt) => {
                crate::ops::metrics::published(sender, notification.event);
                routing::wake::stored(gateway, &receipt, &new);
                for released in &emitted {
                    routing::wake::stored(gateway, &released.receipt, &released.notification);
                }
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
            PublishOutcome::Refused(refusal) => {
                tracing::info!(%refusal, "publish refused: the event does not fit its case's state");
                return Err(ApiError::FailedPrecondition(refusal.to_string()));
            }
            PublishOutcome::AnnouncementRefused(refusal) => {
                tracing::info!(%refusal, "publish refused: the announcement does not fit");
                return Err(match refusal {
                    announcements::Refusal::Field { field, reason } => {
                        ApiError::InvalidArgument(FieldError::new(field, reason))
                    }
                    announcements::Refusal::NotCosigner(reason) => {
                        ApiError::PermissionDenied(reason)
                    }
                    announcements::Refusal::State(reason) => ApiError::FailedPrecondition(reason),
                });
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
            copies: receipt.copies.iter().map(StatutoryCopy::to_wire).collect(),
        })
    };
    tracing::Instrument::instrument(answer, span)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReceipt>, Status> {
        if self.gateway.stop.is_cancelled() {
            return Err(publish_stopped().into());
        }
        let principal = self.principal(&request).await?;
        // Over its rate, a caller is refused before it can wait for (and
        // hold) a slot the other agencies need.
        if let Err(limited) = self.gateway.publish_rate.check(&principal.agency.id) {
            return Err(
                refuse_over_rate(&self.gateway, &principal, request.get_ref(), limited).await,
            );
        }
        // Waiting for a slot holds nothing: a caller gone meanwhile leaves
        // nothing behind.
        let slot = self
            .publish_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| publish_stopped())?;
        let gateway = self.gateway.clone();
        let peer = peer_addr(&request);
        // From here on the work is the task's: dropping this future (an
        // expired deadline, a dropped connection) only stops the waiting.
        let work = self.publishes.spawn(async move {
            let _slot = slot;
            publish_one_from(&gateway, &principal, peer, request.into_inner())
                .await
                .map_err(Into::into)
        });
        match work.await {
            Ok(result) => result.map(Response::new),
            Err(failure) if failure.is_panic() => std::panic::resume_unwind(failure.into_panic()),
            Err(_) => Err(publish_stopped().into()),
        }
    }

    type PublishStreamStream = BoxStream<pb::PublishReceipt>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let principal = self.principal(&request).await?;
        let cap = self.gateway.delivery.max_streams_per_agency;
        let slot = match self.gateway.publish_streams.open(&principal.agency.id, cap) {
            Ok(slot) => slot,
            Err(open) => {
                let error = ApiError::ResourceExhausted(format!(
                    "{} has {open} publishing streams open, the most limits.max_streams_per_agency ({cap}) allows; close one first",
                    principal.agency.id
                ));
                let caller = Caller::Agency(principal);
                let entry = audit::refused(Some(Rpc::PublishStream), &caller, &error);
                record(&self.gateway, entry).await;
                return Err(error.into());
            }
        };
        let peer = peer_addr(&request);
        let inbound = request.into_inner();
        let gateway = self.gateway.clone();
        let (tx, rx) = mpsc::channel(publish_stream::STREAM_PIPELINE);
        tokio::spawn(async move {
            // The slot is given back however the stream ends.
            let _slot = slot;
            publish_stream::run(gateway, principal, peer, inbound, tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::Delivery>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = self.principal(&request).await?;
        let peer = peer_addr(&request);
        let mut inbound = request.into_inner();
        // A request stream that fails before opening passes its status on
        // as it is: undecodable requests are recorded by `refusals`, with
        // the rest of the refusals made before any handler.
        let first = inbound.message().await?;
        match open_session(&self.gateway, principal.clone(), peer, first, inbound).await {
            Ok(stream) => Ok(Response::new(Box::pin(stream))),
            Err(error) => {
                let caller = Caller::Agency(principal);
                let entry = audit::refused(Some(Rpc::Subscribe), &caller, &error)
                    .map(|e| e.with_peer(peer));
                record(&self.gateway, entry).await;
                Err(error.into())
            }
        }
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseView>, Status> {
        let principal = self.principal(&request).await?;
        let peer = peer_addr(&request);
        let pb::GetCaseRequest {
            case_ref,
            page_size,
            page_token,
        } = request.into_inner();
        let page = match PageRequest::parse(&case_ref, page_size, &page_token) {
            Ok(page) => page,
            Err(error) => {
                let error = ApiError::from(error);
                let caller = Caller::Agency(principal);
                let entry =
                    audit::refused(Some(Rpc::GetCase), &caller, &error).map(|e| e.with_peer(peer));
                record(&self.gateway, entry).await;
                return Err(error.into());
            }
        };
        case_page(&self.gateway, &principal, peer, &page)
            .await
            .map(Response::new)
            .map_err(Into::into)
    }
}

/// Rows read from the store per query while a `GetCase` page fills.
const CASE_READ_BATCH: u32 = 32;

/// One `GetCase` page for `principal`: the entries it may see after the
/// page's start, audited before they are returned, with the case's
/// projection. A page without any entry the caller may see is
/// `NOT_FOUND`, so that neither a guessed reference nor a forged token
/// reveals anything of a case.
///
/// Visibility is decided first from the routing columns alone; only the
/// rows the caller will receive something of (in full or as a stub) are
/// then read whole, checked, and decided again from their checked
/// columns. The payload of an entry the caller may not see is never read,
/// so neither its size nor its state shows in the answer or its timing.
async fn case_page(
    gateway: &Gateway,
    principal: &Principal,
    peer: Option<std::net::SocketAddr>,
    request: &PageRequest,
) -> Result<pb::CaseView, ApiError> {
    let case_ref = request.case_ref.as_str();
    let rules = gateway.rules();
    let mut page = CasePage::new(request.page_size as usize);
    let mut after = request.after;
    while !page.more {
        let batch = gateway
            .store
            .case_envelopes_after(case_ref, after, CASE_READ_BATCH)
            .await?;
        let visible: Vec<u64> = batch
            .rows
            .iter()
            .filter(|(_, envelope)| {
                policy::decide(&rules, &principal.agency, envelope) != policy::Decision::Nothing
            })
            .map(|(sequence, _)| *sequence)
            .collect();
        let rows = gateway.store.notifications(&visible).await?;
        disclosure::case_timeline(&rules, &principal.agency, &rows, &mut page);
        match batch.through {
            Some(through) => after = through,
            None => break,
        }
    }
    // Nothing is disclosed unless its disclosure is recorded first.
    for entry in &mut page.audit {
        entry.peer = peer;
    }
    gateway.store.append_audit(&page.audit).await?;
    if page.timeline.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no case {case_ref} that {} may see",
            principal.agency.id
        )));
    }
    let next_page_token = match page.last_sequence() {
        Some(last) if page.more => cases::page::token(&request.case_ref, last),
        _ => String::new(),
    };
    let case = gateway.store.case(case_ref).await?;
    let (state, region, agencies, state_since, opened_at) = match case {
        Some(case) => (
            case.state as i32,
            case.region,
            case.agencies,
            Some(case.state_since.to_wire()),
            Some(case.opened_at.to_wire()),
        ),
        None => (0, String::new(), Vec::new(), None, None),
    };
    Ok(pb::CaseView {
        case_ref: case_ref.to_owned(),
        timeline: page.timeline,
        state,
        region,
        agencies,
        next_page_token,
        state_since,
        opened_at,
    })
}

/// Opens the session a Subscribe stream's first request (sent from
/// `peer`) asks for and starts it; the error says why the subscription
/// could not be opened.
async fn open_session(
    gateway: &Arc<Gateway>,
    principal: Principal,
    peer: Option<std::net::SocketAddr>,
    first: Option<pb::SubscribeRequest>,
    inbound: Streaming<pb::SubscribeRequest>,
) -> Result<routing::Outbound, ApiError> {
    let open = match first {
        Some(pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Open(open)),
        }) => open,
        Some(_) => {
            return Err(SessionEnd::BadRequest(FieldError::new(
                "open",
                "the first request must open the subscription",
            ))
            .into());
        }
        None => {
            return Err(SessionEnd::BadRequest(FieldError::new(
                "open",
                "the request stream ended before opening",
            ))
            .into());
        }
    };
    let open = OpenRequest::try_from(open)?;
    let session = Session::open(gateway.clone(), principal, open)
        .await?
        .from_peer(peer);
    let (sink, stream) = routing::outbound();
    tokio::spawn(session.run(inbound, sink));
    Ok(stream)
}

mod publish_stream;
#[cfg(test)]
mod tests;
