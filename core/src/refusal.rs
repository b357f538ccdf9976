//! Machine-readable kinds of refusal, which the gateway attaches to a
//! status as the gRPC metadata [`METADATA_KEY`] so that a client can tell
//! them apart from other refusals with the same code without reading the
//! human message.
//!
//! The one kind so far is [`AGENCY_DISABLED`]: the status code stays
//! `PERMISSION_DENIED` (the contract), but an operator's disablement is a
//! temporary decision, so a client must keep what it has not delivered
//! and retry, never treat it as a refusal of the notification itself.
//!
//! This module only names and reads the marker; it decides nothing.

#[cfg(test)]
mod tests;

/// The metadata key (a gRPC response header or trailer) naming the kind of
/// refusal.
pub const METADATA_KEY: &str = "liandong-refusal";

/// The value of [`METADATA_KEY`] when the caller's agency is disabled by
/// an operator: every request of the agency is refused until an operator
/// enables it again.
pub const AGENCY_DISABLED: &str = "agency-disabled";

/// True when `status` is the gateway's refusal of a disabled agency:
/// `PERMISSION_DENIED` carrying `liandong-refusal: agency-disabled`.
pub fn is_agency_disabled(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::PermissionDenied
        && status
            .metadata()
            .get(METADATA_KEY)
            .is_some_and(|value| value.as_bytes() == AGENCY_DISABLED.as_bytes())
}
