//! Logs and traces: the process-wide `tracing` subscriber.
//!
//! Logs go to standard error, filtered by `LIANDONG_LOG` (default `info`),
//! as human-readable lines ([`LogFormat::Pretty`]) or one JSON object per
//! line ([`LogFormat::Json`]) with the timestamp, level, target, the event's
//! fields and the fields of the spans it happened in. Colour codes are
//! written only when standard error is a terminal and `NO_COLOR` is not
//! set ([`use_ansi`]), so a log file never holds escape codes.
//!
//! When `[tracing] otlp_endpoint` is set, spans are also exported over
//! OTLP/HTTP (protobuf) by a batch exporter on its own thread: a collector
//! that is down costs dropped spans and a throttled warning, never a
//! request. [`Telemetry::shutdown`] flushes what is pending.
//!
//! [`request_span`] gives every gRPC request its `request` span. Nothing
//! here ever records content: spans and lines carry identities, RPC names,
//! codes and timings only.

pub mod request_span;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::TracingSettings;
use crate::store::LogThrottle;

/// Environment variable holding the log filter (`tracing` directives such
/// as `info,liandong_gateway=debug`).
pub const ENV_LOG_FILTER: &str = "LIANDONG_LOG";
/// Environment variable choosing the log format (`json` or `pretty`); the
/// `--log-format` flag reads it.
pub const ENV_LOG_FORMAT: &str = "LIANDONG_LOG_FORMAT";
/// The filter when `LIANDONG_LOG` is unset or unreadable.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, spans with their
    /// fields, target, message and fields.
    #[default]
    Pretty,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `fields`, `span` (the innermost span's name and fields) and `spans`
    /// (every enclosing span, outermost first).
    Json,
}

/// Whether log lines may carry ANSI colour codes: only on a terminal, and
/// only while `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn use_ansi(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Why the trace exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The HTTP client or the OTLP exporter could not be built.
    #[error("tracing.otlp_endpoint: cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// The installed subscriber's exporter, to flush at exit.
#[must_use = "call shutdown() at exit so the last spans are exported"]
pub struct Telemetry {
    /// The OTLP trace pipeline, when `[tracing]` configures one.
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still pending (waiting at most a few seconds)
    /// and stops the exporter. Call it outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(%error, "the last spans could not be exported at shutdown");
        }
    }
}

/// Installs the process-wide subscriber: logs on standard error in
/// `format`, and, when `tracing` says so, span export over OTLP/HTTP.
/// Call it once, outside the async runtime.
pub fn init(
    format: LogFormat,
    tracing: Option<&TracingSettings>,
) -> Result<Telemetry, TelemetryError> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env(ENV_LOG_FILTER)
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let provider = tracing.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("liandong-gateway"))
            .with_threads(false)
    });
    let logs = log_layer(format, ansi, std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .init();
    Ok(Telemetry { provider })
}

/// The layer writing log lines in `format` to `writer`, with colour codes
/// only when `ansi` (and never in JSON).
pub fn log_layer<S, W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
}

/// The OTLP/HTTP trace pipeline: a batch exporter to
/// `<otlp_endpoint>/v1/traces`, sampling `sample_ratio` of new traces
/// (a sampled parent's children always).
fn tracer_provider(settings: &TracingSettings) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(BlockingHttp::new()?)
        .with_endpoint(traces_url(&settings.otlp_endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reported {
            inner: exporter,
            endpoint: settings.otlp_endpoint.clone(),
            throttle: LogThrottle::default(),
        })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The traces URL of an OTLP/HTTP endpoint: `/v1/traces` is appended to a
/// base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read); a URL already
/// ending in it is kept.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The exporter, with its failures logged: the first at once, then at most
/// one line a minute with how many failed meanwhile.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    /// Where spans go, for the log line.
    endpoint: String,
    throttle: LogThrottle,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(error) = &result
            && let Some(failures) = self.throttle.occurrence("export")
        {
            tracing::warn!(
                endpoint = %self.endpoint,
                %error,
                spans,
                failures,
                "cannot export spans to the OTLP collector; they are dropped"
            );
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: blocking, on the batch exporter's own
/// thread, so export never runs on (or needs) the gateway's runtime.
#[derive(Debug)]
struct BlockingHttp(reqwest::blocking::Client);

impl BlockingHttp {
    fn new() -> Result<Self, TelemetryError> {
        // The blocking client runs a runtime of its own: build it on a
        // thread of its own, whatever the caller's context.
        std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
        })
        .join()
        .map_err(|_| TelemetryError::Exporter("building the HTTP client panicked".into()))?
        .map(Self)
        .map_err(|error| TelemetryError::Exporter(error.to_string()))
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            headers.extend(
                response
                    .headers()
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone())),
            );
        }
        let body = response.bytes()?;
        Ok(answer.body(body)?)
    }
}
