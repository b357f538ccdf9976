//! `GetCase` paging: the page size a request asks for and the opaque page
//! token that carries a reader from one page to the next.
//!
//! A token names its case and the sequence of the last entry already
//! served; it is plain data, not a credential: every page is decided again
//! under the rules in force, and a forged token can only skip entries.

use liandong_core::domain::{CaseRef, FieldError};

/// Entries per page when the request asks for none (`page_size` 0).
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// The most entries a page may be asked for.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Prefix of every token this gateway issues (and version of its form).
const TOKEN_FORM: &str = "case-page-1";

/// A validated `GetCase` request for one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The case.
    pub case_ref: CaseRef,
    /// The most entries the page may hold.
    pub page_size: u32,
    /// The page starts after this sequence (0 for the first page).
    pub after: u64,
}

impl PageRequest {
    /// Validates the fields of a `GetCaseRequest`; each refusal names its
    /// field.
    pub fn parse(case_ref: &str, page_size: u32, page_token: &str) -> Result<Self, FieldError> {
        let case_ref = CaseRef::parse_field("case_ref", case_ref)?;
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size <= MAX_PAGE_SIZE => size,
            size => {
                return Err(FieldError::new(
                    "page_size",
                    format!("must be 1 to {MAX_PAGE_SIZE} (0 = {DEFAULT_PAGE_SIZE}), got {size}"),
                ));
            }
        };
        let after = if page_token.is_empty() {
            0
        } else {
            let (token_case, after) = decode(page_token).ok_or_else(|| {
                FieldError::new(
                    "page_token",
                    "is not a page token this gateway issued (pass next_page_token unchanged)",
                )
            })?;
            if token_case != case_ref.as_str() {
                return Err(FieldError::new(
                    "page_token",
                    format!("belongs to another case than {case_ref}"),
                ));
            }
            after
        };
        Ok(Self {
            case_ref,
            page_size,
            after,
        })
    }
}

/// The token of the page after the one that ended with `last_sequence`.
pub fn token(case_ref: &CaseRef, last_sequence: u64) -> String {
    hex::encode(format!("{TOKEN_FORM}\n{case_ref}\n{last_sequence}"))
}

/// The case and sequence a token carries, or `None` for anything this
/// gateway did not issue.
fn decode(token: &str) -> Option<(String, u64)> {
    let bytes = hex::decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\n');
    let (form, case_ref, digits) = (parts.next()?, parts.next()?, parts.next()?);
    if form != TOKEN_FORM || parts.next().is_some() {
        return None;
    }
    let sequence: u64 = digits.parse().ok()?;
    // Only the form `token` writes: no sign, no leading zeros, never 0.
    (sequence != 0 && sequence.to_string() == digits).then(|| (case_ref.to_owned(), sequence))
}
