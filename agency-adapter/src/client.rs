//! The adapter's client of the gateway's `liandong.v1.Exchange` service:
//! connect over mutual TLS, publish, read a case, and hold a durable
//! subscription open while acknowledging what was handled.
//!
//! Calls return the gateway's [`tonic::Status`] unchanged so callers can
//! decide what a refusal means. This module must never log or print
//! notification content; it logs nothing but ids.

use std::time::Duration;

use liandong_core::pb;
use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::subscribe_request::Kind;
use liandong_core::tls::{ClientCredentials, TlsError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::config::GatewaySettings;

#[cfg(test)]
mod tests;

/// How many requests (the `open`, then acks) may wait to be written to a
/// subscription's request stream before [`Subscription::ack`] waits.
const REQUEST_QUEUE: usize = 1024;

/// The gateway could not be reached, or the adapter could not make a
/// request it needed to make.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS credential files could not be read or hold no PEM of the
    /// expected kind: a configuration problem.
    #[error(transparent)]
    Credentials(TlsError),
    /// The gateway URL or TLS settings were refused by the transport: a
    /// configuration problem.
    #[error(transparent)]
    Settings(TlsError),
    /// The gateway could not be reached, or the TLS handshake failed.
    #[error(transparent)]
    Unreachable(TlsError),
    /// The subscription's request stream is closed (the call has ended), so
    /// the acknowledgement could not be sent. The deliveries it named will
    /// be delivered again.
    #[error("the subscription has ended; the acknowledgement was not sent")]
    SubscriptionClosed,
}

/// A connection to the gateway, as the agency its certificate proves.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    inner: ExchangeClient<Channel>,
}

impl GatewayClient {
    /// Reads the credentials named in `settings` and connects (TCP, mutual
    /// TLS, HTTP/2) to the gateway.
    pub async fn connect(settings: &GatewaySettings) -> Result<Self, ClientError> {
        let credentials =
            ClientCredentials::from_files(&settings.ca, &settings.cert, &settings.key)
                .map_err(ClientError::Credentials)?;
        let channel = credentials
            .connect(&settings.url, settings.server_name.as_deref())
            .await
            .map_err(|e| match e {
                TlsError::Connect { .. } => ClientError::Unreachable(e),
                TlsError::Endpoint { .. } => ClientError::Settings(e),
                TlsError::Read { .. } | TlsError::NoPem { .. } => ClientError::Credentials(e),
            })?;
        tracing::debug!(gateway.url = %settings.url, "connected to the gateway");
        Ok(Self::from_channel(channel))
    }

    /// A client over an already-connected channel (e.g. one made with
    /// [`ClientCredentials::connect`] directly).
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: ExchangeClient::new(channel),
        }
    }

    /// Publishes one notification and returns the gateway's receipt, which
    /// is only given once the notification is durably stored.
    pub async fn publish(
        &mut self,
        notification: pb::Notification,
    ) -> Result<pb::PublishReceipt, tonic::Status> {
        let request = pb::PublishRequest {
            notification: Some(notification),
        };
        Ok(self.inner.publish(request).await?.into_inner())
    }

    /// Opens a pipelined `PublishStream`: every request sent on `requests`
    /// is answered by one receipt on the returned stream, in order; a
    /// refused request ends the stream with its status.
    pub async fn publish_stream(
        &mut self,
        requests: mpsc::Receiver<pb::PublishRequest>,
    ) -> Result<tonic::Streaming<pb::PublishReceipt>, tonic::Status> {
        Ok(self
            .inner
            .publish_stream(ReceiverStream::new(requests))
            .await?
            .into_inner())
    }

    /// The timeline of the case `case_ref`, as this agency may see it: every
    /// page the gateway answers, fetched in turn and joined into one view.
    pub async fn get_case(&mut self, case_ref: &str) -> Result<pb::CaseView, tonic::Status> {
        let mut page_token = String::new();
        let mut whole: Option<pb::CaseView> = None;
        loop {
            let request = pb::GetCaseRequest {
                case_ref: case_ref.to_owned(),
                page_size: 0,
                page_token,
            };
            let page = self.inner.get_case(request).await?.into_inner();
            page_token = page.next_page_token.clone();
            match whole.as_mut() {
                None => whole = Some(page),
                Some(view) => view.timeline.extend(page.timeline),
            }
            if page_token.is_empty() {
                break;
            }
        }
        let mut view = whole.unwrap_or_default();
        view.next_page_token.clear();
        Ok(view)
    }

    /// Opens (or resumes) the durable subscription `open` names. `open` is
    /// sent as the first message of the request stream, which stays open for
    /// acknowledgements as long as the returned [`Subscription`] lives.
    pub async fn subscribe(
        &mut self,
        open: pb::SubscriptionOpen,
    ) -> Result<Subscription, tonic::Status> {
        let name = open.name.clone();
        let (requests, receiver) = mpsc::channel(REQUEST_QUEUE);
        requests
            .send(pb::SubscribeRequest {
                kind: Some(Kind::Open(open)),
            })
            .await
            .map_err(|_| tonic::Status::internal("the request stream closed before opening"))?;
        let deliveries = self
            .inner
            .subscribe(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        tracing::debug!(subscription.name = %name, "subscription opened");
        Ok(Subscription {
            requests: Some(requests),
            deliveries,
        })
    }
}

/// An open subscription: deliveries come from [`next`](Self::next) and are
/// acknowledged with [`ack`](Self::ack). Dropping it ends the call; use
/// [`close`](Self::close) to end it after the acknowledgements have reached
/// the gateway.
#[derive(Debug)]
pub struct Subscription {
    /// Feeds the request stream; `None` once closed.
    requests: Option<mpsc::Sender<pb::SubscribeRequest>>,
    deliveries: tonic::Streaming<pb::Delivery>,
}

impl Subscription {
    /// The next delivery; `Ok(None)` when the gateway ended the stream with
    /// status OK, `Err` with the status it ended it with otherwise (or a
    /// local transport error, which has a [`source`](std::error::Error::source)).
    ///
    /// Cancel-safe: dropping the future (e.g. on a timeout) loses nothing.
    pub async fn next(&mut self) -> Result<Option<pb::Delivery>, tonic::Status> {
        self.deliveries.message().await
    }

    /// Acknowledges the deliveries with these sequences (nothing is sent for
    /// an empty slice). Waits only for room in the request queue, not for
    /// the gateway.
    pub async fn ack(&self, sequences: &[u64]) -> Result<(), ClientError> {
        if sequences.is_empty() {
            return Ok(());
        }
        let requests = self
            .requests
            .as_ref()
            .ok_or(ClientError::SubscriptionClosed)?;
        requests
            .send(pb::SubscribeRequest {
                kind: Some(Kind::Ack(pb::Ack {
                    sequences: sequences.to_vec(),
                })),
            })
            .await
            .map_err(|_| ClientError::SubscriptionClosed)
    }

    /// Ends the subscription cleanly: closes the request stream after the
    /// acknowledgements already queued, then waits up to `grace` for the
    /// gateway to end the call, discarding (not acknowledging) any delivery
    /// that still arrives. Returns the status the gateway ended the call
    /// with when it was not OK; waiting out `grace` is not an error.
    pub async fn close(mut self, grace: Duration) -> Result<(), tonic::Status> {
        self.requests = None;
        let drain = async {
            loop {
                match self.deliveries.message().await {
                    Ok(Some(delivery)) => {
                        tracing::debug!(
                            delivery.sequence = delivery.sequence,
                            "delivery discarded while closing; it will be delivered again"
                        );
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(status),
                }
            }
        };
        match tokio::time::timeout(grace, drain).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!("the gateway did not end the subscription within the grace period");
                Ok(())
            }
        }
    }
}
