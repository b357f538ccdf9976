//! Bytes as a `PublishRequest` arrives on the wire → protobuf decode →
//! `domain::Notification::try_from` (validation) → the signature check →
//! `policy::check_publish` against the development registry and the
//! built-in policy, for a sender chosen by the first byte; when allowed,
//! `policy::decide` for every registered reader.
//!
//! Nothing here may panic: every input is decoded, refused or allowed.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;

use liandong_core::domain::{Envelope, Notification};
use liandong_core::pb;
use liandong_core::registry::{Agency, Registry};
use liandong_core::signing;
use liandong_gateway::policy::{self, Policy, Rules};

/// The registry the development gateway runs with.
const DEV_REGISTRY: &str = include_str!("../../deploy/dev/agencies.toml");

fn rules() -> &'static (Rules, Vec<Agency>) {
    static RULES: OnceLock<(Rules, Vec<Agency>)> = OnceLock::new();
    RULES.get_or_init(|| {
        let registry = Registry::parse(DEV_REGISTRY, Path::new("deploy/dev/agencies.toml"))
            .expect("the development registry is valid");
        let agencies = registry.agencies().cloned().collect();
        let rules = Rules {
            registry,
            policy: Policy::default_policy(),
        };
        (rules, agencies)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let (rules, agencies) = rules();
    let sender = &agencies[usize::from(choice) % agencies.len()];
    let Ok(request) = pb::PublishRequest::decode(bytes) else {
        return;
    };
    let Some(wire) = request.notification else {
        return;
    };
    // A key nobody holds: every signature must be refused, never panic.
    let _ = signing::verify(&wire, sender.id.as_str(), &[7u8; signing::PUBLIC_KEY_LEN]);
    let _ = signing::signing_bytes(&wire, sender.id.as_str());
    let Ok(notification) = Notification::try_from(wire) else {
        return;
    };
    if policy::check_publish(rules, sender, &notification).is_err() {
        return;
    }
    // Allowed: what each registered reader would be given of it.
    let envelope = Envelope::of(sender.id.clone(), &notification);
    for reader in agencies {
        let _ = policy::decide(rules, reader, &envelope);
    }
    let _ = pb::Notification::from(notification).encoded_len();
});
