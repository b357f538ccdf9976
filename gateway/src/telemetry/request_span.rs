//! One `request` span per gRPC call, and one line when it finishes.
//!
//! [`RequestSpan`] wraps a gRPC service inside `identity::ResolveCaller`,
//! so the [`Caller`] is already in the request's extensions when the span
//! opens. The span carries `agency` (the registered agency calling; for a
//! certificate that names none, `peer.identity` holds what it presented),
//! `rpc` (the gRPC path, e.g. `/liandong.v1.Exchange/Publish`) and `peer`
//! (the socket address). The handler runs inside it, and so does every
//! poll of the response body, so everything logged while the call is
//! served carries those fields.
//!
//! The status is recorded as soon as it is known: from the response
//! headers (a call answered with its status at once) or from the trailers
//! (an answer with a body, a stream). With it go `elapsed_ms` and, for
//! the codes that mean the gateway failed, `otel.status_code = "error"`.
//! When the call is over (its body sent, or the caller gone) one line is
//! logged: INFO for `OK`, WARN for any other status, INFO when the call
//! ended before its status was sent (the caller left, or its deadline
//! passed and `deadline::DeadlineLayer`, outside, answered
//! `DEADLINE_EXCEEDED` itself).
//!
//! A call carrying a W3C `traceparent` header continues the caller's
//! trace: exported, its span is a child of the caller's.
//!
//! It never reads a message: only the path, the trace header, the status
//! and the caller's identity.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Code;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::identity::{Caller, PeerIdentity};

/// Wraps a gRPC service so that each call runs in its own `request` span.
#[derive(Debug, Clone)]
pub struct RequestSpan<S> {
    inner: S,
}

impl<S> RequestSpan<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for RequestSpan<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for RequestSpan<S>
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let span = span_for(&request);
        let finish = Finish {
            span: span.clone(),
            started: Instant::now(),
            status: None,
        };
        let answer = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let mut finish = finish;
            let response = answer.instrument(span).await?;
            let (parts, body) = response.into_parts();
            if let Some(code) = status_of(&parts.headers) {
                finish.record(code);
            }
            let body = Body::new(SpanBody {
                inner: body,
                finish: Some(finish),
            });
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// The `request` span of a call, with what is known when it arrives.
fn span_for(request: &Request<Body>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        agency = Empty,
        peer.identity = Empty,
        rpc = %request.uri().path(),
        peer = Empty,
        grpc.status = Empty,
        elapsed_ms = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
    );
    match Caller::of(request.extensions()) {
        Caller::Agency(principal) => {
            span.record("agency", tracing::field::display(&principal.agency.id));
        }
        Caller::Refused { presented, .. } => {
            span.record("peer.identity", tracing::field::display(&presented));
        }
    }
    if let Some(peer) = request.extensions().get::<PeerIdentity>() {
        span.record("peer", tracing::field::display(peer.remote_addr));
    }
    if request.headers().contains_key(TRACEPARENT) {
        use opentelemetry::propagation::TextMapPropagator as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
        // Without span export there is no trace to join: nothing to do.
        let _ = span.set_parent(parent);
    }
    span
}

/// The W3C Trace Context header a caller continues its trace with.
const TRACEPARENT: &str = "traceparent";

/// The `grpc-status` of headers or trailers, if they carry one.
fn status_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(Status::GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// Whether `code` says the gateway failed (OpenTelemetry's rule for
/// gRPC servers): those spans are marked as errors.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A call's span and clock; logs the call's one line when dropped, that
/// is when the call is over however it ended.
struct Finish {
    span: tracing::Span,
    started: Instant,
    /// The status, once sent.
    status: Option<Code>,
}

impl Finish {
    /// Records the status the call ends with (once).
    fn record(&mut self, code: Code) {
        if self.status.is_some() {
            return;
        }
        self.status = Some(code);
        self.span.record("grpc.status", code as i32);
        self.span
            .record("elapsed_ms", elapsed_ms(self.started.elapsed()));
        if is_server_error(code) {
            self.span.record("otel.status_code", "error");
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        let elapsed_ms = elapsed_ms(self.started.elapsed());
        match self.status {
            Some(Code::Ok) => tracing::info!(
                grpc.status = Code::Ok as i32,
                grpc.code = ?Code::Ok,
                elapsed_ms,
                "request finished"
            ),
            Some(code) => tracing::warn!(
                grpc.status = code as i32,
                grpc.code = ?code,
                elapsed_ms,
                "request finished"
            ),
            None => tracing::info!(elapsed_ms, "request ended before its status was sent"),
        }
    }
}

/// Milliseconds, to the microsecond.
fn elapsed_ms(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_micros() as f64) / 1000.0
}

/// A response body polled inside the call's span, whose trailers give the
/// status of a call answered with a body.
struct SpanBody {
    inner: Body,
    /// Dropped with the body: the call is over.
    finish: Option<Finish>,
}

impl HttpBody for SpanBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let span = this.finish.as_ref().map(|finish| finish.span.clone());
        let entered = span.as_ref().map(tracing::Span::enter);
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(finish) = this.finish.as_mut()
                {
                    finish.record(code);
                }
            }
            Some(Err(status)) => {
                if let Some(finish) = this.finish.as_mut() {
                    finish.record(status.code());
                }
            }
            None => {}
        }
        if frame.is_none() {
            // The body is over: the line is logged now, not when hyper
            // gets round to dropping it.
            drop(entered);
            this.finish = None;
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
