//! Text → `Policy::parse`, the policy loader the gateway runs at start and
//! on every reload. Any text is either a policy or an error naming the
//! problem; never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

use liandong_gateway::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Policy::parse(text, Path::new("policy.toml"));
});
