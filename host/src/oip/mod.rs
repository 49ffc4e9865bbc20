//! The Open Inference Protocol v2 codec (KServe v2 / Triton HTTP), with Triton's binary tensor
//! extension: a JSON header (its length in `Inference-Header-Content-Length`) followed by raw
//! little-endian tensors in the order of the JSON's tensors. Used by every served model and
//! pipeline; it knows nothing of models.
//!
//! Decoding never trusts a client's number: shapes are multiplied with checked arithmetic, an
//! element count is compared with the data actually present before anything is allocated for
//! it, and a count of rows is checked against the caller's [`Limits`]. JSON `data` is lists nested
//! regularly (every list at one depth the same length, numbers only at the deepest level) that
//! hold exactly the shape's element count in row-major order: flat, nested as the shape, or a
//! regular regrouping of it, as Triton accepts; ragged data is refused, naming where. A number that is not a finite
//! FP32 value (`1e39`) is refused, naming the input and its flat index.

mod error;
mod request;
mod response;

pub use error::CodecError;
pub use request::{decode, header_length, Input, Limits, OutputRequest, Payload, Request};
pub use response::{encode, Encoded, OutputData, OutputTensor};

/// The header that gives the JSON part's length when binary tensor data follows.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[cfg(test)]
mod tests;
