//! The subscription leases this process holds: one session of a durable
//! subscription at a time across every gateway replica on the database.
//!
//! A session acquires its subscription's lease ([`LeaseKeeper::acquire`])
//! before it reads or sends anything. A second session of the same
//! subscription on this process shares the lease of the first, which the
//! in-memory takeover of `wake` then ends: a local takeover never waits on
//! the database. When another process holds the lease, the open records a
//! takeover request and waits for the holder to end its session, write its
//! cursor and release the lease; a holder that died is waited for until
//! its lease expires. Past the lease duration plus [`TAKEOVER_MARGIN`] the
//! open is refused, so two sessions never run at once.
//!
//! One task per process renews every lease it holds in one write each
//! third of the lease duration; another looks for takeover requests on
//! them every [`CHECK_INTERVAL`] (or at once, on [`LeaseKeeper::check_now`]);
//! both run only while the process holds a lease. A session may send only
//! while its lease is valid in memory: until four fifths of the lease
//! duration after the start of the last renewal that succeeded (the
//! database's expiry is at least a full duration after it), checked before
//! each frame it hands to its stream ([`LeaseHold::check`]). A lease that
//! lapses, or that a renewal finds taken by another process, ends its
//! sessions; a takeover request ends them as replaced.
//!
//! This module never sends or reads notifications; it tells sessions
//! whether they may.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::leases::Acquire;
use crate::store::{LogThrottle, Store, StoreError};

use super::SessionEnd;

#[cfg(test)]
mod tests;

/// How often this process looks for takeover requests on its leases,
/// while it holds any.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How often an open waiting for another process to hand a subscription
/// over looks whether it did.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Added to the lease duration: how long an open waits for another
/// process to hand the subscription over (a process that died: for its
/// lease to expire) before it is refused.
pub const TAKEOVER_MARGIN: Duration = Duration::from_secs(2);

/// How long after the start of a successful renewal (or acquisition) a
/// session may still send: four fifths of the lease duration, the rest a
/// safety margin before the lease can expire at the database.
pub fn valid_for(duration: Duration) -> Duration {
    duration * 4 / 5
}

/// A random id for this process: `host:pid:random`.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned());
    let mut random = [0u8; 4];
    // Without randomness the pid still tells processes of one host apart.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    format!("{host}:{}:{}", std::process::id(), hex::encode(random))
}

/// Why this process lost a subscription's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldLoss {
    /// No renewal succeeded for so long that the lease may have expired
    /// at the database.
    NotRenewed {
        /// Seconds since the start of the last renewal that succeeded.
        seconds: u64,
    },
    /// A renewal found the lease held by another process (or gone).
    TakenOver,
}

impl std::fmt::Display for HoldLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRenewed { seconds } => {
                write!(f, "its lease could not be renewed for {seconds} s")
            }
            Self::TakenOver => f.write_str("a renewal found its lease taken over"),
        }
    }
}

/// A subscription: its owner and name.
type Key = (String, String);

/// One open's turn to acquire a subscription from the database.
type Turn = Arc<tokio::sync::Mutex<()>>;

/// How a lease's sessions end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Another process asked to take the subscription over.
    Replaced,
    /// The lease was lost.
    Lost(HoldLoss),
}

/// One lease this process holds in the database.
#[derive(Debug)]
struct Lease {
    key: Key,
    /// Which of this process's acquisitions it is.
    hold: u64,
    /// Sessions of this process using it; changed only under the keeper's
    /// lock.
    users: AtomicUsize,
    /// Start of the last renewal (or the acquisition) that succeeded.
    renewed: Mutex<Instant>,
    /// Set once, by the first reason its sessions must end.
    ending: Mutex<Option<Ending>>,
    /// Cancelled when `ending` is set.
    ended: CancellationToken,
}

impl Lease {
    fn new(key: Key, hold: u64, started: Instant) -> Self {
        Self {
            key,
            hold,
            users: AtomicUsize::new(1),
            renewed: Mutex::new(started),
            ending: Mutex::new(None),
            ended: CancellationToken::new(),
        }
    }

    fn renewed_at(&self) -> Instant {
        *lock(&self.renewed)
    }

    fn ending(&self) -> Option<Ending> {
        lock(&self.ending).clone()
    }

    /// Ends its sessions for `why`, unless they end already.
    fn end(&self, why: Ending) {
        let mut ending = lock(&self.ending);
        if ending.is_none() {
            *ending = Some(why);
            self.ended.cancel();
        }
    }

    /// Records a renewal that started at `started` and succeeded (a lease
    /// that already ended stays ended).
    fn renew(&self, started: Instant) {
        if self.ending().is_some() {
            return;
        }
        let mut renewed = lock(&self.renewed);
        *renewed = (*renewed).max(started);
    }

    /// True while sessions may send under it.
    fn live(&self, duration: Duration, now: Instant) -> bool {
        self.ending().is_none() && now < self.renewed_at() + valid_for(duration)
    }

    /// Ends it as lapsed when its validity has passed at `now`; true when
    /// it has ended (now or before).
    fn lapse_if_due(&self, duration: Duration, now: Instant) -> bool {
        let renewed = self.renewed_at();
        if self.ending().is_none() && now >= renewed + valid_for(duration) {
            self.end(Ending::Lost(HoldLoss::NotRenewed {
                seconds: now.duration_since(renewed).as_secs(),
            }));
        }
        self.ending().is_some()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The leases of this process. Cloning is cheap: clones share them.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// This process's instance id, the holder named in its leases.
    instance: String,
    /// How long a lease lasts unless renewed.
    duration: Duration,
    store: Store,
    /// Cancelled when the gateway stops: the tasks end.
    stop: CancellationToken,
    next_hold: AtomicU64,
    /// The current lease of each subscription this process holds.
    held: Mutex<HashMap<Key, Arc<Lease>>>,
    /// One open at a time per subscription acquires from the database;
    /// others of the same subscription on this process wait and share.
    acquiring: Mutex<HashMap<Key, Turn>>,
    /// Makes the takeover check run at once.
    check: Notify,
    /// A lease was added: the tasks have work again.
    added: Notify,
    tasks_started: AtomicBool,
}

impl LeaseKeeper {
    /// The leases `instance` will hold in `store`, each lasting `duration`
    /// unless renewed; its tasks end with `stop`.
    pub fn new(
        store: Store,
        instance: String,
        duration: Duration,
        stop: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                instance,
                duration,
                store,
                stop,
                next_hold: AtomicU64::new(0),
                held: Mutex::new(HashMap::new()),
                acquiring: Mutex::new(HashMap::new()),
                check: Notify::new(),
                added: Notify::new(),
                tasks_started: AtomicBool::new(false),
            }),
        }
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// How long a lease lasts unless renewed.
    pub fn duration(&self) -> Duration {
        self.shared.duration
    }

    /// How long an open waits for another process to hand a subscription
    /// over before it is refused.
    pub fn takeover_wait(&self) -> Duration {
        self.shared.duration + TAKEOVER_MARGIN
    }

    /// Makes the look for takeover requests run at once (a PostgreSQL
    /// notification on `liandong_leases` says one was recorded).
    pub fn check_now(&self) {
        self.shared.check.notify_one();
    }

    /// How many leases this process holds.
    pub fn len(&self) -> usize {
        lock(&self.shared.held).len()
    }

    /// True when this process holds no lease.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Acquires `owner`'s subscription `name` for a session of this
    /// process: shares the lease a live session here holds already, or
    /// takes it in the database (free, expired, or this process's). When
    /// another process holds it, asks for it and waits for it to be
    /// handed over, at most [`takeover_wait`](Self::takeover_wait).
    pub async fn acquire(&self, owner: &str, name: &str) -> Result<LeaseHold, AcquireError> {
        let key = (owner.to_owned(), name.to_owned());
        if let Some(hold) = self.share(&key) {
            return Ok(hold);
        }
        let turn = TurnGuard::new(self, &key);
        let _turn = turn.turn.lock().await;
        // The open before this one may have acquired it meanwhile.
        match self.share(&key) {
            Some(hold) => Ok(hold),
            None => self.acquire_in_store(&key).await,
        }
    }

    /// A share of the live lease this process holds for `key`, if any.
    fn share(&self, key: &Key) -> Option<LeaseHold> {
        let held = lock(&self.shared.held);
        let lease = held.get(key)?;
        if !lease.live(self.shared.duration, Instant::now()) {
            return None;
        }
        lease.users.fetch_add(1, Ordering::SeqCst);
        Some(LeaseHold {
            keeper: self.clone(),
            lease: lease.clone(),
            released: false,
        })
    }

    async fn acquire_in_store(&self, key: &Key) -> Result<LeaseHold, AcquireError> {
        let shared = &self.shared;
        let (owner, name) = (key.0.as_str(), key.1.as_str());
        let mut until = None;
        loop {
            let hold = shared.next_hold.fetch_add(1, Ordering::Relaxed) + 1;
            let started = Instant::now();
            match shared
                .store
                .acquire_lease(owner, name, &shared.instance, hold, shared.duration)
                .await?
            {
                Acquire::Acquired { expired_holder } => {
                    if let Some(previous) = expired_holder {
                        tracing::info!(agency.id = %owner, subscription.name = %name, lease.previous = %previous, "subscription lease taken over after the holder let it expire");
                    }
                    return Ok(self.add(key, hold, started));
                }
                Acquire::Held { holder, expires_in } => {
                    if until.is_none() {
                        tracing::info!(agency.id = %owner, subscription.name = %name, lease.holder = %holder, lease.expires_in_ms = expires_in.as_millis() as u64, "subscription held by another gateway process; asked it to hand over");
                        until = Some(Instant::now() + self.takeover_wait());
                    }
                }
            }
            let until = until.unwrap_or_else(Instant::now);
            // Until it is free, expired, ours, or our request was
            // overtaken by another (then asked again).
            loop {
                let now = Instant::now();
                if now >= until {
                    tracing::warn!(agency.id = %owner, subscription.name = %name, wait_ms = self.takeover_wait().as_millis() as u64, "subscription not handed over by the gateway process holding it; open refused");
                    return Err(AcquireError::HeldElsewhere {
                        seconds: self.takeover_wait().as_secs(),
                    });
                }
                tokio::select! {
                    () = shared.stop.cancelled() => return Err(AcquireError::ShuttingDown),
                    () = tokio::time::sleep(WAIT_POLL.min(until - now)) => {}
                }
                match shared.store.lease(owner, name).await? {
                    None => break,
                    Some(state) if state.holder == shared.instance || state.expired() => break,
                    Some(state) if state.takeover_by.as_deref() != Some(&shared.instance) => break,
                    Some(_) => {}
                }
            }
        }
    }

    /// Records a lease acquired in the database as `hold`, whose write
    /// started at `started`.
    fn add(&self, key: &Key, hold: u64, started: Instant) -> LeaseHold {
        let lease = Arc::new(Lease::new(key.clone(), hold, started));
        let previous = lock(&self.shared.held).insert(key.clone(), lease.clone());
        if let Some(previous) = previous {
            // Not live, or it would have been shared: its sessions end as
            // they were going to; their release finds nothing to delete.
            previous.end(Ending::Replaced);
        }
        self.start_tasks();
        self.shared.added.notify_waiters();
        LeaseHold {
            keeper: self.clone(),
            lease,
            released: false,
        }
    }

    /// Drops one session's use of `lease`; the last use removes it and
    /// queues its deletion (after every write queued before, such as the
    /// session's last cursor write).
    fn release(&self, lease: &Arc<Lease>) -> Option<impl Future<Output = ()> + use<>> {
        let mut held = lock(&self.shared.held);
        if lease.users.fetch_sub(1, Ordering::SeqCst) > 1 {
            return None;
        }
        if held
            .get(&lease.key)
            .is_some_and(|current| Arc::ptr_eq(current, lease))
        {
            held.remove(&lease.key);
        }
        let released = self.shared.store.queue_release_lease(
            &lease.key.0,
            &lease.key.1,
            &self.shared.instance,
            lease.hold,
        );
        drop(held);
        let (owner, name) = lease.key.clone();
        Some(async move {
            match released.await {
                Ok(true) => {
                    tracing::debug!(agency.id = %owner, subscription.name = %name, "subscription lease released");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(agency.id = %owner, subscription.name = %name, %error, "subscription lease not released; it expires unless renewed");
                }
            }
        })
    }

    fn start_tasks(&self) {
        if self.shared.tasks_started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(self.clone().renew_loop());
        tokio::spawn(self.clone().check_loop());
    }

    /// The leases renewals keep: those whose sessions still run.
    fn current(&self) -> Vec<Arc<Lease>> {
        lock(&self.shared.held).values().cloned().collect()
    }

    /// Waits until this process holds a lease; false when the gateway
    /// stops first.
    async fn wait_for_leases(&self) -> bool {
        loop {
            let added = self.shared.added.notified();
            if !self.is_empty() {
                return true;
            }
            tokio::select! {
                () = self.shared.stop.cancelled() => return false,
                () = added => {}
            }
        }
    }

    /// Ends the leases whose validity passed; returns the earliest time
    /// one of the others lapses.
    fn lapse_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let duration = self.shared.duration;
        let mut held = lock(&self.shared.held);
        let mut earliest: Option<Instant> = None;
        held.retain(|_, lease| {
            if lease.lapse_if_due(duration, now) {
                if let Some(Ending::Lost(loss)) = lease.ending() {
                    tracing::warn!(agency.id = %lease.key.0, subscription.name = %lease.key.1, %loss, "subscription lease lost; its session stops sending");
                }
                // Kept (not renewed) while a replaced session still ends.
                return matches!(lease.ending(), Some(Ending::Replaced));
            }
            let until = lease.renewed_at() + valid_for(duration);
            earliest = Some(earliest.map_or(until, |e| e.min(until)));
            true
        });
        earliest
    }

    /// Renews every lease each third of the lease duration, in one write,
    /// while the process holds any; ends those that lapse meanwhile.
    async fn renew_loop(self) {
        let shared = self.shared.clone();
        let interval = shared.duration / 3;
        let log = LogThrottle::default();
        let mut failing = false;
        while self.wait_for_leases().await {
            let next = Instant::now() + interval;
            // Until the next renewal, lapsed leases end at their time.
            loop {
                let until = self.lapse_due().map_or(next, |lapse| lapse.min(next));
                tokio::select! {
                    () = shared.stop.cancelled() => return,
                    () = tokio::time::sleep_until(until) => {}
                }
                if Instant::now() >= next {
                    break;
                }
            }
            let leases: Vec<Arc<Lease>> = self
                .current()
                .into_iter()
                .filter(|lease| lease.ending() != Some(Ending::Lost(HoldLoss::TakenOver)))
                .collect();
            if leases.is_empty() {
                continue;
            }
            let holds: Vec<u64> = leases.iter().map(|lease| lease.hold).collect();
            let started = Instant::now();
            let renewal = shared
                .store
                .renew_leases(&shared.instance, &holds, shared.duration);
            tokio::pin!(renewal);
            // A renewal waiting on the store does not keep leases from
            // lapsing at their time.
            let renewed = loop {
                let lapse = self.lapse_due();
                tokio::select! {
                    () = shared.stop.cancelled() => return,
                    renewed = &mut renewal => break renewed,
                    () = sleep_until(lapse), if lapse.is_some() => {}
                }
            };
            match renewed {
                Ok(renewed) => {
                    if failing {
                        tracing::info!(leases = holds.len(), "subscription leases renewed again");
                    }
                    failing = false;
                    self.apply_renewal(&leases, &renewed, started);
                }
                Err(error) => {
                    failing = true;
                    if let Some(count) = log.occurrence(&error.to_string()) {
                        tracing::warn!(%error, leases = holds.len(), occurrences = count, "cannot renew subscription leases; their sessions stop sending if this lasts");
                    }
                }
            }
        }
    }

    fn apply_renewal(
        &self,
        leases: &[Arc<Lease>],
        renewed: &[crate::store::leases::Renewed],
        started: Instant,
    ) {
        let by_hold: HashMap<u64, bool> = renewed
            .iter()
            .map(|r| (r.hold, r.takeover_requested))
            .collect();
        let mut held = lock(&self.shared.held);
        for lease in leases {
            if lease.users.load(Ordering::SeqCst) == 0 {
                // Released while the renewal ran: deleted, not taken.
                continue;
            }
            match by_hold.get(&lease.hold) {
                Some(takeover) => {
                    lease.renew(started);
                    if *takeover {
                        self.replaced(lease);
                    }
                }
                None => {
                    if lease.ending().is_none() {
                        tracing::warn!(agency.id = %lease.key.0, subscription.name = %lease.key.1, "subscription lease found taken over at renewal; its session ends");
                    }
                    lease.end(Ending::Lost(HoldLoss::TakenOver));
                    if held
                        .get(&lease.key)
                        .is_some_and(|current| Arc::ptr_eq(current, lease))
                    {
                        held.remove(&lease.key);
                    }
                }
            }
        }
    }

    fn replaced(&self, lease: &Lease) {
        if lease.ending().is_none() {
            tracing::info!(agency.id = %lease.key.0, subscription.name = %lease.key.1, "another gateway process asked for the subscription; its session here ends");
        }
        lease.end(Ending::Replaced);
    }

    /// Looks for takeover requests on this process's leases every
    /// [`CHECK_INTERVAL`], or at once on [`check_now`](Self::check_now),
    /// while it holds any.
    async fn check_loop(self) {
        let shared = self.shared.clone();
        let log = LogThrottle::default();
        while self.wait_for_leases().await {
            tokio::select! {
                () = shared.stop.cancelled() => return,
                () = shared.check.notified() => {}
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
            if self.is_empty() {
                continue;
            }
            match shared.store.takeover_requests(&shared.instance).await {
                Ok(holds) => {
                    for lease in self.current() {
                        if holds.contains(&lease.hold) {
                            self.replaced(&lease);
                        }
                    }
                }
                Err(error) => {
                    if let Some(count) = log.occurrence(&error.to_string()) {
                        tracing::warn!(%error, occurrences = count, "cannot look for takeover requests on subscription leases; retrying");
                    }
                }
            }
        }
    }
}

/// An open's place in the queue of opens of one subscription on this
/// process; the queue is forgotten when the last place is given up (also
/// by an open that was cancelled).
struct TurnGuard<'k> {
    keeper: &'k LeaseKeeper,
    key: Key,
    turn: Turn,
}

impl<'k> TurnGuard<'k> {
    fn new(keeper: &'k LeaseKeeper, key: &Key) -> Self {
        let turn = lock(&keeper.shared.acquiring)
            .entry(key.clone())
            .or_default()
            .clone();
        Self {
            keeper,
            key: key.clone(),
            turn,
        }
    }
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let mut acquiring = lock(&self.keeper.shared.acquiring);
        // This place and the queue's own reference: nobody else waits.
        if Arc::strong_count(&self.turn) == 2 {
            acquiring.remove(&self.key);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why a lease could not be acquired.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Another process holds it and did not hand it over in time.
    #[error(
        "another gateway process holds the subscription and did not hand it over within {seconds} s"
    )]
    HeldElsewhere {
        /// How long the open waited.
        seconds: u64,
    },
    /// The gateway is stopping.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session's use of its subscription's lease. Released with
/// [`release`](Self::release) after the session's last cursor write, or
/// when dropped.
#[derive(Debug)]
pub struct LeaseHold {
    keeper: LeaseKeeper,
    lease: Arc<Lease>,
    released: bool,
}

impl LeaseHold {
    /// `Ok` while the session may send under the lease; checked in memory
    /// before each frame it hands to its stream.
    pub fn check(&self) -> Result<(), SessionEnd> {
        let duration = self.keeper.shared.duration;
        if self.lease.lapse_if_due(duration, Instant::now()) {
            return Err(self.end());
        }
        Ok(())
    }

    /// Completes when the session must end ([`end`](Self::end) says why).
    pub async fn ended(&self) {
        self.lease.ended.cancelled().await;
    }

    /// How the session ends now that its lease ended: replaced (another
    /// process asked for the subscription) or with the hold lost.
    pub fn end(&self) -> SessionEnd {
        match self.lease.ending() {
            Some(Ending::Lost(loss)) => SessionEnd::HoldLost(loss),
            Some(Ending::Replaced) | None => SessionEnd::Replaced,
        }
    }

    /// True once the lease ended.
    pub fn has_ended(&self) -> bool {
        self.lease.ending().is_some()
    }

    /// The lease's hold number in the database.
    pub fn hold(&self) -> u64 {
        self.lease.hold
    }

    /// Ends this session's use of the lease; the last use deletes it in
    /// the database, queued now (after every write this process queued
    /// before) and awaited by the returned future.
    pub fn release(&mut self) -> impl Future<Output = ()> + use<> {
        let released = if self.released {
            None
        } else {
            self.released = true;
            self.keeper.release(&self.lease)
        };
        async move {
            if let Some(released) = released {
                released.await;
            }
        }
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        if let Some(released) = self.keeper.release(&self.lease)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(released);
        }
    }
}
