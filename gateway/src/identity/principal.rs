//! Certificate → registered agency, once per request.
//!
//! An agency is identified by the single SAN URI of its verified leaf
//! certificate, looked up in the registry in force. [`ResolveCaller`] does
//! this once for every request, before any handler, and puts the resulting
//! [`Caller`] in the request's extensions; handlers and the refusal audit
//! read it from there and never resolve the peer again.
//!
//! An agency an operator has disabled is refused there too, before any
//! handler: `PERMISSION_DENIED` naming the operator's reason and marked
//! `liandong-refusal: agency-disabled` (`ApiError::AgencyDisabled`),
//! recorded in the audit log before it is answered (the status comes from
//! `error`).
//!
//! Identity never comes from a message field. Apart from that refusal,
//! this module refuses with an [`IdentityError`]; it never builds a gRPC
//! status and never writes the audit log (its caller records the refusal).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use liandong_core::registry::{Agency, Registry};

use super::connection::PeerIdentity;
use crate::Gateway;
use crate::audit;
use crate::error::ApiError;
use crate::refusals::Rpc;

/// A verified agency, as handlers see it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The registered agency.
    pub agency: Agency,
}

/// Why a peer is not a registered agency (`UNAUTHENTICATED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The connection carries no verified TLS peer.
    #[error("no verified client certificate")]
    NoPeer,
    /// The certificate's SAN URI is not registered.
    #[error("the certificate's identity is not a registered agency")]
    NotRegistered,
    /// The certificate carries no SAN URI, or more than one.
    #[error("the certificate must carry exactly one SAN URI")]
    NotOneUri,
}

/// Resolves a peer's identity to a registered agency: exactly one SAN URI,
/// registered. Anything else is refused, and logged.
pub fn authenticate(
    peer: Option<&PeerIdentity>,
    registry: &Registry,
) -> Result<Principal, IdentityError> {
    let Some(peer) = peer else {
        tracing::warn!("request without a verified TLS peer refused");
        return Err(IdentityError::NoPeer);
    };
    match peer.uris.as_slice() {
        [uri] => match registry.by_identity(uri) {
            Some(agency) => Ok(Principal {
                agency: agency.clone(),
            }),
            None => {
                tracing::warn!(peer.addr = %peer.remote_addr, peer.uri = %uri, "certificate names no registered agency; refused");
                Err(IdentityError::NotRegistered)
            }
        },
        uris => {
            tracing::warn!(peer.addr = %peer.remote_addr, peer.uri_count = uris.len(), "certificate without exactly one SAN URI; refused");
            Err(IdentityError::NotOneUri)
        }
    }
}

/// Who a request comes from, resolved once when it arrives.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A registered agency.
    Agency(Principal),
    /// Not a registered agency.
    Refused {
        /// What the peer presented, for the audit log: its certificate's
        /// SAN URIs, or `<no identity>`.
        presented: String,
        /// Why it is refused.
        error: IdentityError,
    },
}

impl Caller {
    /// Resolves `peer` against `registry`.
    pub fn resolve(peer: Option<&PeerIdentity>, registry: &Registry) -> Self {
        match authenticate(peer, registry) {
            Ok(principal) => Self::Agency(principal),
            Err(error) => Self::Refused {
                presented: peer
                    .map(|peer| peer.uris.join(" "))
                    .filter(|uris| !uris.is_empty())
                    .unwrap_or_else(|| "<no identity>".into()),
                error,
            },
        }
    }

    /// The name the audit log records for this caller: the agency's id,
    /// or what the peer presented.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Agency(principal) => principal.agency.id.to_string(),
            Self::Refused { presented, .. } => presented.clone(),
        }
    }

    /// The caller a request carries; a request that went through no
    /// [`ResolveCaller`] is refused as having no verified peer.
    pub fn of(extensions: &http::Extensions) -> Self {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Self::Refused {
                presented: "<no identity>".into(),
                error: IdentityError::NoPeer,
            })
    }
}

/// Resolves the caller of every request once, under the registry in force
/// when it arrives, and puts the [`Caller`] in its extensions.
#[derive(Debug, Clone)]
pub struct ResolveCaller<S> {
    inner: S,
    /// Where the registry in force is.
    gateway: Arc<Gateway>,
}

impl<S> ResolveCaller<S> {
    /// Wraps `inner` for `gateway`.
    pub fn new(inner: S, gateway: Arc<Gateway>) -> Self {
        Self { inner, gateway }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ResolveCaller<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for ResolveCaller<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let caller = Caller::resolve(
            request.extensions().get::<PeerIdentity>(),
            &self.gateway.rules().registry,
        );
        // Decided for each request, under the agency states in force now.
        let disabled = match &caller {
            Caller::Agency(principal) => self.gateway.agency_state(principal.agency.id.as_str()),
            Caller::Refused { .. } => None,
        };
        if let Some(disabled) = disabled {
            let peer = request
                .extensions()
                .get::<PeerIdentity>()
                .map(|peer| peer.remote_addr);
            let path = request.uri().path().to_owned();
            let gateway = self.gateway.clone();
            return Box::pin(async move {
                tracing::info!(agency.id = %disabled.agency, rpc = %path, "request of a disabled agency refused");
                let error = ApiError::AgencyDisabled(disabled);
                // Recorded under the RPC's refusal action.
                if let Some(entry) = audit::refused(Rpc::from_path(&path), &caller, &error)
                    && let Err(cause) = gateway.store.append_audit(&[entry.with_peer(peer)]).await
                {
                    tracing::error!(error = %cause, "could not record a refusal in the audit log");
                }
                Ok(tonic::Status::from(error).into_http())
            });
        }
        request.extensions_mut().insert(caller);
        Box::pin(self.inner.call(request))
    }
}
