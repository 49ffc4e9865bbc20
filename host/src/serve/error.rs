//! The one place where serving errors become HTTP statuses and `{"error": "..."}` bodies. Errors
//! of the layers below arrive with their [`ErrorKind`] ([`ServeError::from_kind`]).

use crate::error::{ErrorKind, KindError};
use crate::oip::CodecError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed or does not fit the model (name, shape, datatype, size).
    #[error("{0}")]
    InvalidInput(String),
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// The server or model is not ready (loading, or shutting down).
    #[error("{0}")]
    NotReady(String),
    /// The model's queue is full.
    #[error("{0}")]
    QueueFull(String),
    /// The request body is larger than the model accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The request's timeout expired while it was queued.
    #[error("request timeout expired while queued ({0} us)")]
    Timeout(u64),
    /// The run exceeded the model's `timeout` and was stopped (504).
    #[error("{0}")]
    RunTimeout(String),
    /// Something failed inside the server or a plugin; the message is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    /// The serving error for a failure of `kind`: the caller's fault is 400 / 404, anything
    /// else 500 (its message logged, never sent).
    pub fn from_kind(kind: ErrorKind, message: String) -> ServeError {
        match kind {
            ErrorKind::Invalid => ServeError::InvalidInput(message),
            ErrorKind::NotFound => ServeError::NotFound(message),
            ErrorKind::Unavailable => ServeError::QueueFull(message),
            ErrorKind::Timeout => ServeError::RunTimeout(message),
            ErrorKind::Unsupported | ErrorKind::Internal => ServeError::Internal(message),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ServeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::NotReady(_) | ServeError::QueueFull(_) | ServeError::Timeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServeError::RunTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The failure reason in metrics (Triton's vocabulary where it has one).
    pub fn reason(&self) -> &'static str {
        match self {
            ServeError::InvalidInput(_) | ServeError::TooLarge(_) => "INVALID",
            ServeError::NotFound(_) => "NOT_FOUND",
            ServeError::NotReady(_) | ServeError::QueueFull(_) => "REJECTED",
            ServeError::Timeout(_) | ServeError::RunTimeout(_) => "TIMEOUT",
            ServeError::Internal(_) => "BACKEND",
        }
    }

    /// What the client is told.
    pub fn public_message(&self) -> String {
        match self {
            ServeError::Internal(_) => "internal error while running the model".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<CodecError> for ServeError {
    fn from(e: CodecError) -> Self {
        ServeError::InvalidInput(e.0)
    }
}

impl From<KindError> for ServeError {
    fn from(e: KindError) -> Self {
        ServeError::from_kind(e.kind, e.message)
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        if let ServeError::Internal(m) = &self {
            tracing::error!("internal error: {m}");
        }
        let body = serde_json::json!({ "error": self.public_message() });
        (self.status(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_say_nothing_internal() {
        let e = ServeError::Internal("/secret/path: plugin panicked".into());
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.public_message().contains("secret"));
        assert_eq!(ServeError::QueueFull("x".into()).status().as_u16(), 503);
        assert_eq!(ServeError::InvalidInput("x".into()).status().as_u16(), 400);
        assert_eq!(ServeError::NotFound("x".into()).status().as_u16(), 404);
        let t = ServeError::from_kind(ErrorKind::Timeout, "model vae, part decoder".into());
        assert_eq!((t.status().as_u16(), t.reason()), (504, "TIMEOUT"));
        assert!(t.public_message().contains("part decoder"));
    }
}
