//! Text → the JSON form parser of `liandong_core::json` (what the adapter's
//! HTTP source, its drop folder and `liandong-adapter send` read), for the
//! message types integrators write by hand. What parses must print and
//! parse back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;

use liandong_core::json::{JsonMessage, from_json, to_json};
use liandong_core::pb;

fn round_trip<M: JsonMessage + PartialEq + std::fmt::Debug>(text: &str) {
    let Ok(message) = from_json::<M>(text) else {
        return;
    };
    let printed = to_json(&message).to_string();
    let again = from_json::<M>(&printed)
        .unwrap_or_else(|e| panic!("the printed JSON form does not parse back: {e}: {printed}"));
    assert_eq!(
        message, again,
        "the JSON form does not round-trip: {printed}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match choice % 3 {
        0 => round_trip::<pb::Notification>(text),
        1 => round_trip::<pb::SubscriptionFilter>(text),
        _ => round_trip::<pb::Delivery>(text),
    }
});
