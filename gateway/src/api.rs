//! The `liandong.v1.Exchange` service: the agency-facing RPCs.
//!
//! Every handler first turns the TLS peer into a registered agency
//! (`identity::authenticate`); nothing else about the caller is trusted.
//! Handlers validate, ask `policy`, and hand over to `store` and `routing`.
//! Errors leave through `error::ApiError`, the one place mapping to status
//! codes.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use liandong_core::domain::{CaseRef, FieldError, Notification};
use liandong_core::pb;
use liandong_core::pb::exchange_server::Exchange;

use crate::Gateway;
use crate::error::ApiError;
use crate::identity::{self, PeerIdentity, Principal};
use crate::policy;
use crate::routing::{self, OpenRequest, Session};
use crate::store::{NewNotification, PublishOutcome};

/// The Exchange service over a running gateway.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    gateway: Arc<Gateway>,
}

impl ExchangeService {
    /// The service for `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        identity::authenticate(
            request.extensions().get::<PeerIdentity>(),
            &self.gateway.registry,
        )
        .map_err(Status::from)
    }
}

/// Validates and stores one notification for `principal`.
#[tracing::instrument(skip_all, fields(agency.id = %principal.agency.id, notification.id, case.ref))]
pub async fn publish_one(
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
    policy::check_publish(&gateway.registry, &notification.recipients).inspect_err(|error| {
        tracing::info!(%error, "publish refused by policy");
    })?;
    wire.sender = sender.to_string();
    let payload = wire.encode_to_vec();
    let new = NewNotification {
        sender: sender.to_string(),
        notification_id: notification.id.to_string(),
        case_ref: notification.case_ref.to_string(),
        event: notification.event.to_wire() as i32,
        confidentiality: notification.confidentiality.to_wire() as i32,
        region: notification.region.to_string(),
        recipients: notification
            .recipients
            .iter()
            .map(ToString::to_string)
            .collect(),
        content_hash: Sha256::digest(&payload).to_vec(),
        payload,
    };
    let (receipt, duplicate) = match gateway.store.publish(&new).await? {
        PublishOutcome::Stored(receipt) => {
            gateway.latest.send_if_modified(|latest| {
                let newer = receipt.sequence > *latest;
                if newer {
                    *latest = receipt.sequence;
                }
                newer
            });
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
        let principal = self.authenticate(&request)?;
        let receipt = publish_one(&self.gateway, &principal, request.into_inner()).await?;
        Ok(Response::new(receipt))
    }

    type PublishStreamStream = BoxStream<pb::PublishReceipt>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let principal = self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let gateway = self.gateway.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
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
        let principal = self.authenticate(&request)?;
        let mut inbound = request.into_inner();
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
        let session = Session::open(self.gateway.clone(), principal, open).await?;
        let (tx, rx) = mpsc::channel(routing::OUTBOUND_CAPACITY);
        tokio::spawn(session.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseView>, Status> {
        let principal = self.authenticate(&request)?;
        let pb::GetCaseRequest { case_ref } = request.into_inner();
        let case_ref = CaseRef::parse_field("case_ref", &case_ref).map_err(ApiError::from)?;
        let rows = self
            .gateway
            .store
            .case_timeline(case_ref.as_str())
            .await
            .map_err(ApiError::from)?;
        let timeline: Vec<pb::Delivery> = rows
            .iter()
            .filter_map(|row| {
                let contact = self.gateway.contact_of(&row.sender);
                routing::render(&principal.agency, &contact, row, 0)
            })
            .collect();
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
