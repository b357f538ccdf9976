//! Refusals made before any handler runs are audited like the others.
//!
//! A request whose message does not decode, or is over the size limit, is
//! refused by the codec (`liandong_proto::codec`) or by tonic's own length
//! check before the handler ever sees it, so the handler's audit cannot
//! record it. [`RefusalAudit`] wraps the Exchange and Supervision services: it notes which
//! RPC is called and by whom (the [`Caller`] `identity` resolved and put in
//! the request's extensions), and watches the status the call ends with — in
//! the response headers (a call refused outright) or in the trailers (a
//! stream refused midway). A status marked as the codec's refusal
//! ([`codec::DECODE_REFUSAL`], stripped here so it never leaves the
//! process), or `OUT_OF_RANGE` (which only tonic's length check answers in
//! this gateway), is recorded in the audit log with the caller's identity
//! and the RPC's own refusal action; so is `UNIMPLEMENTED` answering a
//! request that declares a `grpc-encoding` (the gateway accepts no
//! compressed messages and refuses them before reading any). Every other
//! status passes untouched: handlers audit their own refusals.
//!
//! The layer also puts the [`Rpc`] in the request's extensions, so a
//! handler refusing the caller audits under the RPC's action, and counts
//! every call that ends with an error status in the refusal metric
//! (`ops::metrics::answered`), whoever refused it.
//!
//! The audit write runs as a task of its own, so a caller that goes away
//! cannot cut it short; a refusal answered outright waits for it, as the
//! handlers' refusals do, so a caller sending undecodable requests is held
//! back by its own audit. It never records message content: only the
//! status code and its message, which name fields and sizes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use liandong_proto::codec;

use crate::Gateway;
use crate::audit::{self, Action};
use crate::error;
use crate::identity::Caller;

/// The Exchange or Supervision RPC a request calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `Publish`.
    Publish,
    /// `PublishStream`.
    PublishStream,
    /// `Subscribe`.
    Subscribe,
    /// `GetCase`.
    GetCase,
    /// `Supervision.ListSignals`.
    ListSignals,
    /// `Supervision.GetReport`.
    GetReport,
    /// Any call of the `Operations` service.
    Operations,
}

/// The methods of `liandong.v1.Operations`.
const OPERATIONS_METHODS: [&str; 9] = [
    "GetStatus",
    "ListAgencies",
    "ListSubscriptions",
    "DisableAgency",
    "EnableAgency",
    "SeekSubscription",
    "ListBreaches",
    "VerifyAudit",
    "GetReport",
];

impl Rpc {
    /// The RPC named by a request path, if it is one of the Exchange's,
    /// the Supervision service's or the Operations service's.
    pub fn from_path(path: &str) -> Option<Self> {
        if let Some(method) = path.strip_prefix("/liandong.v1.Operations/") {
            return OPERATIONS_METHODS
                .contains(&method)
                .then_some(Self::Operations);
        }
        if let Some(method) = path.strip_prefix("/liandong.v1.Supervision/") {
            return match method {
                "ListSignals" => Some(Self::ListSignals),
                "GetReport" => Some(Self::GetReport),
                _ => None,
            };
        }
        match path.strip_prefix("/liandong.v1.Exchange/")? {
            "Publish" => Some(Self::Publish),
            "PublishStream" => Some(Self::PublishStream),
            "Subscribe" => Some(Self::Subscribe),
            "GetCase" => Some(Self::GetCase),
            _ => None,
        }
    }

    /// The audit action recording a refusal of this RPC.
    pub fn refused_action(self) -> Action {
        Action::refused(Some(self))
    }
}

/// A service (Exchange or Supervision), with refusals made before its
/// handlers audited.
#[derive(Debug, Clone)]
pub struct RefusalAudit<S> {
    /// The Exchange service.
    inner: S,
    /// Where the audit log is, and the registry naming the caller.
    gateway: Arc<Gateway>,
}

impl<S> RefusalAudit<S> {
    /// Wraps `inner` (the Exchange server) for `gateway`.
    pub fn new(inner: S, gateway: Arc<Gateway>) -> Self {
        Self { inner, gateway }
    }
}

impl<S: NamedService> NamedService for RefusalAudit<S> {
    const NAME: &'static str = S::NAME;
}

/// Who made a call, and which: what a refusal's audit entry needs.
#[derive(Debug, Clone)]
struct Call {
    gateway: Arc<Gateway>,
    rpc: Option<Rpc>,
    caller: Caller,
    /// The request declares a compression (`grpc-encoding` other than
    /// `identity`).
    compressed: bool,
    /// The RPC as the refusal counter labels it.
    metric_rpc: &'static str,
}

impl Call {
    /// Audits the status in `headers` (response headers or trailers) when
    /// it is a refusal made before the handler, and strips the marker.
    /// Returns the audit write, when there is one.
    fn inspect(&self, headers: &mut HeaderMap) -> Option<JoinHandle<()>> {
        let marked = headers.remove(codec::DECODE_REFUSAL).is_some();
        let status = error::status_in(headers)?;
        crate::ops::metrics::answered(&self.caller, self.metric_rpc, status.code());
        let compression_refused = self.compressed && status.code() == Code::Unimplemented;
        (marked || status.code() == Code::OutOfRange || compression_refused)
            .then(|| self.record(&status))
    }

    fn record(&self, status: &Status) -> JoinHandle<()> {
        let entry = audit::refused_before_handler(
            self.rpc,
            &self.caller,
            code_name(status.code()),
            status.message(),
        );
        tracing::info!(agency.id = %entry.agency, audit.action = entry.action, code = ?status.code(), "request refused before its handler: undecodable, too large or compressed");
        let gateway = self.gateway.clone();
        tokio::spawn(async move {
            if let Err(cause) = gateway.store.append_audit(&[entry]).await {
                tracing::error!(error = %cause, "could not record a refusal in the audit log");
            }
        })
    }
}

/// The status code as the audit log spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        _ => "REFUSED",
    }
}

impl<S> Service<Request<Body>> for RefusalAudit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let rpc = Rpc::from_path(request.uri().path());
        if let Some(rpc) = rpc {
            request.extensions_mut().insert(rpc);
        }
        let compressed = request
            .headers()
            .get("grpc-encoding")
            .is_some_and(|encoding| encoding.as_bytes() != b"identity");
        let call = Call {
            gateway: self.gateway.clone(),
            rpc,
            caller: Caller::of(request.extensions()),
            compressed,
            metric_rpc: crate::ops::metrics::rpc_label(request.uri().path()),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let (mut parts, body) = response.into_parts();
            // A refusal answered at once is sent after its record is
            // written: a caller sending undecodable requests waits for the
            // audit as any refused caller does. (A stream's refusal in its
            // trailers cannot wait; its write runs on.)
            if let Some(write) = call.inspect(&mut parts.headers) {
                let _ = write.await;
            }
            let body = Body::new(Watched {
                inner: body,
                call: Some(call),
            });
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// A response body whose trailers are inspected like the headers.
struct Watched {
    inner: Body,
    /// Taken when the trailers are seen.
    call: Option<Call>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &mut frame
            && let Some(trailers) = frame.trailers_mut()
            && let Some(call) = self.call.take()
        {
            // Its write runs on its own: see `call`.
            let _write = call.inspect(trailers);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
