//! One connected subscriber of one durable subscription.
//!
//! The session reads the store after its scan position, admits what the
//! filter wants and the policy does not refuse outright into its
//! [`Window`], and only then sends. Every frame — first send and each
//! redelivery — is rendered from the stored row under the rules in force
//! at the moment it is handed to the stream, and its disclosure is audited
//! before it leaves (one audit row per frame). A redelivery the policy now
//! refuses leaves the window without a frame.
//!
//! An operator disabling the reader's agency bumps the rules version too:
//! the disabled check is part of the same per-frame reader check, so the
//! stream ends with `PERMISSION_DENIED` at once.
//!
//! Sending never blocks without watching the session's cancellation
//! (takeover, shutdown), rule reloads and a stall timer: a subscriber that
//! stops reading is cut after `delivery.stall_timeout_seconds` and resumes
//! after its last acknowledgement when it reconnects. The outgoing channel
//! is small, and the stream that tonic polls ([`Outbound`]) yields the
//! session's ending status ahead of anything still buffered, so the status
//! is not stuck behind frames nobody reads.
//!
//! The cursor is written only when it moved, at most every
//! `delivery.cursor_flush_ms` and once at the end (before the stream ends),
//! and never by a session that sent nothing: an idle session writes
//! nothing.
//!
//! A session runs under its subscription's lease (`lease`), acquired
//! before it reads anything and released after its last cursor write: it
//! checks the lease in memory before each frame it hands to the stream,
//! and ends when another replica asks for the subscription (as replaced)
//! or the lease is lost (`UNAVAILABLE`, resumable).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use liandong_core::domain::{AgencyId, FieldError};
use liandong_core::pb;
use liandong_core::registry::Agency;

use crate::Gateway;
use crate::disclosure::{self, Channel};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::policy::{self, Decision, Rules};
use crate::store::agency_state::DisabledAgency;
use crate::store::{StoreError, StoredNotification};

use super::lease::{AcquireError, HoldLoss, LeaseHold};
use super::wake::{self, Live};
use super::window::Window;
use super::{OpenRequest, Start};

/// Rows read from the store at a time; also bounds the rows a session
/// holds in memory while it waits to send them.
const READ_BATCH: usize = 64;
/// Capacity of the channel towards the subscriber. Small: frames waiting
/// here are unacknowledged anyway and bounded memory matters more.
pub const OUTBOUND_CAPACITY: usize = 16;
/// How long a new session waits for the one it replaces to write its
/// cursor.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a subscription could not be opened, or why its stream ends. The
/// text is what the subscriber reads; `error` gives each its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnd {
    /// The subscription was opened again, by a newer connection.
    #[error("the subscription was opened by a newer connection")]
    Replaced,
    /// The gateway is shutting down.
    #[error("the gateway is shutting down; reconnect to resume")]
    ShuttingDown,
    /// No frame could be handed to the stream for the stall timeout.
    #[error(
        "no delivery could be sent for {seconds} s: the subscriber stopped reading; reconnect to resume after the last acknowledgement"
    )]
    Stalled {
        /// The stall timeout, in seconds.
        seconds: u64,
    },
    /// A reload registered the reader with another certificate identity.
    #[error(
        "{agency} is registered with another certificate identity since the registry was reloaded; this stream is closed"
    )]
    ReaderReregistered {
        /// The reader.
        agency: AgencyId,
    },
    /// A reload removed the reader from the registry.
    #[error(
        "{agency} is no longer a registered agency since the registry was reloaded; this stream is closed"
    )]
    ReaderRemoved {
        /// The reader.
        agency: AgencyId,
    },
    /// An operator disabled the reader.
    #[error("{0}; this stream is closed")]
    ReaderDisabled(DisabledAgency),
    /// The owner has as many stored subscriptions as it may.
    #[error(
        "{owner} has {count} subscriptions, the most limits.max_subscriptions_per_agency ({cap}) allows; reuse one of them"
    )]
    SubscriptionCap {
        /// The owning agency.
        owner: String,
        /// Its stored subscriptions.
        count: u64,
        /// The cap.
        cap: u32,
    },
    /// The owner has as many open subscription streams as it may.
    #[error(
        "{owner} has {open} subscription streams open, the most limits.max_streams_per_agency ({cap}) allows; close one first"
    )]
    StreamCap {
        /// The owning agency.
        owner: String,
        /// Its open streams.
        open: usize,
        /// The cap.
        cap: u32,
    },
    /// A request on the stream breaks the protocol (open first, then acks).
    #[error(transparent)]
    BadRequest(FieldError),
    /// The subscription exists with another filter.
    #[error(
        "subscription {name} exists with another filter; open it with its own filter or use a new name"
    )]
    FilterConflict {
        /// The subscription's name.
        name: String,
    },
    /// This gateway process lost the subscription's lease: another may
    /// serve it now, so this one sends nothing more.
    #[error(
        "this gateway replica lost its hold on the subscription ({0}); reconnect to resume after the last acknowledgement"
    )]
    HoldLost(HoldLoss),
    /// Another gateway process holds the subscription and did not hand it
    /// over in time.
    #[error(
        "subscription {name} is open through another gateway replica, which did not hand it over within {seconds} s; close the other stream, or retry in a few seconds"
    )]
    HeldElsewhere {
        /// The subscription's name.
        name: String,
        /// How long the open waited.
        seconds: u64,
    },
}

/// Why a session stopped.
enum Halt {
    /// The subscriber went away (closed its side, or the stream dropped).
    Left,
    /// The session ends with this error.
    Ended(ApiError),
    /// The request stream failed with this status (a transport or decode
    /// failure); it is passed on as it is.
    Failed(Status),
}

impl Halt {
    /// The status the stream ends with; `None` for a clean end.
    fn into_status(self) -> Option<Status> {
        match self {
            Self::Left => None,
            Self::Ended(error) => Some(error.into()),
            Self::Failed(status) => Some(status),
        }
    }
}

impl From<SessionEnd> for Halt {
    fn from(end: SessionEnd) -> Self {
        Self::Ended(end.into())
    }
}

impl From<ApiError> for Halt {
    fn from(error: ApiError) -> Self {
        Self::Ended(error)
    }
}

fn store_status(error: StoreError) -> Halt {
    Halt::Ended(error.into())
}

/// The sending half of a subscription stream: frames, and the ending
/// status.
#[derive(Debug)]
pub struct OutboundSink {
    /// Frames, in order.
    pub(super) frames: mpsc::Sender<pb::Delivery>,
    /// The status the stream ends with, if not a clean end.
    pub(super) end: oneshot::Sender<Status>,
}

/// The response stream of a subscription: frames from the session, ended
/// by its status, which overtakes frames still buffered (they are
/// unacknowledged and are redelivered on resume).
#[derive(Debug)]
pub struct Outbound {
    frames: mpsc::Receiver<pb::Delivery>,
    end: Option<oneshot::Receiver<Status>>,
    finished: bool,
}

/// A connected sink and stream.
pub fn outbound() -> (OutboundSink, Outbound) {
    let (frames_tx, frames) = mpsc::channel(OUTBOUND_CAPACITY);
    let (end_tx, end) = oneshot::channel();
    (
        OutboundSink {
            frames: frames_tx,
            end: end_tx,
        },
        Outbound {
            frames,
            end: Some(end),
            finished: false,
        },
    )
}

impl Stream for Outbound {
    type Item = Result<pb::Delivery, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(end) = self.end.as_mut() {
            match Pin::new(end).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.finished = true;
                    self.frames.close();
                    return Poll::Ready(Some(Err(status)));
                }
                // Ended without a status: what is buffered still goes out.
                Poll::Ready(Err(_)) => self.end = None,
                Poll::Pending => {}
            }
        }
        match self.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One connected subscriber of one durable subscription.
pub struct Session {
    gateway: Arc<Gateway>,
    principal: Principal,
    request: OpenRequest,
    /// This session's entry in the registry.
    live: Arc<Live>,
    /// Its use of the subscription's lease: it sends only while the lease
    /// is valid, and releases it after its last cursor write.
    hold: LeaseHold,
    window: Window,
    /// Cursor as last written.
    persisted: u64,
    /// When the cursor was last written (or the session opened).
    last_flush: Instant,
    /// The store may hold rows above the scan position that were not
    /// examined yet.
    more: bool,
    /// Changes when the rules are reloaded.
    rules_version: watch::Receiver<u64>,
    /// True once a frame was handed to the stream: a session that sent
    /// nothing never writes its cursor (what it passed over is passed over
    /// again, read-only, after a reconnect).
    delivered: bool,
    /// The subscriber's address, for the audit rows of its frames and
    /// acknowledgements.
    peer: Option<std::net::SocketAddr>,
}

impl Session {
    /// The same session, its subscriber connected from `peer`.
    pub fn from_peer(mut self, peer: Option<std::net::SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// Opens (creating if new) the subscription, within the agency's caps,
    /// ends any older session of it and resumes from its written cursor.
    pub async fn open(
        gateway: Arc<Gateway>,
        principal: Principal,
        request: OpenRequest,
    ) -> Result<Self, ApiError> {
        let owner = principal.agency.id.as_str();
        let name = request.name.as_str();
        let filter = request.filter.canonical_bytes();
        let store_error = ApiError::Store;
        let start_after = match request.start {
            Start::Beginning => 0,
            Start::Now => gateway.store.latest_sequence().await.map_err(store_error)?,
            Start::After(n) => {
                let latest = gateway.store.latest_sequence().await.map_err(store_error)?;
                // The latest sequence counts every agency's traffic: the
                // refusal does not state it.
                if n > latest {
                    return Err(ApiError::InvalidArgument(FieldError::new(
                        "open.start.after_sequence",
                        "is beyond the latest sequence",
                    )));
                }
                n
            }
        };
        // Counted against the cap before the store is touched: opens
        // beyond it, however many arrive at once, create nothing.
        let reservation = gateway
            .sessions
            .reserve(
                &principal.agency.id,
                name,
                gateway.delivery.max_streams_per_agency,
            )
            .map_err(|cap| ApiError::from(stream_cap(owner, &cap)))?;
        let record = {
            let _opening = gateway.sessions.opening.lock().await;
            let cap = gateway.delivery.max_subscriptions_per_agency;
            let exists = gateway
                .store
                .subscription_cursor(owner, name)
                .await
                .map_err(store_error)?
                .is_some();
            if !exists {
                let count = gateway
                    .store
                    .count_subscriptions(owner)
                    .await
                    .map_err(store_error)?;
                if count >= u64::from(cap) {
                    tracing::warn!(agency.id = %owner, subscription.count = count, "new subscription refused: per-agency cap");
                    return Err(SessionEnd::SubscriptionCap {
                        owner: owner.to_owned(),
                        count,
                        cap,
                    }
                    .into());
                }
            }
            gateway
                .store
                .open_subscription(owner, name, &filter, start_after)
                .await
                .map_err(store_error)?
        };
        if record.filter != filter {
            return Err(SessionEnd::FilterConflict {
                name: name.to_owned(),
            }
            .into());
        }
        // Before the session reads or sends anything: one session of the
        // subscription at a time across every replica.
        let hold = gateway
            .leases
            .acquire(owner, name)
            .await
            .map_err(|error| match error {
                AcquireError::HeldElsewhere { seconds } => SessionEnd::HeldElsewhere {
                    name: name.to_owned(),
                    seconds,
                }
                .into(),
                AcquireError::ShuttingDown => SessionEnd::ShuttingDown.into(),
                AcquireError::Store(error) => ApiError::Store(error),
            })?;
        let (live, previous) = gateway
            .sessions
            .register(
                &gateway.stop,
                &principal.agency.id,
                name,
                request.filter.clone(),
                gateway.delivery.max_streams_per_agency,
            )
            .map_err(|cap| ApiError::from(stream_cap(owner, &cap)))?;
        drop(reservation);
        wake::ensure_poller(&gateway);
        let rules_version = gateway.rules_version.subscribe();
        let window = Window::new(
            record.acked_through,
            request.max_in_flight,
            request.ack_timeout,
        );
        // From here on, dropping the session (an early return, or the
        // request being cancelled) takes it out of the registry and gives
        // up its use of the lease.
        let mut session = Self {
            gateway,
            principal,
            request,
            live,
            hold,
            window,
            persisted: record.acked_through,
            last_flush: Instant::now(),
            more: true,
            rules_version,
            delivered: false,
            peer: None,
        };
        session.resume_after(previous).await?;
        tracing::info!(
            agency.id = %session.principal.agency.id,
            subscription.name = %session.request.name,
            subscription.created = record.created,
            subscription.acked_through = session.persisted,
            lease.hold = session.hold.hold(),
            "subscription opened"
        );
        Ok(session)
    }

    /// Waits for the session this one replaces on this process (if any)
    /// to end and write its cursor, then starts from the cursor as stored
    /// now rather than from the one read before the lease was acquired: a
    /// session another replica ended wrote its cursor before it released
    /// the lease.
    async fn resume_after(&mut self, previous: Option<CancellationToken>) -> Result<(), ApiError> {
        let owner = self.principal.agency.id.as_str();
        let name = self.request.name.as_str();
        if let Some(previous) = previous
            && tokio::time::timeout(TAKEOVER_WAIT, previous.cancelled())
                .await
                .is_err()
        {
            tracing::warn!(agency.id = %owner, subscription.name = %name, "the replaced session did not end in time; resuming from the cursor as stored");
        }
        let stored = self.gateway.store.subscription_cursor(owner, name).await?;
        let cursor = stored.unwrap_or(0).max(self.persisted);
        self.window = Window::new(cursor, self.request.max_in_flight, self.request.ack_timeout);
        self.persisted = cursor;
        Ok(())
    }

    /// Serves the session until the subscriber leaves, fails, stalls, is
    /// replaced or loses its right to read, or the gateway stops.
    pub async fn run<S>(mut self, mut inbound: S, sink: OutboundSink)
    where
        S: Stream<Item = Result<pb::SubscribeRequest, Status>> + Unpin,
    {
        let OutboundSink { frames, end } = sink;
        let halt = self.pump(&mut inbound, &frames).await;
        // Written before the stream ends: a subscriber that closed after
        // acknowledging finds its cursor stored once the stream is over.
        if let Err(error) = self.flush_cursor(true).await {
            tracing::warn!(%error, "could not write the subscription cursor at session end");
        }
        // Queued after the cursor write: whoever acquires the lease next
        // reads that cursor.
        let released = self.hold.release();
        let owner = self.principal.agency.id.to_string();
        match halt.into_status() {
            None => {
                tracing::info!(agency.id = %owner, subscription.name = %self.request.name, in_flight = self.window.len(), subscription.acked_through = self.persisted, "subscription closed")
            }
            Some(status) => {
                tracing::info!(agency.id = %owner, subscription.name = %self.request.name, in_flight = self.window.len(), subscription.acked_through = self.persisted, code = ?status.code(), reason = %status.message(), "subscription ended");
                // Before the frames end, so the stream cannot end without it.
                let _ = end.send(status);
            }
        }
        drop(frames);
        self.gateway
            .sessions
            .unregister(self.request.name.as_str(), &self.live);
        released.await;
    }

    async fn pump<S>(&mut self, inbound: &mut S, out: &mpsc::Sender<pb::Delivery>) -> Halt
    where
        S: Stream<Item = Result<pb::SubscribeRequest, Status>> + Unpin,
    {
        loop {
            let stepped = self.step(inbound, out).await;
            self.live.set_in_flight(self.window.len());
            if let Err(halt) = stepped {
                return halt;
            }
            let wake_at = [self.window.next_due(), self.flush_due()]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                () = self.live.cancel.cancelled() => return self.cancelled().into(),
                () = self.hold.ended() => return self.cancelled().into(),
                changed = self.rules_version.changed() => {
                    if changed.is_err() {
                        return SessionEnd::ShuttingDown.into();
                    }
                    let rules = self.gateway.rules();
                    if let Err(end) = self.reader_in(&rules) {
                        return end.into();
                    }
                    self.more = true;
                }
                message = inbound.next() => match message {
                    Some(Ok(request)) => {
                        if let Err(end) = self.handle(request) {
                            return end.into();
                        }
                    }
                    None => return Halt::Left,
                    Some(Err(status)) => return Halt::Failed(status),
                },
                () = self.live.notify.notified() => self.more = true,
                () = sleep_until(wake_at), if wake_at.is_some() => {}
                () = out.closed() => return Halt::Left,
            }
        }
    }

    /// Sends what is new, redelivers what is due, writes the cursor if due.
    async fn step<S>(
        &mut self,
        inbound: &mut S,
        out: &mpsc::Sender<pb::Delivery>,
    ) -> Result<(), Halt>
    where
        S: Stream<Item = Result<pb::SubscribeRequest, Status>> + Unpin,
    {
        self.apply_received(inbound)?;
        self.fill(out).await?;
        // Sending new frames may have taken a while (a slow store, a full
        // channel): what was acknowledged meanwhile is not due.
        self.apply_received(inbound)?;
        self.redeliver_due(out).await?;
        self.flush_cursor(false).await.map_err(store_status)
    }

    /// Applies every request that has already arrived, without waiting, so
    /// that an acknowledged frame is never judged due and sent again.
    fn apply_received<S>(&mut self, inbound: &mut S) -> Result<(), Halt>
    where
        S: Stream<Item = Result<pb::SubscribeRequest, Status>> + Unpin,
    {
        while let Some(message) = inbound.next().now_or_never() {
            match message {
                Some(Ok(request)) => self.handle(request)?,
                None => return Err(Halt::Left),
                Some(Err(status)) => return Err(Halt::Failed(status)),
            }
        }
        Ok(())
    }

    fn handle(&mut self, request: pb::SubscribeRequest) -> Result<(), SessionEnd> {
        match request.kind {
            Some(pb::subscribe_request::Kind::Ack(ack)) => {
                crate::ops::metrics::acked(
                    &self.principal.agency.id,
                    self.window.ack(&ack.sequences),
                );
                Ok(())
            }
            Some(pb::subscribe_request::Kind::Open(_)) => Err(SessionEnd::BadRequest(
                FieldError::new("open", "may only be sent once, as the first request"),
            )),
            None => Err(SessionEnd::BadRequest(FieldError::new(
                "request",
                "carries neither open nor ack",
            ))),
        }
    }

    /// The reader's registry entry under `rules`, or the status that ends
    /// the stream because the agency lost its right to read (removed,
    /// registered anew, or disabled by an operator).
    fn reader_in<'r>(&self, rules: &'r Rules) -> Result<&'r Agency, SessionEnd> {
        let id = &self.principal.agency.id;
        if let Some(disabled) = self.gateway.agency_state(id.as_str()) {
            return Err(SessionEnd::ReaderDisabled(disabled));
        }
        match rules.registry.get(id) {
            Some(agency) if agency.identity == self.principal.agency.identity => Ok(agency),
            Some(_) => Err(SessionEnd::ReaderReregistered { agency: id.clone() }),
            None => Err(SessionEnd::ReaderRemoved { agency: id.clone() }),
        }
    }

    /// Why the session was told to end: the gateway stops, its lease ended
    /// (another replica asked for the subscription, or the lease was
    /// lost), or a newer connection on this process replaced it.
    fn cancelled(&self) -> SessionEnd {
        if self.gateway.stop.is_cancelled() {
            SessionEnd::ShuttingDown
        } else if self.hold.has_ended() {
            self.hold.end()
        } else {
            SessionEnd::Replaced
        }
    }

    /// Admits and sends new rows until the window is full or the store has
    /// nothing more.
    async fn fill(&mut self, out: &mpsc::Sender<pb::Delivery>) -> Result<(), Halt> {
        while self.more && self.window.room() > 0 {
            let limit = self.window.room().min(READ_BATCH);
            let batch = self
                .gateway
                .store
                .read_after(self.window.scanned(), limit as u32)
                .await
                .map_err(store_status)?;
            let Some(through) = batch.through else {
                self.more = false;
                break;
            };
            let rules = self.gateway.rules();
            let reader = self.reader_in(&rules)?;
            let mut admitted = Vec::new();
            for row in batch.rows {
                // Rows the policy gives nothing are passed over here; the
                // decision for what is sent is made again at send time.
                if self.request.filter.wants(&row.envelope)
                    && policy::decide(&rules, reader, &row.envelope) != Decision::Nothing
                {
                    self.window.admit(row.sequence);
                    admitted.push(row);
                }
            }
            // Rows refused for integrity are passed over with the rest.
            self.window.scanned_through(through);
            self.send(out, admitted).await?;
        }
        Ok(())
    }

    /// Sends again, in sequence order, every delivery whose ack timeout
    /// passed, each re-read from the store and rendered anew.
    async fn redeliver_due(&mut self, out: &mpsc::Sender<pb::Delivery>) -> Result<(), Halt> {
        let due = self.window.due(Instant::now());
        for chunk in due.chunks(READ_BATCH) {
            let mut rows = Vec::with_capacity(chunk.len());
            for &sequence in chunk {
                let batch = self
                    .gateway
                    .store
                    .read_after(sequence - 1, 1)
                    .await
                    .map_err(store_status)?;
                match batch.rows.into_iter().find(|row| row.sequence == sequence) {
                    Some(row) => rows.push(row),
                    None => {
                        tracing::warn!(
                            notification.sequence = sequence,
                            "an unacknowledged delivery is no longer served by the store; not sent again"
                        );
                        self.window.drop_done(sequence);
                    }
                }
            }
            self.send(out, rows).await?;
        }
        Ok(())
    }

    /// Renders and sends frames for rows already in the window, in order.
    /// Each group of frames is rendered once channel space is reserved for
    /// it, under the rules in force then, and audited before it is handed
    /// over; if the audit fails nothing is sent.
    async fn send(
        &mut self,
        out: &mpsc::Sender<pb::Delivery>,
        rows: Vec<StoredNotification>,
    ) -> Result<(), Halt> {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let permit = self.reserve(out).await?;
            self.hold.check()?;
            // The channel has one producer: capacity seen now stays ours.
            let group: Vec<StoredNotification> = rows.by_ref().take(1 + out.capacity()).collect();
            let rules = self.gateway.rules();
            let reader = self.reader_in(&rules)?;
            let mut frames = Vec::with_capacity(group.len());
            let mut audit = Vec::new();
            for row in &group {
                // Acknowledged while waiting: nothing to send.
                let Some(attempt) = self.window.next_attempt(row.sequence) else {
                    continue;
                };
                match disclosure::disclose(&rules, reader, row, attempt, Channel::Delivery) {
                    Some(disclosed) => {
                        audit.extend(disclosed.audit.map(|entry| entry.with_peer(self.peer)));
                        if attempt > 1 {
                            tracing::debug!(
                                notification.sequence = row.sequence,
                                attempt,
                                decision = disclosed.decision.name(),
                                "redelivering unacknowledged notification"
                            );
                        }
                        frames.push(disclosed.frame);
                    }
                    None => {
                        tracing::debug!(
                            notification.sequence = row.sequence,
                            attempt,
                            "the rules in force give this reader nothing now; done for this subscription"
                        );
                        self.window.drop_done(row.sequence);
                    }
                }
            }
            self.gateway
                .store
                .append_audit(&audit)
                .await
                .map_err(store_status)?;
            let now = Instant::now();
            let mut permit = Some(permit);
            for frame in frames {
                // In memory, before each frame: a session whose lease may
                // have expired at the database sends nothing more.
                self.hold.check()?;
                let sequence = frame.sequence;
                crate::ops::metrics::delivered(&self.principal.agency.id, frame.attempt);
                match permit.take() {
                    Some(permit) => permit.send(frame),
                    None => out.try_send(frame).map_err(|_| Halt::Left)?,
                }
                self.window.sent(sequence, now);
                self.delivered = true;
            }
        }
        Ok(())
    }

    /// Waits for room in the channel towards the subscriber, watching the
    /// session's cancellation, rule reloads and the stall timer.
    async fn reserve<'o>(
        &mut self,
        out: &'o mpsc::Sender<pb::Delivery>,
    ) -> Result<mpsc::Permit<'o, pb::Delivery>, Halt> {
        let stall_timeout = self.gateway.delivery.stall_timeout;
        let deadline = Instant::now() + stall_timeout;
        loop {
            tokio::select! {
                biased;
                () = self.live.cancel.cancelled() => return Err(self.cancelled().into()),
                () = self.hold.ended() => return Err(self.cancelled().into()),
                changed = self.rules_version.changed() => {
                    if changed.is_err() {
                        return Err(SessionEnd::ShuttingDown.into());
                    }
                    let rules = self.gateway.rules();
                    self.reader_in(&rules)?;
                    self.more = true;
                }
                permit = out.reserve() => return permit.map_err(|_| Halt::Left),
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        agency.id = %self.principal.agency.id,
                        subscription.name = %self.request.name,
                        stall_timeout_seconds = stall_timeout.as_secs(),
                        in_flight = self.window.len(),
                        "subscription stream stalled: the subscriber stopped reading; cut"
                    );
                    return Err(SessionEnd::Stalled {
                        seconds: stall_timeout.as_secs(),
                    }
                    .into());
                }
            }
        }
    }

    /// When the moved cursor is next due to be written.
    fn flush_due(&self) -> Option<Instant> {
        (self.delivered && self.window.cursor() > self.persisted)
            .then(|| self.last_flush + self.gateway.delivery.cursor_flush)
    }

    /// Writes the cursor if it moved and (unless `now`) the flush interval
    /// has passed.
    async fn flush_cursor(&mut self, now: bool) -> Result<(), crate::store::StoreError> {
        let Some(due) = self.flush_due() else {
            return Ok(());
        };
        if !now && Instant::now() < due {
            return Ok(());
        }
        let cursor = self.window.cursor();
        self.gateway
            .store
            .advance_subscription(
                self.principal.agency.id.as_str(),
                self.request.name.as_str(),
                cursor,
                self.peer,
            )
            .await?;
        self.persisted = cursor;
        self.last_flush = Instant::now();
        Ok(())
    }
}

impl Drop for Session {
    /// A session that ends any way at all leaves the registry (a no-op
    /// after `run` has already taken it out).
    fn drop(&mut self) {
        self.gateway
            .sessions
            .unregister(self.request.name.as_str(), &self.live);
    }
}

fn stream_cap(owner: &str, cap: &wake::StreamCap) -> SessionEnd {
    tracing::warn!(agency.id = %owner, streams.open = cap.open, "subscription stream refused: per-agency cap");
    SessionEnd::StreamCap {
        owner: owner.to_owned(),
        open: cap.open,
        cap: cap.cap,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
