//! Which sessions a new notification concerns, and the one task per
//! process that finds notifications stored by other replicas.
//!
//! Every open session is registered here with its filter and a `Notify`.
//! A publish hands over the new row's routing fields; only the sessions
//! whose filter matches it and whose agency may see something of it under
//! the rules in force are woken. Sessions are indexed by the case-reference
//! prefix of their filter, so a publish looks only at those whose prefix
//! its case reference starts with (and those without one); an idle
//! session costs at most a filter check per publish, and nothing else: no
//! task wake-up, no read, no write.
//!
//! Rows written by another gateway replica reach no local publisher: one
//! poll task per process looks for sequences above what it has seen and
//! dispatches them the same way. On PostgreSQL it looks as soon as another
//! replica announces a commit (`store::listen`, LISTEN/NOTIFY), and in any
//! case every `delivery.poll_interval_ms`, so an announcement that is lost
//! only delays. It never wakes a session for a row that was already
//! dispatched locally, so on a single gateway it reads only the highest
//! sequence.
//!
//! The registry also enforces one session per subscription on this
//! process (a newer connection replaces the older one; across replicas the
//! subscription's lease does, see `lease`) and the per-agency stream cap.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use liandong_core::domain::{AgencyId, Envelope};
use liandong_core::subscription::SubscriptionFilter;

use crate::Gateway;
use crate::policy::{self, Decision, Rules};
use crate::store::listen::{self, Heard};
use crate::store::{NewNotification, Receipt};

/// Local publishes seen ahead of the contiguous position are remembered up
/// to this many; beyond it the poll task may wake a session twice for one
/// row (harmless: the session finds nothing new).
const AHEAD_LIMIT: usize = 4096;
/// Rows the poll task reads at a time.
const POLL_BATCH: u32 = 256;
/// How long the listener waits before it connects again after a failure.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// One open session, as the registry sees it.
#[derive(Debug)]
pub struct Live {
    /// Tells this session from a later one of the same subscription.
    pub(super) generation: u64,
    /// The subscription's owner.
    pub(super) owner: AgencyId,
    /// What the subscription wants.
    pub(super) filter: SubscriptionFilter,
    /// Ends the session: a newer connection took over, or the gateway stops.
    pub(super) cancel: CancellationToken,
    /// Cancelled once the session has ended and written its cursor, so a
    /// successor starts from it.
    pub(super) finished: CancellationToken,
    /// Wakes the session: something it may want was stored.
    pub(super) notify: Notify,
    /// Sequences sent to the stream (or about to be) and not yet
    /// acknowledged, as the session last counted them; read by operators.
    pub(super) in_flight: AtomicU32,
}

impl Live {
    /// True when `row` may give this session something to send: the filter
    /// wants it and the policy gives the owner more than nothing (a session
    /// whose owner left the registry is woken so that it ends).
    fn wants(&self, rules: &Rules, envelope: &Envelope) -> bool {
        self.filter.wants(envelope)
            && rules
                .registry
                .get(&self.owner)
                .is_none_or(|reader| policy::decide(rules, reader, envelope) != Decision::Nothing)
    }

    /// Records how many sequences the session has in flight.
    pub(super) fn set_in_flight(&self, in_flight: usize) {
        self.in_flight.store(
            u32::try_from(in_flight).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
    }
}

/// True when a subscription of `owner` with `filter` is to be sent the
/// notification with `envelope` under `rules`: its filter wants it and the
/// policy gives `owner` something of it (in full or as a stub). An owner
/// no longer in the registry is sent nothing.
pub fn delivers(
    rules: &Rules,
    owner: &AgencyId,
    filter: &SubscriptionFilter,
    envelope: &Envelope,
) -> bool {
    filter.wants(envelope)
        && rules
            .registry
            .get(owner)
            .is_some_and(|reader| policy::decide(rules, reader, envelope) != Decision::Nothing)
}

/// An open subscription session, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    /// The subscription's owner.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// Sequences sent and not yet acknowledged.
    pub in_flight: u32,
}

/// A refused registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCap {
    /// Streams the agency has open.
    pub open: usize,
    /// The configured cap.
    pub cap: u32,
}

/// An open in progress, counted against its owner's stream cap until it
/// drops (once the session is registered, or the open failed).
#[derive(Debug)]
pub struct Reservation<'a> {
    sessions: &'a Sessions,
    key: (String, String),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut inner = self.sessions.lock();
        if let Some(count) = inner.pending.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.pending.remove(&self.key);
            }
        }
    }
}

/// The live sessions of this process.
#[derive(Debug)]
pub struct Sessions {
    inner: Mutex<Inner>,
    /// Held while a subscription is counted and created, so that the
    /// per-agency cap holds against concurrent opens on this process.
    pub(super) opening: tokio::sync::Mutex<()>,
    poller_started: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    next_generation: u64,
    live: HashMap<(String, String), Arc<Live>>,
    /// The same sessions by the case-reference prefix of their filter (""
    /// when it has none) and generation: a publish looks only at those
    /// whose prefix its case reference starts with.
    by_prefix: HashMap<String, HashMap<u64, Arc<Live>>>,
    /// Every sequence at or below it was dispatched.
    dispatched: u64,
    /// Local publishes dispatched above `dispatched`.
    ahead: BTreeSet<u64>,
    /// Opens in progress per (owner, name), each holding a
    /// [`Reservation`]: counted against the stream cap from before the
    /// subscription is read or created in the store until the session is
    /// registered (or the open fails).
    pending: HashMap<(String, String), usize>,
}

impl Inner {
    fn index(&mut self, live: &Arc<Live>) {
        self.by_prefix
            .entry(live.filter.case_ref_prefix().to_owned())
            .or_default()
            .insert(live.generation, live.clone());
    }

    fn unindex(&mut self, live: &Live) {
        let prefix = live.filter.case_ref_prefix();
        if let Some(group) = self.by_prefix.get_mut(prefix) {
            group.remove(&live.generation);
            if group.is_empty() {
                self.by_prefix.remove(prefix);
            }
        }
    }

    /// Open sessions of `owner` other than the one named `name` (which a
    /// new session of that name replaces), with the names being opened
    /// that are not open yet.
    fn others_of(&self, owner: &AgencyId, name: &str) -> usize {
        let live = self
            .live
            .keys()
            .filter(|(o, n)| o == owner.as_str() && n != name)
            .count();
        let opening = self
            .pending
            .keys()
            .filter(|key| key.0 == owner.as_str() && key.1 != name && !self.live.contains_key(*key))
            .count();
        live + opening
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Sessions {
    /// An empty registry; rows up to `latest` exist already and need no
    /// dispatch.
    pub fn new(latest: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                dispatched: latest,
                ..Inner::default()
            }),
            opening: tokio::sync::Mutex::new(()),
            poller_started: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open session, by owner and name. Read-only.
    pub fn open(&self) -> Vec<OpenSession> {
        let mut open: Vec<OpenSession> = self
            .lock()
            .live
            .iter()
            .map(|((owner, name), live)| OpenSession {
                owner: owner.clone(),
                name: name.clone(),
                in_flight: live.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        open.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        open
    }

    /// Open streams per owning agency. Read-only.
    pub fn per_owner(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        for (owner, _) in self.lock().live.keys() {
            *counts.entry(owner.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Counts an open of `(owner, name)` against the stream cap until the
    /// returned reservation drops, or refuses it when `owner` has
    /// `max_streams` other streams open or being opened. Taken before the
    /// store is touched, so that concurrent opens beyond the cap change
    /// nothing (no subscription is created for a refused stream).
    pub(super) fn reserve(
        &self,
        owner: &AgencyId,
        name: &str,
        max_streams: u32,
    ) -> Result<Reservation<'_>, StreamCap> {
        let mut inner = self.lock();
        let open = inner.others_of(owner, name);
        if open >= max_streams as usize {
            return Err(StreamCap {
                open,
                cap: max_streams,
            });
        }
        let key = (owner.to_string(), name.to_owned());
        *inner.pending.entry(key.clone()).or_default() += 1;
        Ok(Reservation {
            sessions: self,
            key,
        })
    }

    /// Registers a session of `(owner, name)` unless `owner` already has
    /// `max_streams` other sessions open; cancels the session it replaces
    /// and returns that one's `finished` token.
    pub(super) fn register(
        &self,
        stop: &CancellationToken,
        owner: &AgencyId,
        name: &str,
        filter: SubscriptionFilter,
        max_streams: u32,
    ) -> Result<(Arc<Live>, Option<CancellationToken>), StreamCap> {
        let mut inner = self.lock();
        let key = (owner.to_string(), name.to_owned());
        let open = inner.others_of(owner, name);
        if open >= max_streams as usize {
            return Err(StreamCap {
                open,
                cap: max_streams,
            });
        }
        inner.next_generation += 1;
        let live = Arc::new(Live {
            generation: inner.next_generation,
            owner: owner.clone(),
            filter,
            cancel: stop.child_token(),
            finished: CancellationToken::new(),
            notify: Notify::new(),
            in_flight: AtomicU32::new(0),
        });
        inner.index(&live);
        let previous = inner.live.insert(key, live.clone()).map(|previous| {
            inner.unindex(&previous);
            previous.cancel.cancel();
            previous.finished.clone()
        });
        Ok((live, previous))
    }

    /// Removes a session that ended (unless a newer one replaced it) and
    /// signals its successor that the cursor is written.
    pub(super) fn unregister(&self, name: &str, live: &Live) {
        let mut inner = self.lock();
        let key = (live.owner.to_string(), name.to_owned());
        if inner
            .live
            .get(&key)
            .is_some_and(|current| current.generation == live.generation)
        {
            inner.live.remove(&key);
        }
        inner.unindex(live);
        drop(inner);
        live.finished.cancel();
    }

    /// Holds off every open of `owner`'s subscription `name` on this
    /// process while the returned guard lives, or `None` when it is open
    /// (or being opened) now. An operator moving its position holds the
    /// guard across the write, so no session starts from the position
    /// being replaced.
    pub async fn hold_closed(
        &self,
        owner: &str,
        name: &str,
    ) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.opening.lock().await;
        let key = (owner.to_owned(), name.to_owned());
        let inner = self.lock();
        let open = inner.live.contains_key(&key) || inner.pending.contains_key(&key);
        drop(inner);
        (!open).then_some(guard)
    }

    /// Wakes the sessions that may want the notification with `envelope`.
    fn wake(&self, rules: &Rules, envelope: &Envelope) -> usize {
        let inner = self.lock();
        let case_ref = envelope.case_ref.as_str();
        let prefix_ends =
            std::iter::once(0).chain(case_ref.char_indices().map(|(at, c)| at + c.len_utf8()));
        let mut woken = 0;
        for end in prefix_ends {
            let Some(group) = inner.by_prefix.get(&case_ref[..end]) else {
                continue;
            };
            for live in group.values() {
                if live.wants(rules, envelope) {
                    live.notify.notify_one();
                    woken += 1;
                }
            }
        }
        woken
    }

    /// Wakes every session (the rules changed).
    pub fn wake_all(&self) {
        for live in self.lock().live.values() {
            live.notify.notify_one();
        }
    }

    /// Records that `sequence` was dispatched by the process that stored it.
    fn dispatched_locally(&self, sequence: u64) {
        let mut inner = self.lock();
        if sequence <= inner.dispatched {
            return;
        }
        inner.ahead.insert(sequence);
        while let Some(next) = inner.ahead.first().copied() {
            if next > inner.dispatched + 1 {
                break;
            }
            inner.ahead.pop_first();
            inner.dispatched = inner.dispatched.max(next);
        }
        if inner.ahead.len() > AHEAD_LIMIT {
            inner.ahead.pop_last();
        }
    }

    /// Every sequence up to `through` was dispatched.
    fn dispatched_through(&self, through: u64) {
        let mut inner = self.lock();
        inner.dispatched = inner.dispatched.max(through);
        let first_ahead = inner.dispatched + 1;
        inner.ahead = inner.ahead.split_off(&first_ahead);
    }

    fn dispatched(&self) -> u64 {
        self.lock().dispatched
    }

    /// True once, for the caller that is to start the poll task.
    fn claim_poller(&self) -> bool {
        !self.poller_started.swap(true, Ordering::SeqCst)
    }
}

/// Wakes the sessions concerned by a notification this process has just
/// stored.
pub fn stored(gateway: &Gateway, receipt: &Receipt, new: &NewNotification) {
    let woken = gateway.sessions.wake(&gateway.rules(), &new.envelope);
    gateway.sessions.dispatched_locally(receipt.sequence);
    tracing::trace!(
        notification.sequence = receipt.sequence,
        sessions.woken = woken,
        "subscribers woken"
    );
}

/// Starts the process's poll task unless it runs already, and on
/// PostgreSQL the listener that makes it look at once when another
/// replica stored something. Both end when the gateway stops.
pub(super) fn ensure_poller(gateway: &Arc<Gateway>) {
    if !gateway.sessions.claim_poller() {
        return;
    }
    let look = Arc::new(Notify::new());
    tokio::spawn(listen(gateway.clone(), look.clone()));
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(gateway.delivery.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = gateway.stop.cancelled() => return,
                () = look.notified() => {}
                _ = ticker.tick() => {}
            }
            match poll_once(&gateway).await {
                Ok(()) => failing = false,
                Err(error) => {
                    // Logged once per outage, not once per tick.
                    if !failing {
                        tracing::warn!(%error, "cannot look for notifications stored by other replicas; retrying");
                    }
                    failing = true;
                }
            }
        }
    });
}

/// Makes the poll task look (`look`) whenever another replica announces a
/// stored notification, the lease keeper look for takeover requests
/// whenever another replica asks for a subscription this process may
/// hold, and both after the listener's connection came back
/// (announcements may have been missed meanwhile). Announcements arriving
/// while a look runs are folded into one more look. Nothing on SQLite. A
/// listener that cannot connect is retried, [`LISTEN_RETRY`] apart; the
/// poll covers the gap.
async fn listen(gateway: Arc<Gateway>, look: Arc<Notify>) {
    let mut failing = false;
    loop {
        let listener = tokio::select! {
            () = gateway.stop.cancelled() => return,
            listener = gateway.store.listen(&[listen::STORED, listen::LEASES]) => listener,
        };
        match listener {
            Ok(None) => return,
            Ok(Some(mut listener)) => {
                if failing {
                    tracing::info!("listening for other replicas' notifications again");
                }
                // What was stored before the listener was up.
                look.notify_one();
                loop {
                    let heard = tokio::select! {
                        () = gateway.stop.cancelled() => return,
                        heard = listener.next() => heard,
                    };
                    match heard {
                        Ok(Heard::Channel(channel)) if channel == listen::LEASES => {
                            gateway.leases.check_now();
                        }
                        Ok(Heard::Channel(_)) => look.notify_one(),
                        Ok(Heard::Reconnected) => {
                            look.notify_one();
                            gateway.leases.check_now();
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lost the listener for other replicas' notifications; they are found by the poll until it is back");
                            failing = true;
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot listen for other replicas' notifications; they are found by the poll until it can");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = gateway.stop.cancelled() => return,
            () = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

/// Dispatches rows stored since the last look that no local publish
/// dispatched (another replica's).
pub(super) async fn poll_once(gateway: &Gateway) -> Result<(), crate::store::StoreError> {
    let latest = gateway.store.latest_sequence().await?;
    let mut after = gateway.sessions.dispatched();
    if latest <= after {
        return Ok(());
    }
    if gateway.sessions.is_empty() {
        // A session opened from now on reads the store itself first.
        gateway.sessions.dispatched_through(latest);
        return Ok(());
    }
    while after < latest {
        let batch = gateway.store.read_after(after, POLL_BATCH).await?;
        let Some(through) = batch.through else {
            break;
        };
        let rules = gateway.rules();
        for row in &batch.rows {
            gateway.sessions.wake(&rules, &row.envelope);
        }
        gateway.sessions.dispatched_through(through);
        after = through;
        // Let sessions and publishers run between large batches.
        tokio::time::sleep(Duration::ZERO).await;
    }
    Ok(())
}
