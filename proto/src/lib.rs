//! The `liandong.v1` contract: prost messages and tonic clients/servers
//! generated from `proto/liandong/v1/*.proto`.
//!
//! This crate holds wire types only. Validated domain types live in
//! `liandong-core`; nothing here may carry logic beyond what is generated.

#![allow(missing_docs, unreachable_pub)]

pub mod codec;

/// Generated code of package `liandong.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("liandong.v1");
}

/// The encoded `FileDescriptorSet` of every `liandong.v1` file (and the
/// well-known types it imports), for gRPC reflection and for the JSON form.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/liandong_descriptor.bin"));
