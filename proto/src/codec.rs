//! The gRPC codec used by every generated client and server: prost's, except
//! that bad input gets the status the gRPC conventions give it:
//! a message that does not decode is `INVALID_ARGUMENT` (tonic says
//! `INTERNAL`), and a message over the size limit is `RESOURCE_EXHAUSTED`
//! (tonic's own limit says `OUT_OF_RANGE`).
//!
//! Every refusal made here carries the [`DECODE_REFUSAL`] metadata key, so
//! a server layer can tell it from a handler's answer (to audit it) and
//! strip it before the status leaves the process.
//!
//! The size limit is process-wide ([`set_max_message_bytes`]): a gateway
//! process sets it once from its configuration and sets tonic's own limit
//! above it, so this check is the one that answers.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Buf;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The metadata key marking a status as this codec's refusal of a message
/// it could not accept (malformed or over the limit).
pub const DECODE_REFUSAL: &str = "liandong-decode-refusal";

/// True when `status` is this codec's refusal of an incoming message.
pub fn is_decode_refusal(status: &Status) -> bool {
    status.metadata().contains_key(DECODE_REFUSAL)
}

fn decode_refusal(mut status: Status) -> Status {
    status
        .metadata_mut()
        .insert(DECODE_REFUSAL, MetadataValue::from_static("1"));
    status
}

/// Largest message decoded when nothing else is set: 4 MiB, tonic's default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

static MAX_MESSAGE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_MESSAGE_BYTES);

/// Sets the largest encoded message this process decodes; larger messages
/// are refused with `RESOURCE_EXHAUSTED` before they are parsed.
pub fn set_max_message_bytes(limit: usize) {
    MAX_MESSAGE_BYTES.store(limit, Ordering::Relaxed);
}

/// The largest encoded message this process decodes.
pub fn max_message_bytes() -> usize {
    MAX_MESSAGE_BYTES.load(Ordering::Relaxed)
}

/// The buffer each call's encoder and decoder start with. tonic's default
/// (8 KiB each) is what an idle subscription stream would hold for its
/// whole life, 16 KiB a stream; buffers grow as a message needs.
pub const CALL_BUFFER_BYTES: usize = 1024;

/// How much a streaming encoder gathers before it yields: tonic's default.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// Prost encoding with malformed input reported as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            inner: ProstCodec::<T, U>::raw_decoder(buffer_settings()),
        }
    }
}

/// Decodes with prost, refusing oversized and malformed messages.
#[derive(Debug)]
pub struct StrictDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let limit = max_message_bytes();
        if buf.remaining() > limit {
            return Err(decode_refusal(Status::resource_exhausted(format!(
                "message of {} bytes exceeds the limit of {limit} bytes",
                buf.remaining()
            ))));
        }
        self.inner.decode(buf).map_err(|status| {
            decode_refusal(if status.code() == Code::Internal {
                Status::invalid_argument(format!(
                    "malformed protobuf message: {}",
                    status.message()
                ))
            } else {
                status
            })
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
