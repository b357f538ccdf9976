//! The JSON form of `liandong.v1` messages: the canonical proto3 JSON
//! mapping, with the `.proto` field names (`case_ref`, not `caseRef`; both
//! are accepted on input), enum values by their full names
//! (`EVENT_TYPE_CASE_TRANSFERRED`), timestamps as RFC 3339 strings and bytes
//! as base64. Unknown fields are refused. Any protobuf library's JSON support
//! (e.g. Python's `json_format` with `preserving_proto_field_name=True`)
//! reads and writes the same form.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::pb;

#[cfg(test)]
mod tests;

/// JSON that is not a valid message of the expected type.
#[derive(Debug, thiserror::Error)]
#[error("invalid {message_type} JSON: {reason}")]
pub struct JsonError {
    /// The message type that was expected.
    pub message_type: String,
    /// What the parser found wrong, with the field and position.
    pub reason: String,
}

/// The descriptor pool of every `liandong.v1` file, custom options included.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(liandong_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set generated at build time decodes")
    })
}

/// A message type of package `liandong.v1` known to the JSON form.
pub trait JsonMessage: Message + Default {
    /// Its fully-qualified protobuf name.
    const FULL_NAME: &'static str;
}

macro_rules! json_message {
    ($($ty:ident),*) => {
        $(impl JsonMessage for pb::$ty {
            const FULL_NAME: &'static str = concat!("liandong.v1.", stringify!($ty));
        })*
    };
}
json_message!(
    Notification,
    PublishReceipt,
    Delivery,
    CaseView,
    SubscriptionFilter,
    StatisticsReport,
    SignalsResponse
);

/// Parses the JSON form of `M`.
pub fn from_json<M: JsonMessage>(text: &str) -> Result<M, JsonError> {
    let error = |reason: String| JsonError {
        message_type: M::FULL_NAME.to_owned(),
        reason,
    };
    let descriptor = descriptor_pool()
        .get_message_by_name(M::FULL_NAME)
        .expect("every JsonMessage is in the descriptor set");
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize_with_options(
        descriptor,
        &mut deserializer,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| error(e.to_string()))?;
    deserializer.end().map_err(|e| error(e.to_string()))?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| error(e.to_string()))
}

/// The JSON form of `message`, as a value. Fields at their default value are
/// left out; 64-bit integers are written as numbers.
pub fn to_json<M: JsonMessage>(message: &M) -> serde_json::Value {
    let descriptor = descriptor_pool()
        .get_message_by_name(M::FULL_NAME)
        .expect("every JsonMessage is in the descriptor set");
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message re-decodes against its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializing to a serde_json value cannot fail")
}
