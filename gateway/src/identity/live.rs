//! The TLS configuration in force and the live connections accepted under
//! it.
//!
//! A reload puts a new [`TlsMaterial`] in force ([`TlsState`]); the accept
//! loop takes the one in force for each new connection. Every live
//! connection is registered with its peer address, its client identity
//! (SAN URIs) and its certificate chain, which allows two things: capping
//! the connections one identity holds, and re-verifying every live chain
//! with the verifier in force after each reload and periodically
//! ([`recheck`]), closing those that no longer pass (revoked, expired, CA
//! removed, CRL expired).
//!
//! An agency an operator disables has its live connections closed
//! ([`LiveConnections::close_identity`]).
//!
//! It never decides who a peer is in the registry (that is `principal`'s).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use tokio_util::sync::CancellationToken;

use super::tls::TlsMaterial;
use crate::Gateway;
use crate::audit;

/// How often every live connection's chain is verified again, so that a
/// certificate or CRL that expires while connected ends the connection.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The TLS configuration in force and the live connections.
#[derive(Debug, Default)]
pub struct TlsState {
    /// The material new connections are accepted with; replaced whole on
    /// reload. `None` only before the gateway is prepared.
    material: ArcSwapOption<TlsMaterial>,
    /// Connections whose handshake completed and that are still open.
    pub connections: LiveConnections,
}

impl TlsState {
    /// The material in force.
    pub fn current(&self) -> Option<Arc<TlsMaterial>> {
        self.material.load_full()
    }

    /// Puts `material` in force for every new connection.
    pub fn put_in_force(&self, material: TlsMaterial) -> Arc<TlsMaterial> {
        let material = Arc::new(material);
        self.material.store(Some(material.clone()));
        material
    }
}

/// The live TLS connections, by id.
#[derive(Debug, Default, Clone)]
pub struct LiveConnections {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Mutex<HashMap<u64, Live>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Live {
    peer: SocketAddr,
    identity: String,
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    close: CancellationToken,
    /// When the connection was registered (its handshake completed).
    since: SystemTime,
}

/// One more connection would exceed the identity's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection cap {cap} reached")]
pub struct CapReached {
    /// The cap.
    pub cap: u32,
}

/// A connection that failed re-verification and was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Its client identity.
    pub identity: String,
    /// Why its chain no longer passes.
    pub reason: String,
}

/// A live connection's place in the registry; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    inner: Arc<Inner>,
    /// Cancelled when the connection must close.
    pub close: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.inner.entries.lock() {
            entries.remove(&self.id);
        }
    }
}

impl LiveConnections {
    /// Registers a verified connection of `identity` from `peer` with its
    /// certificate chain (leaf first), unless `identity` already holds
    /// `cap` connections.
    pub fn register(
        &self,
        peer: SocketAddr,
        identity: &str,
        chain: &[CertificateDer<'static>],
        cap: u32,
    ) -> Result<Registration, CapReached> {
        let mut entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        let held = entries.values().filter(|l| l.identity == identity).count();
        if held >= cap as usize {
            return Err(CapReached { cap });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        let (end_entity, intermediates) = match chain.split_first() {
            Some((leaf, rest)) => (leaf.clone(), rest.to_vec()),
            None => (CertificateDer::from(Vec::new()), Vec::new()),
        };
        entries.insert(
            id,
            Live {
                peer,
                identity: identity.to_owned(),
                end_entity,
                intermediates,
                close: close.clone(),
                since: SystemTime::now(),
            },
        );
        Ok(Registration {
            id,
            inner: self.inner.clone(),
            close,
        })
    }

    /// Closes every live connection of `identity` (an agency an operator
    /// disabled) and returns their peers' addresses.
    pub fn close_identity(&self, identity: &str) -> Vec<SocketAddr> {
        let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .filter(|live| live.identity == identity)
            .map(|live| {
                live.close.cancel();
                live.peer
            })
            .collect()
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().map_or(0, |e| e.len())
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live connections per client identity (the SAN URIs, space
    /// separated), with when the oldest of them was registered. Read-only.
    pub fn per_identity(&self) -> HashMap<String, (u32, SystemTime)> {
        let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: HashMap<String, (u32, SystemTime)> = HashMap::new();
        for live in entries.values() {
            counts
                .entry(live.identity.clone())
                .and_modify(|(count, since)| {
                    *count += 1;
                    *since = (*since).min(live.since);
                })
                .or_insert((1, live.since));
        }
        counts
    }

    /// Verifies every live connection's chain again with `verifier` as of
    /// `now`, closes those that fail and returns them.
    pub fn reverify(&self, verifier: &dyn ClientCertVerifier, now: UnixTime) -> Vec<Closed> {
        let snapshot: Vec<_> = {
            let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .values()
                .map(|live| {
                    (
                        live.peer,
                        live.identity.clone(),
                        live.end_entity.clone(),
                        live.intermediates.clone(),
                        live.close.clone(),
                    )
                })
                .collect()
        };
        let mut closed = Vec::new();
        for (peer, identity, leaf, intermediates, close) in snapshot {
            if let Err(error) = verifier.verify_client_cert(&leaf, &intermediates, now) {
                close.cancel();
                closed.push(Closed {
                    peer,
                    identity,
                    reason: error.to_string(),
                });
            }
        }
        closed
    }
}

/// Re-verifies every live connection under the TLS material in force,
/// closing, logging and auditing those that no longer pass.
pub async fn recheck(gateway: &Gateway) {
    let Some(material) = gateway.tls.current() else {
        return;
    };
    let closed = gateway
        .tls
        .connections
        .reverify(material.verifier.as_ref(), UnixTime::now());
    for closed in closed {
        let reason = format!("certificate no longer valid: {}", closed.reason);
        tracing::warn!(peer.addr = %closed.peer, peer.uri = %closed.identity, %reason, "live connection closed");
        if let Err(error) = gateway
            .store
            .append_audit(&[audit::tls_refused(closed.peer, &reason)])
            .await
        {
            tracing::error!(%error, peer.addr = %closed.peer, "cannot audit a closed connection");
        }
    }
}

/// Re-verifies the live connections every [`RECHECK_INTERVAL`] until the
/// gateway stops.
pub async fn recheck_periodically(gateway: Arc<Gateway>) {
    let mut ticks = tokio::time::interval(RECHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => recheck(&gateway).await,
            () = gateway.stop.cancelled() => return,
        }
    }
}
