//! The status page: server-rendered HTML at `/` on the ops port for the
//! person on duty, in Chinese or English, with its stylesheet and logo
//! embedded in the binary and served under `/assets/`.
//!
//! It reads the same snapshots as the `liandong.v1.Operations` service
//! (`ops::snapshot`), plus the publish counts of the last five minutes and
//! hour and the open deadline breaches, each at the moment of the request.
//! It shows ids, counts, times and states, never case content; every value
//! is escaped. When the store cannot be read it still answers, with what
//! the process knows by itself, `503 Service Unavailable` and a notice in
//! both languages.
//!
//! - [`labels`]: every text of the page in both languages, one table.
//! - [`render`]: the HTML.
//! - [`assets`]: the embedded stylesheet, logo and refresh script.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use liandong_core::domain::Instant;
use liandong_core::pb;

use super::http::OpsState;
use crate::Gateway;
use crate::reports::SupervisionSettings;
use crate::store::activity::PublishCounts;
use crate::store::{LogThrottle, StoreError};

pub mod assets;
pub mod labels;
pub mod render;

pub use labels::{Label, Lang};

/// Seconds between automatic refreshes of the page (pausable).
pub const REFRESH_SECONDS: u32 = 10;

/// Certificates and CRLs closer than this to their end are highlighted.
pub const CERTIFICATE_WARNING_DAYS: i64 = 14;

/// Everything one rendering of the page shows, read at one moment. A
/// section whose read failed is `None`.
#[derive(Debug, Clone)]
pub struct PageData {
    /// When it was read.
    pub now: time::OffsetDateTime,
    /// The gateway's status; when the store could not be read, only what
    /// the process knows by itself (`status_read` false).
    pub status: pb::GatewayStatus,
    /// The status came from the store.
    pub status_read: bool,
    /// Every registered agency with its activity.
    pub agencies: Option<Vec<pb::AgencyActivity>>,
    /// Publishes per sender in the last five minutes and hour.
    pub rates: Option<Vec<PublishCounts>>,
    /// Subscriptions behind by at least one notification, worst first.
    pub lagging: Option<Vec<pb::SubscriptionState>>,
    /// Open deadline breaches.
    pub breaches: Option<Vec<pb::Signal>>,
}

impl PageData {
    /// Some read of the store failed.
    pub fn store_unreadable(&self) -> bool {
        !self.status_read
            || self.agencies.is_none()
            || self.rates.is_none()
            || self.lagging.is_none()
            || self.breaches.is_none()
    }
}

/// `GET /`: the status page, in the language `?lang=` names, else the one
/// `Accept-Language` prefers, else Chinese.
pub async fn index(State(state): State<OpsState>, uri: Uri, headers: HeaderMap) -> Response {
    let lang = choose_lang(
        uri.query(),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok()),
    );
    let data = gather(&state.gateway).await;
    respond(&data, lang)
}

/// The response that shows `data` in `lang`.
pub fn respond(data: &PageData, lang: Lang) -> Response {
    let code = if data.store_unreadable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (code, render::page(data, lang)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.code()),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-language"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(policy) = HeaderValue::from_str(&CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// Only the page's own stylesheet and images, and only the one inline
/// script whose hash this is.
static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src '{}'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        assets::script_hash()
    )
});

/// `GET /assets/{file}`: an embedded asset, cacheable; 404 for any other
/// name.
pub async fn asset(Path(file): Path<String>) -> Response {
    match assets::find(&file) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            asset.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            "no such asset\n",
        )
            .into_response(),
    }
}

/// The language of the page: `?lang=` when it names one, else
/// `Accept-Language`'s preference, else Chinese.
pub fn choose_lang(query: Option<&str>, accept_language: Option<&str>) -> Lang {
    let asked = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == "lang").then(|| Lang::from_query(value)).flatten()
        });
    asked
        .or_else(|| accept_language.and_then(Lang::from_accept_language))
        .unwrap_or(Lang::Zh)
}

/// Failures of the page's reads are logged once per interval, not once
/// per refresh of every open page.
static READ_FAILURES: LazyLock<LogThrottle> = LazyLock::new(LogThrottle::default);

fn logged<T>(section: &str, result: Result<T, StoreError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            if let Some(count) = READ_FAILURES.occurrence(section) {
                tracing::warn!(%error, ops.section = section, count, "the status page could not read the store");
            }
            None
        }
    }
}

/// Reads everything the page shows, now.
pub async fn gather(gateway: &Gateway) -> PageData {
    let now = Instant::now();
    let status = logged("status", super::snapshot::status(gateway).await);
    let agencies = logged("agencies", super::snapshot::agencies(gateway).await);
    let rates = logged("rates", gateway.store.publish_counts(now).await);
    let lagging = logged(
        "subscriptions",
        super::snapshot::subscriptions(
            gateway,
            &pb::ListSubscriptionsRequest {
                min_lag: 1,
                owner: String::new(),
            },
        )
        .await,
    )
    .map(|mut lagging| {
        sort_worst_first(&mut lagging);
        lagging
    });
    // Breach signals read no supervision setting (those are for the
    // penalty and filed-case signals); the defaults serve.
    let breaches = logged(
        "breaches",
        super::snapshot::breaches(gateway, &SupervisionSettings::default(), None).await,
    );
    let status_read = status.is_some();
    PageData {
        now: time::OffsetDateTime::now_utc(),
        status: status.unwrap_or_else(|| pb::GatewayStatus {
            // The store could not be read.
            store_healthy: false,
            ..super::snapshot::process_status(gateway)
        }),
        status_read,
        agencies,
        rates,
        lagging,
        breaches,
    }
}

/// Most notifications behind first, then the longest waiting.
pub fn sort_worst_first(subscriptions: &mut [pb::SubscriptionState]) {
    subscriptions.sort_by(|a, b| {
        (b.lag_messages, b.lag_seconds)
            .cmp(&(a.lag_messages, a.lag_seconds))
            .then_with(|| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)))
    });
}

#[cfg(test)]
mod tests;
