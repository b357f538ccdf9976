//! The one place where gateway errors become gRPC statuses.
//!
//! Every refusal or failure a client sees is built here, from a typed
//! error: a refused field, a refused signature, an unknown caller, a
//! session that ends, a store that failed, an agency an operator disabled
//! (marked `liandong-refusal: agency-disabled` for clients to retry
//! rather than give up). Causes are logged here; what goes
//! back to the caller names the field or the rule, never SQL text, file
//! paths or notification content. No other module constructs a `Status`
//! (statuses received from the transport are passed on as they are).

use liandong_core::domain::FieldError;
use liandong_core::refusal;
use liandong_core::signing::SignatureError;
use tonic::{Code, Status};

use crate::identity::IdentityError;
use crate::routing::SessionEnd;
use crate::store::agency_state::DisabledAgency;
use crate::store::{LogThrottle, StoreError};

/// Repeated identical store failures are logged once per interval, with
/// how often they happened since.
static STORE_ERRORS: std::sync::LazyLock<LogThrottle> =
    std::sync::LazyLock::new(LogThrottle::default);

/// Why a request was refused or failed.
///
/// The `Display` text is what the audit log records as a refusal's reason.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable client identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] IdentityError),
    /// A field is missing or malformed.
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    /// The signature is required (by `require_signatures` or a registered
    /// key) and missing, or does not verify with a key registered for the
    /// sender: `UNAUTHENTICATED`; one naming another agency's key:
    /// `PERMISSION_DENIED`.
    #[error("{}", signature_reason(.0))]
    Signature(#[from] SignatureError),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The caller's agency is disabled by an operator: `PERMISSION_DENIED`
    /// marked `liandong-refusal: agency-disabled`, so that clients keep
    /// what they have not delivered and retry (every request of the
    /// agency, its publishes, and the end of its open streams).
    #[error("permission denied: {0}")]
    AgencyDisabled(DisabledAgency),
    /// The request conflicts with stored state.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Nothing the caller may see exists under that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// A per-agency cap is reached; the message names it.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The gateway is shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A subscription could not be opened, or its stream ends (a reader
    /// an operator disabled is [`ApiError::AgencyDisabled`] instead).
    #[error(transparent)]
    Session(SessionEnd),
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SessionEnd> for ApiError {
    /// A session ended because an operator disabled its reader is refused
    /// as every other request of a disabled agency is.
    fn from(end: SessionEnd) -> Self {
        match end {
            SessionEnd::ReaderDisabled(disabled) => Self::AgencyDisabled(disabled),
            end => Self::Session(end),
        }
    }
}

/// A signature refusal as the audit log records it.
fn signature_reason(error: &SignatureError) -> String {
    match error {
        SignatureError::OtherAgencysKey { .. } => format!("permission denied: {error}"),
        _ => format!("unauthenticated: {error}"),
    }
}

impl ApiError {
    /// The status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Signature(SignatureError::OtherAgencysKey { .. }) => Code::PermissionDenied,
            Self::Signature(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) | Self::AgencyDisabled(_) => Code::PermissionDenied,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::NotFound(_) => Code::NotFound,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) | Self::Store(_) => Code::Unavailable,
            Self::Session(end) => match end {
                SessionEnd::Replaced => Code::Aborted,
                SessionEnd::ShuttingDown
                | SessionEnd::Stalled { .. }
                | SessionEnd::HoldLost(_)
                | SessionEnd::HeldElsewhere { .. } => Code::Unavailable,
                SessionEnd::ReaderReregistered { .. }
                | SessionEnd::ReaderRemoved { .. }
                | SessionEnd::ReaderDisabled(_) => Code::PermissionDenied,
                SessionEnd::SubscriptionCap { .. } | SessionEnd::StreamCap { .. } => {
                    Code::ResourceExhausted
                }
                SessionEnd::BadRequest(_) => Code::InvalidArgument,
                SessionEnd::FilterConflict { .. } => Code::FailedPrecondition,
            },
        }
    }

    /// The status code name of a refusal (bad request or forbidden), or
    /// `None` when the gateway failed rather than refused.
    pub fn refusal_code(&self) -> Option<&'static str> {
        refusal_code(self.code())
    }
}

/// The name the audit log gives a refusal's status code, or `None` for a
/// code that is not a refusal.
pub fn refusal_code(code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthenticated => Some("UNAUTHENTICATED"),
        Code::InvalidArgument => Some("INVALID_ARGUMENT"),
        Code::PermissionDenied => Some("PERMISSION_DENIED"),
        Code::FailedPrecondition => Some("FAILED_PRECONDITION"),
        Code::NotFound => Some("NOT_FOUND"),
        Code::ResourceExhausted => Some("RESOURCE_EXHAUSTED"),
        _ => None,
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let mut refusal = None;
        let message = match error {
            ApiError::Unauthenticated(cause) => cause.to_string(),
            ApiError::InvalidArgument(field) => field.to_string(),
            // The error's own text names the field: "<field>: <reason>".
            ApiError::Signature(cause) => cause.to_string(),
            ApiError::PermissionDenied(message)
            | ApiError::FailedPrecondition(message)
            | ApiError::NotFound(message)
            | ApiError::ResourceExhausted(message)
            | ApiError::Unavailable(message) => message,
            ApiError::AgencyDisabled(disabled)
            | ApiError::Session(SessionEnd::ReaderDisabled(disabled)) => {
                refusal = Some(refusal::AGENCY_DISABLED);
                disabled.to_string()
            }
            ApiError::Session(end) => end.to_string(),
            ApiError::Store(cause) => {
                if let Some(count) = STORE_ERRORS.occurrence(&cause.to_string()) {
                    tracing::error!(error = %cause, occurrences = count, "store operation failed; answered UNAVAILABLE");
                }
                "the gateway's store is unavailable; nothing was written, retry later".to_owned()
            }
        };
        let mut status = Status::new(code, message);
        if let Some(kind) = refusal {
            status.metadata_mut().insert(
                refusal::METADATA_KEY,
                tonic::metadata::MetadataValue::from_static(kind),
            );
        }
        status
    }
}

/// The status a response carries in `headers` (its headers or trailers),
/// if any: read, to audit refusals made before a handler.
pub fn status_in(headers: &http::HeaderMap) -> Option<Status> {
    Status::from_header_map(headers)
}

/// The answer to a request whose client deadline passed before the
/// gateway answered.
pub fn deadline_exceeded() -> Status {
    Status::deadline_exceeded(
        "the deadline passed before the gateway answered; the outcome is unknown: \
         republish the same notification id to learn it",
    )
}

#[cfg(test)]
mod tests;
