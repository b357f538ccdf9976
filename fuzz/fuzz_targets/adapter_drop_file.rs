//! Bytes as a file in the adapter's drop folder → what the folder source
//! does with one (`daemon::source::folder::scan`): UTF-8 check, the file's
//! idempotency key, then `Acceptor::accept_json` (JSON form, validation,
//! signing, commit to a real store).
//!
//! Every input is accepted or refused with a typed error; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

use liandong_adapter::daemon::accept::Origin;

fuzz_target!(|data: &[u8]| {
    let adapter = liandong_fuzz::adapter();
    // As the folder source reads a file: text or refused.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = format!("folder:fuzz.json:{:x}", Sha256::digest(data));
    let outcome = adapter
        .runtime
        .block_on(adapter.acceptor.accept_json(text, Origin::Folder { key }));
    if let Err(error) = outcome {
        // What the folder source writes beside a rejected file and logs.
        let _ = error.to_string();
        let _ = error.log_text();
        let _ = error.is_input_error();
    }
});
