//! Text → `Registry::parse`, the agency registry loader the gateway runs at
//! start and on every reload. Any text is either a registry or an error
//! naming the problem; never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

use liandong_core::registry::Registry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(registry) = Registry::parse(text, Path::new("agencies.toml")) {
        for agency in registry.agencies() {
            assert!(registry.get(&agency.id).is_some());
            assert!(registry.by_identity(&agency.identity).is_some());
            let _ = registry.is_ancestor(&agency.id, &agency.id);
        }
    }
});
