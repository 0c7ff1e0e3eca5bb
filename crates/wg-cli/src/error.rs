//! The one error type of `wgctl` and its mapping to process exit codes.
//!
//! Every failure becomes a [`CliError`]; [`CliError::exit_code`] decides the exit status and
//! [`crate::render::error_line`] the single line printed on stderr.

use wg_domain::{ErrorBody, ErrorCode};

/// Process exit codes of `wgctl` (PRODUCT.md §8: distinct codes for the four classes of failure).
///
/// | code | meaning |
/// |---|---|
/// | 0 | success |
/// | 1 | any other failure, including a recording or audit chain that does not verify |
/// | 2 | bad request or usage error (clap's own usage errors also exit 2) |
/// | 3 | not found |
/// | 4 | denied: `unauthorized`, `forbidden`, `policy_denied`, `concurrency_limit`, `handoff_expired` |
/// | 5 | unreachable: connection refused, timeout, HTTP 502/503/504 |
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure (also: verification failed).
    pub const FAILURE: u8 = 1;
    /// Bad request or usage error.
    pub const USAGE: u8 = 2;
    /// The named object does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// Unauthorized, forbidden, policy denied, concurrency limit reached or handoff expired.
    pub const DENIED: u8 = 4;
    /// The control plane cannot be reached.
    pub const UNREACHABLE: u8 = 5;
}

/// Everything that can make a `wgctl` command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or its input is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The API answered with a structured error body.
    #[error("{}", api_message(.body))]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// The decoded `ErrorBody`.
        body: ErrorBody,
    },
    /// The API answered with a non-2xx status and no structured error body.
    #[error("HTTP {status}: {text}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Start of the response body (or the status's reason phrase).
        text: String,
    },
    /// The control plane cannot be reached (exit 5).
    #[error("{0}")]
    Unreachable(String),
    /// Any other failure (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error; see [`exit`].
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Api { body, .. } => code_exit(body.error),
            CliError::Http { status, .. } => status_exit(*status),
            CliError::Unreachable(_) => exit::UNREACHABLE,
            CliError::Failed(_) => exit::FAILURE,
        }
    }
}

/// Exit code for a structured API error code.
pub fn code_exit(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::BadRequest => exit::USAGE,
        ErrorCode::NotFound => exit::NOT_FOUND,
        ErrorCode::Unauthorized
        | ErrorCode::Forbidden
        | ErrorCode::PolicyDenied
        | ErrorCode::ConcurrencyLimit
        | ErrorCode::HandoffExpired => exit::DENIED,
        ErrorCode::Unavailable => exit::UNREACHABLE,
        ErrorCode::Conflict | ErrorCode::Terminated | ErrorCode::Internal => exit::FAILURE,
    }
}

/// Exit code for an HTTP status that came without a structured error body.
pub fn status_exit(status: u16) -> u8 {
    match status {
        404 => exit::NOT_FOUND,
        401 | 403 | 410 | 429 => exit::DENIED,
        502..=504 => exit::UNREACHABLE,
        409 => exit::FAILURE,
        400..=499 => exit::USAGE,
        _ => exit::FAILURE,
    }
}

/// `code: message`, or for `concurrency_limit` `concurrency_limit (scope=S, limit=L): message`.
fn api_message(body: &ErrorBody) -> String {
    let code = body.error.as_str();
    let mut facts = Vec::new();
    if body.error == ErrorCode::ConcurrencyLimit {
        if let Some(scope) = &body.scope {
            facts.push(format!("scope={scope}"));
        }
        if let Some(limit) = body.limit {
            facts.push(format!("limit={limit}"));
        }
    }
    if facts.is_empty() {
        format!("{code}: {}", body.message)
    } else {
        format!("{code} ({}): {}", facts.join(", "), body.message)
    }
}
