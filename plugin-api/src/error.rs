//! The one error type that crosses the plugin boundary.

use abi_stable::std_types::{RResult, RString};
use abi_stable::StableAbi;
use std::fmt;

/// What kind of failure an error is; the host maps it to exit codes and HTTP statuses.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something wrong (bad shape, bad config value, corrupt file).
    InvalidArgument,
    /// A file, tensor, method or plugin that was asked for does not exist.
    NotFound,
    /// The request is valid but this plugin cannot do it (unknown op, unknown activation).
    Unsupported,
    /// A bug or an unexpected failure inside the plugin (including a caught panic).
    Internal,
}

impl ErrorKind {
    /// A short lowercase name, e.g. `invalid argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An FFI-safe error: a kind plus a human-readable message that names what was wrong
/// (file, tensor, field, shape).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The category of the failure.
    pub kind: ErrorKind,
    /// The full message, already including its context.
    pub message: RString,
}

/// How the message of a [`PluginError::timeout`] starts. A timeout is an
/// [`ErrorKind::Internal`] error (so that hosts built before it still see a failure that is not
/// the caller's) whose message starts with this; [`PluginError::context`] keeps it first.
pub const TIMEOUT_PREFIX: &str = "timeout: ";

/// Result type used across the boundary.
pub type PluginResult<T> = RResult<T, PluginError>;

impl PluginError {
    /// Creates an error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: RString::from(message.into()),
        }
    }
    /// An [`ErrorKind::InvalidArgument`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// An [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// An [`ErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// A run that exceeded its time limit and was stopped (see [`TIMEOUT_PREFIX`]).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::internal(format!("{TIMEOUT_PREFIX}{}", message.into()))
    }
    /// Whether this is a [`PluginError::timeout`].
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Internal && self.message.starts_with(TIMEOUT_PREFIX)
    }
    /// Prefixes the message with context, keeping the kind: `"{context}: {message}"` (a
    /// timeout's message keeps its [`TIMEOUT_PREFIX`] first).
    pub fn context(self, context: impl fmt::Display) -> Self {
        let message = match self.message.strip_prefix(TIMEOUT_PREFIX) {
            Some(rest) if self.kind == ErrorKind::Internal => {
                format!("{TIMEOUT_PREFIX}{context}: {rest}")
            }
            _ => format!("{context}: {}", self.message),
        };
        PluginError {
            kind: self.kind,
            message: RString::from(message),
        }
    }
    /// The message as a `&str`.
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_str())
    }
}

impl std::error::Error for PluginError {}
