//! `PublishStream`, pipelined: requests are checked in the order they
//! arrive and queued for the store in that order, up to
//! [`STREAM_PIPELINE`] at once, so that they share the store's commits
//! (group commit) instead of waiting for one another; receipts go back in
//! the order of the requests, each once its notification is durably
//! stored.
//!
//! A refused request ends the stream with its status after the receipts
//! of the requests before it. Requests after it that were already queued
//! are stored or refused all the same (their refusals are audited); they
//! get no receipt on this stream, and republishing them returns their
//! original receipts. A request whose statutory copies depend on the
//! stored case (the case's transferor) is prepared only after the
//! requests before it are stored.
//!
//! Every notification still takes a token of its sender's publish rate
//! before it is checked: the next request is read only once the one before
//! has its token, so HTTP/2 flow control holds a fast sender back. Stopping
//! the gateway and disabling the sender end the stream, after the receipts
//! of what was already queued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use liandong_core::pb;

use super::{
    check_publish, prepare_publish, publish_stopped, record, record_publish_refused, requested_id,
    store_publish,
};
use crate::Gateway;
use crate::audit;
use crate::error::ApiError;
use crate::identity::{Caller, Principal};
use crate::refusals::Rpc;

/// Requests of one stream queued for the store and not yet answered. More
/// are not read until the oldest is answered.
pub(super) const STREAM_PIPELINE: usize = 128;

type Answer<'g> =
    Pin<Box<dyn Future<Output = (String, Result<pb::PublishReceipt, ApiError>)> + Send + 'g>>;

/// One open stream.
struct Pipeline<'g> {
    gateway: &'g Gateway,
    principal: &'g Principal,
    peer: Option<std::net::SocketAddr>,
    tx: mpsc::Sender<Result<pb::PublishReceipt, Status>>,
    /// Queued requests, oldest first.
    pending: FuturesOrdered<Answer<'g>>,
    /// Whether receipts are still sent: false once the stream ended (a
    /// refusal sent, or the client gone).
    open: bool,
}

/// Serves one `PublishStream` until it ends; answers go to `tx`.
pub(super) async fn run(
    gateway: Arc<Gateway>,
    principal: Principal,
    peer: Option<std::net::SocketAddr>,
    mut inbound: Streaming<pb::PublishRequest>,
    tx: mpsc::Sender<Result<pb::PublishReceipt, Status>>,
) {
    let mut rules_version = gateway.rules_version.subscribe();
    let mut pipeline = Pipeline {
        gateway: &gateway,
        principal: &principal,
        peer,
        tx,
        pending: FuturesOrdered::new(),
        open: true,
    };
    // A request read and waiting for its rate token.
    let mut waiting: Option<pb::PublishRequest> = None;
    let agency = principal.agency.id.clone();
    loop {
        tokio::select! {
            biased;
            Some((id, result)) = pipeline.pending.next(), if !pipeline.pending.is_empty() => {
                pipeline.answer(id, result).await;
                if !pipeline.open {
                    break;
                }
            }
            _ = gateway.stop.cancelled() => {
                pipeline.end(Err(publish_stopped().into())).await;
                break;
            }
            // An operator disabling the sender ends the stream at once,
            // before its connection is closed.
            Ok(()) = rules_version.changed() => {
                if let Some(disabled) = gateway.agency_state(agency.as_str()) {
                    let error = ApiError::AgencyDisabled(disabled);
                    let caller = Caller::Agency(principal.clone());
                    let entry = audit::refused(Some(Rpc::PublishStream), &caller, &error)
                        .map(|e| e.with_peer(peer));
                    record(&gateway, entry).await;
                    pipeline.end(Err(error.into())).await;
                    break;
                }
            }
            () = gateway.publish_rate.until_ready(&agency), if waiting.is_some() => {
                if let Some(request) = waiting.take()
                    && !pipeline.queue(request).await
                {
                    break;
                }
            }
            next = inbound.message(), if waiting.is_none() && pipeline.pending.len() < STREAM_PIPELINE => {
                match next {
                    Ok(Some(request)) => waiting = Some(request),
                    Ok(None) => {
                        pipeline.drain().await;
                        break;
                    }
                    Err(status) => {
                        pipeline.end(Err(status)).await;
                        break;
                    }
                }
            }
        }
    }
    // What was queued is stored or refused either way: see it through, so
    // that its subscribers are woken and its refusals audited.
    pipeline.drain().await;
}

impl<'g> Pipeline<'g> {
    /// Checks `request` and queues it for the store; false when it was
    /// refused (the stream then ended with its status).
    async fn queue(&mut self, request: pb::PublishRequest) -> bool {
        let id = requested_id(&request);
        let checked = match check_publish(self.gateway, self.principal, request) {
            Ok(checked) => checked,
            Err(error) => {
                // The receipts of the requests before it come first.
                self.drain().await;
                self.refuse(id, error).await;
                return false;
            }
        };
        if checked.reads_store() {
            // Its copies depend on what the requests before it store.
            self.drain().await;
            if !self.open {
                return false;
            }
        }
        let prepared = match prepare_publish(self.gateway, self.principal, self.peer, checked).await
        {
            Ok(prepared) => prepared,
            Err(error) => {
                self.drain().await;
                self.refuse(id, error).await;
                return false;
            }
        };
        let stored = store_publish(self.gateway, prepared);
        self.pending
            .push_back(Box::pin(async move { (id, stored.await) }));
        true
    }

    /// Answers the oldest queued request.
    async fn answer(&mut self, id: String, result: Result<pb::PublishReceipt, ApiError>) {
        match result {
            Ok(receipt) => {
                if self.open && self.tx.send(Ok(receipt)).await.is_err() {
                    self.open = false;
                }
            }
            Err(error) => self.refuse(id, error).await,
        }
    }

    /// Audits the refusal of request `id`, and ends the stream with it
    /// unless it already ended: the requests queued after it get no
    /// receipt here.
    async fn refuse(&mut self, id: String, error: ApiError) {
        record_publish_refused(self.gateway, self.principal, self.peer, &id, &error).await;
        if self.open {
            let _ = self.tx.send(Err(error.into())).await;
            self.open = false;
        }
    }

    /// Answers everything queued, in order.
    async fn drain(&mut self) {
        while let Some((id, result)) = self.pending.next().await {
            self.answer(id, result).await;
        }
    }

    /// Ends the stream with `last` after the receipts of what was queued.
    async fn end(&mut self, last: Result<pb::PublishReceipt, Status>) {
        self.drain().await;
        if self.open {
            let _ = self.tx.send(last).await;
            self.open = false;
        }
    }
}
