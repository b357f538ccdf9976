//! The gRPC codec used by every generated client and server: prost's, except
//! that bad input gets the status the gRPC conventions give it:
//! a message that does not decode is `INVALID_ARGUMENT` (tonic says
//! `INTERNAL`), and a message over the size limit is `RESOURCE_EXHAUSTED`
//! (tonic's own limit says `OUT_OF_RANGE`).
//!
//! The size limit is process-wide ([`set_max_message_bytes`]): a gateway
//! process sets it once from its configuration and sets tonic's own limit
//! above it, so this check is the one that answers.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Buf;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

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
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            inner: ProstCodec::<T, U>::default().decoder(),
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
            return Err(Status::resource_exhausted(format!(
                "message of {} bytes exceeds the limit of {limit} bytes",
                buf.remaining()
            )));
        }
        self.inner.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!(
                    "malformed protobuf message: {}",
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
