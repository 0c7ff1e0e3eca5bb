//! The control plane's error: a stable [`ErrorCode`] with one human-readable line, mapped to HTTP
//! in `api` and to gRPC status codes in `grpc`.

use wg_domain::{ErrorBody, ErrorCode};

/// An error of a control-plane operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ControlError(pub ErrorBody);

impl ControlError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ControlError(ErrorBody::new(code, message))
    }

    /// `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.0.error
    }
}

impl From<wg_store::StoreError> for ControlError {
    fn from(e: wg_store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        match e {
            wg_store::StoreError::Database(_) => {
                ControlError::unavailable(format!("store unavailable: {e}"))
            }
            other => ControlError::internal(other.to_string()),
        }
    }
}

impl From<wg_recording::RecordingError> for ControlError {
    fn from(e: wg_recording::RecordingError) -> Self {
        ControlError::internal(format!("recording: {e}"))
    }
}
