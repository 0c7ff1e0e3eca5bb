//! The stable error codes of the product, shared by the REST API (JSON `error` field), the
//! gateway protocol and `wgctl` (exit codes).

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a required field is missing (HTTP 400).
    BadRequest,
    /// No or an invalid bearer token (HTTP 401).
    Unauthorized,
    /// Authenticated but not allowed (HTTP 403).
    Forbidden,
    /// The named object does not exist (HTTP 404).
    NotFound,
    /// The request conflicts with the current state (HTTP 409).
    Conflict,
    /// Policy denies the access (HTTP 403).
    PolicyDenied,
    /// A concurrency limit is reached (HTTP 429); `scope` and `limit` say which.
    ConcurrencyLimit,
    /// A handoff was not accepted within its window (HTTP 410): the offer is gone.
    HandoffExpired,
    /// The session was terminated by an operator before it could start (HTTP 409); the message
    /// is `session terminated by OPERATOR: REASON`.
    Terminated,
    /// A dependency (gateway, store) cannot be reached (HTTP 503).
    Unavailable,
    /// A bug or an unexpected failure (HTTP 500).
    Internal,
}

impl ErrorCode {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::ConcurrencyLimit => "concurrency_limit",
            ErrorCode::HandoffExpired => "handoff_expired",
            ErrorCode::Terminated => "terminated",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::PolicyDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::Terminated => 409,
            ErrorCode::ConcurrencyLimit => 429,
            ErrorCode::HandoffExpired => 410,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// The JSON body of every API error, e.g.
/// `{"error":"concurrency_limit","message":"…","scope":"target","limit":5,"target":"web-01.prod"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable code.
    pub error: ErrorCode,
    /// One human-readable line.
    pub message: String,
    /// For `concurrency_limit`: `actor`, `target`, `policy` or `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// For `concurrency_limit`: the limit reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The target concerned, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ErrorBody {
    /// A body with a code and message only.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error,
            message: message.into(),
            scope: None,
            limit: None,
            target: None,
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error.as_str(), self.message)
    }
}

impl std::error::Error for ErrorBody {}
