//! Field-level sensitivity: one generic mechanism that clears every field
//! marked `[(liandong.v1.sensitivity) = LEVEL]` in the `.proto` files when
//! the reader's clearance is below `LEVEL`, at any depth (nested messages
//! and repeated messages included).
//!
//! There is no per-field code here: marking a new field in the contract is
//! all it takes for it to be stripped.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{
    DynamicMessage, ExtensionDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use liandong_core::domain::Confidentiality;
use liandong_core::json::descriptor_pool;
use liandong_core::pb;

/// Fully-qualified name of the sensitivity field option.
const SENSITIVITY_OPTION: &str = "liandong.v1.sensitivity";

/// For every message type: its marked fields (by number) and their level.
fn marked_fields() -> &'static HashMap<String, Vec<(u32, Confidentiality)>> {
    static MARKED: OnceLock<HashMap<String, Vec<(u32, Confidentiality)>>> = OnceLock::new();
    MARKED.get_or_init(|| {
        let pool = descriptor_pool();
        let extension: ExtensionDescriptor = pool
            .get_extension_by_name(SENSITIVITY_OPTION)
            .expect("options.proto declares the sensitivity option");
        pool.all_messages()
            .map(|message| {
                let marked = message
                    .fields()
                    .filter_map(|field| {
                        let options = field.options();
                        if !options.has_extension(&extension) {
                            return None;
                        }
                        let Value::EnumNumber(number) = *options.get_extension(&extension) else {
                            return None;
                        };
                        // An unknown or unspecified level is the strictest.
                        let level = Confidentiality::from_wire("sensitivity", number)
                            .unwrap_or(Confidentiality::Confidential);
                        Some((field.number(), level))
                    })
                    .collect();
                (message.full_name().to_owned(), marked)
            })
            .collect()
    })
}

/// Removes from `notification` every field marked above `clearance`;
/// returns the dotted paths of what was removed (empty: unchanged).
pub fn strip_above(notification: &mut pb::Notification, clearance: Confidentiality) -> Vec<String> {
    // A reader cleared for every mark in the contract loses nothing: skip
    // the reflection round trip (the common case on the delivery path).
    let highest_mark = marked_fields()
        .values()
        .flatten()
        .map(|(_, level)| *level)
        .max();
    if highest_mark.is_none_or(|highest| clearance >= highest) {
        return Vec::new();
    }
    let descriptor = descriptor_pool()
        .get_message_by_name("liandong.v1.Notification")
        .expect("Notification is in the descriptor set");
    let Ok(mut dynamic) =
        DynamicMessage::decode(descriptor, notification.encode_to_vec().as_slice())
    else {
        // Cannot inspect it: fail closed by removing the whole body.
        notification.body = None;
        return vec!["body".to_owned()];
    };
    let mut removed = Vec::new();
    walk(&mut dynamic, clearance, "", &mut removed);
    if !removed.is_empty() {
        match pb::Notification::decode(dynamic.encode_to_vec().as_slice()) {
            Ok(stripped) => *notification = stripped,
            Err(_) => {
                notification.body = None;
                removed = vec!["body".to_owned()];
            }
        }
    }
    removed
}

fn walk(
    message: &mut DynamicMessage,
    clearance: Confidentiality,
    prefix: &str,
    removed: &mut Vec<String>,
) {
    let descriptor: MessageDescriptor = message.descriptor();
    let marked = marked_fields()
        .get(descriptor.full_name())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for field in descriptor.fields() {
        if !message.has_field(&field) {
            continue;
        }
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if marked
            .iter()
            .any(|(number, level)| *number == field.number() && *level > clearance)
        {
            message.clear_field(&field);
            if !removed.contains(&path) {
                removed.push(path);
            }
            continue;
        }
        if !matches!(field.kind(), Kind::Message(_)) {
            continue;
        }
        match message.get_field_mut(&field) {
            Value::Message(inner) => walk(inner, clearance, &path, removed),
            Value::List(items) => {
                for item in items.iter_mut() {
                    if let Value::Message(inner) = item {
                        walk(inner, clearance, &path, removed);
                    }
                }
            }
            _ => {}
        }
    }
}

/// How many fields of the contract carry a sensitivity mark.
pub fn marked_count() -> usize {
    marked_fields().values().map(Vec::len).sum()
}
