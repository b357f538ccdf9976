//! Sources: the ways an agency system hands notifications to the adapter.
//! Each one turns what it received into a call to
//! [`super::accept::Acceptor`] and tells the agency system the outcome
//! only after it is committed (or refused).
//!
//! - [`folder`]: a drop folder of JSON files (write, then rename).
//! - [`http`]: `POST /v1/notifications` on a loopback address.
//!
//! (`liandong-adapter send` hands over through the HTTP source.) Sources
//! must never log content: ids and file names only.

pub mod folder;
pub mod http;
