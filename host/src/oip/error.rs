//! The codec's one error type.

/// A request that does not decode, or whose tensors do not fit their declaration; the message
/// names the input and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);
