//! Client deadlines: a call whose `grpc-timeout` runs out before the gateway
//! answers gets `DEADLINE_EXCEEDED`, the code gRPC clients treat as "the
//! outcome is unknown, you may retry".
//!
//! # Why a layer of our own
//!
//! tonic's server reads `grpc-timeout` itself: `MakeSvc::call`
//! (`tonic/src/transport/server/mod.rs`) wraps every service in a
//! `GrpcTimeout` (`tonic/src/transport/service/grpc_timeout.rs`) *outside*
//! the layers a server is built with. When its sleep fires it fails the
//! call with `TimeoutExpired`, which `RecoverError` turns into
//! `CANCELLED("Timeout expired")` — the code a client reads as "I
//! cancelled", after which a client following the gRPC conventions does not
//! retry, and the notification is silently dropped.
//!
//! [`DeadlineLayer`] sits inside tonic's and expires first, for every RPC
//! (the whole answer of a unary call, the response headers of a streaming
//! one — after those, a stream runs until it ends, as under tonic's own
//! handling):
//! - tonic's `GrpcTimeout::call` calls the inner service (this layer)
//!   *before* it starts its own sleep, so the deadline taken here,
//!   `now + grpc-timeout`, is never later than tonic's;
//! - tonic's `ResponseFuture::poll` polls the inner future *before* its own
//!   sleep and returns the inner answer whenever it is ready;
//! - this layer's future compares the clock with its deadline on every poll
//!   (not only when its timer fires), so whenever tonic's timer has fired —
//!   the clock is then past tonic's deadline, hence past ours — the inner
//!   poll that precedes tonic's check already answers `DEADLINE_EXCEEDED`.
//!   The order of timer wake-ups, which tokio does not promise across timer
//!   wheels, plays no part.
//!
//! The header is parsed as tonic parses it (at most eight digits and a unit
//! of `H`, `M`, `S`, `m`, `u` or `n`); a header tonic ignores is ignored
//! here too.
//!
//! When the deadline answers, the handler's future is dropped. Handlers must
//! therefore hold nothing across an await that a drop could leave half done:
//! a publish runs as a task of its own (`api`), which completes or leaves
//! nothing whether or not anyone still waits for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// The request header carrying the client's deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Answers calls whose client deadline has passed with `DEADLINE_EXCEEDED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    /// The service that answers when the deadline has not passed.
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Taken before the inner call, hence before tonic's own sleep starts.
        let deadline = client_timeout(request.headers())
            .and_then(|timeout| Instant::now().checked_add(timeout));
        ResponseFuture {
            inner: self.inner.call(request),
            deadline,
            sleep: deadline.map(tokio::time::sleep_until),
        }
    }
}

pin_project! {
    /// The inner answer, or `DEADLINE_EXCEEDED` once the deadline passed.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        deadline: Option<Instant>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let ready @ Poll::Ready(_) = this.inner.poll(cx) {
            return ready;
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        let expired = Instant::now() >= deadline
            || this
                .sleep
                .as_pin_mut()
                .is_some_and(|sleep| sleep.poll(cx).is_ready());
        if expired {
            tracing::debug!("client deadline passed before the answer");
            return Poll::Ready(Ok(crate::error::deadline_exceeded().into_http()));
        }
        Poll::Pending
    }
}

/// The client's timeout from `grpc-timeout`, parsed as tonic parses it;
/// `None` when absent or malformed.
fn client_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let split = text.len().checked_sub(1)?;
    if !text.is_char_boundary(split) {
        return None;
    }
    let (digits, unit) = text.split_at(split);
    if digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
