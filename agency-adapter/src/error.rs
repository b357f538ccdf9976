//! What a failed command means to whoever ran it: the typed error of the
//! `send`, `tail` and `status` commands, the one-line message printed for it, and the
//! process exit code (sysexits-style) it maps to.
//!
//! This module must never print or log: `main` prints [`CommandError`]'s
//! message and exits with [`CommandError::exit_code`]. Messages name ids,
//! files and fields, never notification content.

use liandong_core::json::JsonError;
use liandong_core::tls::error_chain;

use crate::client::ClientError;
use crate::config::ConfigError;
use crate::signer::SignerError;
use crate::store::StoreError;

#[cfg(test)]
mod tests;

/// The exit codes of `liandong-adapter`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The gateway refused the request (`refused: CODE: message`).
    pub const REFUSED: u8 = 1;
    /// Bad flags or configuration (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// The input is unreadable or not a valid notification (EX_DATAERR).
    pub const DATA: u8 = 65;
    /// The gateway is unreachable, the TLS handshake failed, the gateway
    /// answered UNAVAILABLE, or it refused the agency as disabled by its
    /// operators: retrying later may succeed (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// `status`: the adapter is unhealthy (or has no state yet).
    pub const UNHEALTHY: u8 = 2;
    /// The program itself failed (EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
    /// `run`: the HTTP source's address could not be bound (EX_OSERR).
    pub const OS: u8 = 71;
    /// `run`: the state file or a folder could not be opened or created
    /// (EX_CANTCREAT).
    pub const CANT_CREATE: u8 = 73;
    /// Standard output could not be written (EX_IOERR).
    pub const IO: u8 = 74;
    /// Try again later: the outbox is full (`send` via the daemon), or
    /// another daemon already runs on the same state (EX_TEMPFAIL).
    pub const TEMPFAIL: u8 = 75;
}

/// The input of `send` could not be read or is not a notification.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file (or standard input) could not be read.
    #[error("{origin}: cannot read: {source}")]
    Read {
        /// The file, or `stdin`.
        origin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input is empty.
    #[error("{origin}: no notification (the input is empty)")]
    Empty {
        /// The file, or `stdin`.
        origin: String,
    },
    /// The input is not the JSON form of a notification.
    #[error("{origin}: {source}")]
    Json {
        /// The file, or `stdin`.
        origin: String,
        /// What is wrong, naming the field and position.
        source: JsonError,
    },
    /// A field of the notification is missing or malformed.
    #[error("{origin}: {source}")]
    Field {
        /// The file, or `stdin`.
        origin: String,
        /// The field and what is wrong with it.
        source: liandong_core::domain::FieldError,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Unusable flags or configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unusable input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The gateway could not be reached, or the credentials not loaded.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The gateway refused the request or ended the call with an error
    /// status, or the connection broke during the call.
    #[error("{}", describe_status(.0))]
    Gateway(tonic::Status),
    /// Standard output could not be written.
    #[error("stdout: {0}")]
    Output(#[source] std::io::Error),
    /// The adapter's local state could not be read.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The running daemon refused the hand-over (`send`).
    #[error("refused by the adapter daemon: {message}")]
    Handoff {
        /// The HTTP status it answered.
        status: u16,
        /// Its message (naming the field).
        message: String,
    },
    /// The running daemon could not be asked (it answered something that
    /// is not its API).
    #[error("the adapter daemon at {url}: {reason}")]
    Daemon {
        /// Its HTTP source.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The signing key could not be loaded.
    #[error(transparent)]
    Signing(#[from] SignerError),
    /// The HTTP source's token file could not be used (`send`).
    #[error(transparent)]
    Token(#[from] crate::daemon::source::http::TokenError),
}

impl From<tonic::Status> for CommandError {
    fn from(status: tonic::Status) -> Self {
        Self::Gateway(status)
    }
}

impl CommandError {
    /// The process exit code for this failure (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => exit::USAGE,
            Self::Input(_) => exit::DATA,
            Self::Client(ClientError::Credentials(_) | ClientError::Settings(_)) => exit::USAGE,
            Self::Client(ClientError::Unreachable(_) | ClientError::SubscriptionClosed) => {
                exit::UNAVAILABLE
            }
            Self::Gateway(status) => status_exit_code(status),
            Self::Output(_) => exit::IO,
            Self::State(StoreError::Missing { .. }) => exit::UNHEALTHY,
            Self::State(_) => exit::SOFTWARE,
            Self::Handoff { status: 503, .. } => exit::TEMPFAIL,
            // The token, Origin or Host was refused: a setup problem.
            Self::Handoff {
                status: 401 | 403 | 421,
                ..
            } => exit::USAGE,
            Self::Handoff { status, .. } if (400..500).contains(status) => exit::DATA,
            Self::Handoff { .. } => exit::SOFTWARE,
            Self::Daemon { .. } => exit::UNAVAILABLE,
            Self::Signing(_) | Self::Token(_) => exit::USAGE,
        }
    }

    /// The message to print: the error and its causes on one line.
    pub fn message(&self) -> String {
        error_chain(self)
    }
}

/// True when `status` was made locally from a transport failure (the
/// connection broke, the handshake failed) rather than sent by the gateway.
/// Tonic attaches the underlying error as the source of such statuses only.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The exit code for a call that failed with `status`: [`exit::UNAVAILABLE`]
/// for transport failures, UNAVAILABLE and the refusal of an agency its
/// operators disabled (`liandong-refusal: agency-disabled`): all worth
/// retrying later; [`exit::REFUSED`] for every other refusal.
pub fn status_exit_code(status: &tonic::Status) -> u8 {
    if is_transport_failure(status)
        || status.code() == tonic::Code::Unavailable
        || liandong_core::refusal::is_agency_disabled(status)
    {
        exit::UNAVAILABLE
    } else {
        exit::REFUSED
    }
}

/// The one-line description of a failed call: `refused: CODE: message`
/// for a status the gateway sent, `gateway unreachable: CODE: message: cause…`
/// for a transport failure.
pub fn describe_status(status: &tonic::Status) -> String {
    let code = code_name(status.code());
    match std::error::Error::source(status) {
        Some(source) => {
            let mut text = format!("gateway unreachable: {code}: {}", status.message());
            let chain = error_chain(source);
            if !text.ends_with(&chain) {
                text.push_str(": ");
                text.push_str(&chain);
            }
            text
        }
        None => format!("refused: {code}: {}", status.message()),
    }
}

/// The canonical gRPC name of a status code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
