//! The HTTP client for the control plane's REST API (`/api/v1`).
//!
//! Plain `http://` only: this build carries no TLS provider. Every non-2xx answer becomes a
//! [`CliError`]: a structured [`ErrorBody`] when the server sent one, otherwise the status and the
//! start of the body. Connection failures and timeouts become [`CliError::Unreachable`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wg_domain::{ErrorBody, ErrorCode};

use crate::error::CliError;

/// The address used when neither `--addr` nor `WGCTL_ADDR` is given.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8080";

/// How long to wait for a TCP connection to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary API call may take end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a recording download may take end to end.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest error body quoted in a message.
const MAX_ERROR_TEXT: usize = 200;

/// A connection to one control plane.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client for the control plane at `addr` (see [`normalize_addr`]), authenticating with the
    /// bearer `token` when one is given (an empty token counts as none).
    ///
    /// # Errors
    /// [`CliError::Usage`] for an address that is not a plain `http://` URL; [`CliError::Failed`]
    /// when the HTTP client cannot be built.
    pub fn new(addr: &str, token: Option<&str>) -> Result<Self, CliError> {
        let base = normalize_addr(addr)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("wgctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Failed(format!("cannot set up the HTTP client: {e}")))?;
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(ApiClient { http, base, token })
    }

    /// The normalised base URL, e.g. `http://127.0.0.1:8080`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path?query` and decode the JSON answer. Query pairs with an empty value are skipped.
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T, CliError> {
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let req = self.request(Method::GET, path).query(&pairs);
        let resp = self.execute(req, path).await?;
        decode(resp, path).await
    }

    /// `method path` with a JSON body, decoding the JSON answer.
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let req = self.request(method, path).json(body);
        let resp = self.execute(req, path).await?;
        decode(resp, path).await
    }

    /// `DELETE path`, expecting an empty success answer.
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        let req = self.request(Method::DELETE, path);
        self.execute(req, path).await.map(drop)
    }

    /// `GET path` and return the raw body bytes (a recording stream).
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CliError> {
        let req = self.request(Method::GET, path).timeout(DOWNLOAD_TIMEOUT);
        let resp = self.execute(req, path).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(e, path))?;
        Ok(bytes.to_vec())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(REQUEST_TIMEOUT);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn execute(&self, req: RequestBuilder, path: &str) -> Result<Response, CliError> {
        let resp = req.send().await.map_err(|e| self.transport(e, path))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(self.error_from(status.as_u16(), status.canonical_reason(), &text))
    }

    /// Builds the error for a non-2xx answer.
    fn error_from(&self, status: u16, reason: Option<&str>, text: &str) -> CliError {
        error_from_response(status, reason, text, self.token.is_some())
    }

    fn transport(&self, e: reqwest::Error, path: &str) -> CliError {
        let cause = root_cause(&e);
        if e.is_connect() || e.is_timeout() {
            CliError::Unreachable(format!(
                "cannot reach the control plane at {}: {cause}",
                self.base
            ))
        } else if e.is_request() || e.is_body() {
            CliError::Unreachable(format!("request to {}{path} failed: {cause}", self.base))
        } else {
            CliError::Failed(format!("{}{path}: {cause}", self.base))
        }
    }
}

/// Turns a non-2xx answer into a [`CliError`]: the structured body if it parses, else the status
/// and the start of the text. A 401 without a token gets a hint on how to pass one.
pub fn error_from_response(
    status: u16,
    reason: Option<&str>,
    text: &str,
    had_token: bool,
) -> CliError {
    if let Ok(mut body) = serde_json::from_str::<ErrorBody>(text) {
        if body.error == ErrorCode::Unauthorized && !had_token {
            body.message
                .push_str(" (no token given: set WGCTL_TOKEN or pass --token)");
        }
        return CliError::Api { status, body };
    }
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut text: String = first.trim().chars().take(MAX_ERROR_TEXT).collect();
    if text.is_empty() {
        text = reason.unwrap_or("error").to_owned();
    }
    if status == 401 && !had_token {
        text.push_str(" (no token given: set WGCTL_TOKEN or pass --token)");
    }
    CliError::Http { status, text }
}

async fn decode<T: DeserializeOwned>(resp: Response, path: &str) -> Result<T, CliError> {
    let bytes = resp.bytes().await.map_err(|e| {
        CliError::Unreachable(format!("reading the answer to {path}: {}", root_cause(&e)))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Failed(format!(
            "unexpected answer from the control plane to {path}: {e}"
        ))
    })
}

/// The innermost error message of a chain (e.g. `Connection refused (os error 111)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Normalises a control-plane address: a bare `host:port` gets `http://`, a trailing `/` is
/// dropped; `https://` is refused (this build has no TLS provider) as is any other scheme.
///
/// # Errors
/// [`CliError::Usage`] naming the problem.
pub fn normalize_addr(addr: &str) -> Result<String, CliError> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(CliError::Usage(
            "empty control-plane address: set WGCTL_ADDR or pass --addr http://HOST:PORT".into(),
        ));
    }
    let with_scheme = if let Some((scheme, _)) = addr.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "http" => addr.to_owned(),
            "https" => {
                return Err(CliError::Usage(format!(
                    "{addr}: https is not supported by this build of wgctl (no TLS); use http://HOST:PORT"
                )));
            }
            other => {
                return Err(CliError::Usage(format!(
                    "{addr}: unsupported scheme {other:?}; use http://HOST:PORT"
                )));
            }
        }
    } else {
        format!("http://{addr}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| CliError::Usage(format!("invalid control-plane address {addr:?}: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(CliError::Usage(format!(
            "invalid control-plane address {addr:?}: no host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "invalid control-plane address {addr:?}: no query or fragment allowed"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Builds `/api/v1/<seg>/<seg>…`, percent-encoding each segment.
pub fn api_path(segments: &[&str]) -> String {
    let mut out = String::from("/api/v1");
    for s in segments {
        out.push('/');
        out.push_str(&encode_segment(s));
    }
    out
}

/// Percent-encodes one path segment (everything but unreserved characters and `@`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            normalize_addr("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_addr("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_addr("http://cp.example:80/prefix").unwrap(),
            "http://cp.example/prefix"
        );
        for bad in [
            "",
            "https://cp:443",
            "ftp://x",
            "http://",
            "http://h:1/?a=b",
        ] {
            let e = normalize_addr(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
        assert!(
            normalize_addr("https://cp:443")
                .unwrap_err()
                .to_string()
                .contains("https is not supported")
        );
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            api_path(&["resources", "user", "alice@corp"]),
            "/api/v1/resources/user/alice@corp"
        );
        assert_eq!(
            api_path(&["resources", "target", "a b/../c?d"]),
            "/api/v1/resources/target/a%20b%2F..%2Fc%3Fd"
        );
    }

    #[test]
    fn error_bodies() {
        let e = error_from_response(
            429,
            Some("Too Many Requests"),
            r#"{"error":"concurrency_limit","message":"target at capacity","scope":"target","limit":5,"target":"web-01.prod"}"#,
            true,
        );
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.to_string(),
            "concurrency_limit (scope=target, limit=5): target at capacity"
        );
        let e = error_from_response(502, Some("Bad Gateway"), "<html>\n<b>oops</b>", true);
        assert_eq!(e.to_string(), "HTTP 502: <html>");
        assert_eq!(e.exit_code(), 5);
        let e = error_from_response(404, Some("Not Found"), "", true);
        assert_eq!(e.to_string(), "HTTP 404: Not Found");
        assert_eq!(e.exit_code(), 3);
        let e = error_from_response(
            401,
            None,
            r#"{"error":"unauthorized","message":"missing bearer token"}"#,
            false,
        );
        assert!(e.to_string().contains("WGCTL_TOKEN"), "{e}");
    }
}
