//! The one place where gateway errors become gRPC statuses.
//!
//! Causes are logged here; what goes back to the caller names the field or
//! the rule, never SQL text, file paths or notification content.

use liandong_core::domain::FieldError;
use tonic::{Code, Status};

use crate::store::{LogThrottle, StoreError};

/// Repeated identical store failures are logged once per interval, with
/// how often they happened since.
static STORE_ERRORS: std::sync::LazyLock<LogThrottle> =
    std::sync::LazyLock::new(LogThrottle::default);

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable client identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A field is missing or malformed.
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
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
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A status routing already decided (a subscription that cannot be
    /// opened); it leaves as it is.
    #[error("{}", .0.message())]
    Status(Status),
}

impl ApiError {
    /// The status code name of a refusal (bad request or forbidden), or
    /// `None` when the gateway failed rather than refused.
    pub fn refusal_code(&self) -> Option<&'static str> {
        match self {
            Self::Unauthenticated(_) => Some("UNAUTHENTICATED"),
            Self::InvalidArgument(_) => Some("INVALID_ARGUMENT"),
            Self::PermissionDenied(_) => Some("PERMISSION_DENIED"),
            Self::FailedPrecondition(_) => Some("FAILED_PRECONDITION"),
            Self::NotFound(_) => Some("NOT_FOUND"),
            Self::ResourceExhausted(_) => Some("RESOURCE_EXHAUSTED"),
            Self::Unavailable(_) | Self::Store(_) => None,
            Self::Status(status) => match status.code() {
                Code::Unauthenticated => Some("UNAUTHENTICATED"),
                Code::InvalidArgument => Some("INVALID_ARGUMENT"),
                Code::PermissionDenied => Some("PERMISSION_DENIED"),
                Code::FailedPrecondition => Some("FAILED_PRECONDITION"),
                Code::NotFound => Some("NOT_FOUND"),
                Code::ResourceExhausted => Some("RESOURCE_EXHAUSTED"),
                _ => None,
            },
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Unauthenticated(message) => Status::unauthenticated(message),
            ApiError::InvalidArgument(field) => Status::invalid_argument(field.to_string()),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::NotFound(message) => Status::not_found(message),
            ApiError::ResourceExhausted(message) => Status::resource_exhausted(message),
            ApiError::Unavailable(message) => Status::unavailable(message),
            ApiError::Store(cause) => {
                if let Some(count) = STORE_ERRORS.occurrence(&cause.to_string()) {
                    tracing::error!(error = %cause, occurrences = count, "store operation failed; answered UNAVAILABLE");
                }
                Status::unavailable(
                    "the gateway's store is unavailable; nothing was written, retry later",
                )
            }
            ApiError::Status(status) => status,
        }
    }
}
