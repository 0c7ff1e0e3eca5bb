//! JSON shapes of the REST API (`/api/v1`), shared by the control plane and `wgctl`.
//!
//! Times are RFC 3339 UTC strings; durations are whole seconds (`*_seconds`). These shapes are
//! the stable `-o json` output of `wgctl`; fields are only ever added.

use serde::{Deserialize, Serialize};

use crate::handoff::HandoffState;
use crate::lifecycle::{EndReason, SessionState};
use crate::resources::Role;

/// The terminal a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PtyInfo {
    /// `TERM`, e.g. `xterm-256color`.
    pub term: String,
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

/// The recording of a session as far as the control plane knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordingInfo {
    /// `full`, `metadata` or `off`.
    pub mode: String,
    /// Chunks written so far.
    pub chunks: u32,
    /// Bytes of recording stream written so far.
    pub bytes: u64,
    /// `recording`, `sealed` or `partial`.
    pub status: String,
    /// The seal (SHA-256 of the whole stream, hex), once sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One session, as listed and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// `sess_…`.
    pub id: String,
    /// Lifecycle state.
    pub state: SessionState,
    /// The owning actor.
    pub actor: String,
    /// The actor's groups at decision time.
    pub actor_groups: Vec<String>,
    /// Target name.
    pub target: String,
    /// Target address `host:port`.
    pub target_address: String,
    /// `ssh`, `pg`, `rdp`.
    pub protocol: String,
    /// Injected account, once decided.
    pub account: Option<String>,
    /// The account's vault path.
    pub vault_path: Option<String>,
    /// The admitting policy.
    pub policy: Option<String>,
    /// MFA method used, if any.
    pub mfa: Option<String>,
    /// Owning gateway name.
    pub gateway: String,
    /// Owning gateway address.
    pub gateway_address: Option<String>,
    /// Client IP.
    pub client_ip: Option<String>,
    /// Client geolocation (`City, CC`) when a GeoIP database is configured.
    pub client_geo: Option<String>,
    /// Client software (SSH ident, libpq application name).
    pub client_software: Option<String>,
    /// PTY, if one was requested.
    pub pty: Option<PtyInfo>,
    /// Recording state.
    pub recording: Option<RecordingInfo>,
    /// When the session was requested (RFC 3339).
    pub started_at: String,
    /// Seconds since `started_at` (or its total length once closed).
    pub age_seconds: i64,
    /// Seconds since the last meaningful user input.
    pub idle_seconds: i64,
    /// When it closed (RFC 3339).
    pub ended_at: Option<String>,
    /// Why it closed.
    pub end_reason: Option<EndReason>,
    /// The reason text of a termination or denial.
    pub end_detail: Option<String>,
    /// Exit status of the remote command, when there was one.
    pub exit_status: Option<i32>,
    /// The pending handoff of the session, while one waits for its incoming owner.
    #[serde(default)]
    pub handoff: Option<HandoffView>,
}

/// `GET /api/v1/sessions` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionList {
    /// Matching sessions, newest first.
    pub sessions: Vec<SessionView>,
    /// Present when more sessions match than the page holds: pass it as `cursor` for the next
    /// page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/sessions/{id}/terminate` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    /// Required: why (lands on the audit event).
    pub reason: String,
}

/// A sealed recording's summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SealInfo {
    /// Number of chunks.
    pub chunks: u32,
    /// Total bytes of the recording stream.
    pub bytes: u64,
    /// SHA-256 of the concatenated chunks (hex).
    pub sha256: String,
    /// `sealed` or `partial`.
    pub status: String,
}

/// `POST /api/v1/sessions/{id}/terminate` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TerminateResponse {
    /// The session.
    pub session: String,
    /// Its state after the call (`closed`).
    pub state: SessionState,
    /// `true` when the session was already closed: nothing was done.
    pub already_closed: bool,
    /// When it was terminated (or closed, if already closed), RFC 3339.
    pub terminated_at: Option<String>,
    /// End reason.
    pub end_reason: Option<EndReason>,
    /// The seal, where the session was recorded.
    pub recording: Option<SealInfo>,
    /// The session's recording mode (`full`, `metadata`, `off`); empty for a session that
    /// ended before its access was decided (nothing was ever recorded).
    #[serde(default)]
    pub recording_mode: String,
}

/// `POST /api/v1/apply` body: the resource file's text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyRequest {
    /// YAML, one or more documents.
    pub yaml: String,
}

/// One applied resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedResource {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub action: String,
}

/// `POST /api/v1/apply` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyResponse {
    /// What was done, in file order.
    pub applied: Vec<AppliedResource>,
}

/// `PUT /api/v1/vault/{path}` body. The secret is never returned by any API.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VaultPutRequest {
    /// `password` or `private_key`.
    pub kind: String,
    /// The secret (a password, or an OpenSSH private key in PEM form).
    pub secret: String,
}

impl std::fmt::Debug for VaultPutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultPutRequest")
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Metadata of a vault entry (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VaultEntry {
    /// Vault path.
    pub path: String,
    /// `password` or `private_key`.
    pub kind: String,
    /// Last written (RFC 3339).
    pub updated_at: String,
}

/// An audit event as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// Position in the chain.
    pub seq: i64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// Kind.
    pub kind: String,
    /// Acting principal.
    pub actor: Option<String>,
    /// Session.
    pub session: Option<String>,
    /// Reason.
    pub reason: Option<String>,
    /// Details.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Previous hash.
    pub prev: String,
    /// Hash.
    pub hash: String,
}

/// `GET /api/v1/audit` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    /// Events in chain order.
    pub events: Vec<AuditEventView>,
}

/// `GET /api/v1/audit/verify` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerify {
    /// Whether the whole chain verified.
    pub ok: bool,
    /// Events checked.
    pub events: i64,
    /// The first problem found.
    pub error: Option<String>,
}

/// `GET /api/v1/recordings/{id}/verify` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordingVerify {
    /// Session.
    pub session: String,
    /// Whether every chunk and the seal match.
    pub ok: bool,
    /// `sealed` or `partial`.
    pub status: String,
    /// Chunks.
    pub chunks: u32,
    /// Bytes.
    pub bytes: u64,
    /// The seal recorded in the manifest.
    pub sha256: String,
    /// What did not match.
    pub problems: Vec<String>,
}

/// Current use of one concurrency scope key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitUsage {
    /// `actor`, `target`, `policy` or `gateway`.
    pub scope: String,
    /// The actor, target, policy or gateway name.
    pub key: String,
    /// Live sessions holding a slot.
    pub used: i64,
    /// The limit in force (`None`: unlimited or not known to the control plane).
    pub limit: Option<u32>,
}

/// `GET /api/v1/limits/usage` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitsUsage {
    /// One row per scope key, ordered by scope and key.
    pub usage: Vec<LimitUsage>,
}

/// `POST /api/v1/sessions/terminate` body: terminate every live session matching all the given
/// selectors (at least one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)] // a misspelt selector must not widen the cut
pub struct BulkTerminateRequest {
    /// Required: why (lands on every session's audit event).
    pub reason: String,
    /// Sessions of this actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Sessions to this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Sessions to targets carrying this tag, written `key=value`: when the session was
    /// requested (the tags are kept on the session) or now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tag: Option<String>,
    /// Sessions of this protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A session a bulk termination could not end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkFailure {
    /// The session.
    pub session: String,
    /// What went wrong.
    pub error: String,
}

/// `POST /api/v1/sessions/terminate` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkTerminateResponse {
    /// The bulk-operation ID shared by every `session.terminated` event of this call.
    pub bulk_operation: String,
    /// Sessions this call terminated, each with its sealed recording.
    pub terminated: Vec<TerminateResponse>,
    /// Sessions that could not be terminated.
    pub failed: Vec<BulkFailure>,
    /// Matching sessions this call did not terminate because they had ended meanwhile (on their
    /// own, or terminated by another operation that got there first).
    #[serde(default)]
    pub already_ended: u32,
}

/// `POST /api/v1/sessions/{id}/handoff` body: offer the session to another principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffRequest {
    /// The incoming owner: a user or service principal holding a policy that permits the
    /// session's target, account and protocol.
    pub to: String,
    /// Required: why (lands on the audit events).
    pub reason: String,
    /// How long the incoming owner has to accept, in whole seconds (default 300, at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A handoff offer: `POST /api/v1/sessions/{id}/handoff` and `…/accept` responses, and the
/// `handoff` of a session view while it is pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HandoffView {
    /// The session.
    pub session: String,
    /// The owner when the handoff was requested (the previous owner once accepted).
    pub from: String,
    /// The incoming owner.
    pub to: String,
    /// Who asked for it: the owner, or an operator.
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// `pending`, `accepted`, `expired` or `cancelled`.
    pub state: HandoffState,
    /// When it was requested (RFC 3339).
    pub requested_at: String,
    /// The end of the window to accept (RFC 3339).
    pub expires_at: String,
    /// The window's length in seconds.
    pub ttl_seconds: u64,
    /// When it was accepted, expired or cancelled (RFC 3339).
    pub decided_at: Option<String>,
    /// Once accepted: the policy under which the new owner holds the session.
    pub policy: Option<String>,
}

/// `POST /api/v1/tokens` body: issue an API token for an existing user or service principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// The principal the token acts as, e.g. `dan@corp`.
    pub principal: String,
}

/// `POST /api/v1/tokens` response. The token is shown here once; only its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// The principal the token acts as.
    pub principal: String,
    /// The bearer token (`wgt_…`).
    pub token: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("principal", &self.principal)
            .field("token", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// `GET /api/v1/whoami` response: the principal the bearer token acts as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The principal, e.g. `dan@corp`.
    pub principal: String,
    /// `auditor`, `operator` or `admin`; `null` for a plain user or a service principal.
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
}

/// `POST /api/v1/gateways/tokens` body: a one-time join token for a gateway pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    /// The pool the joining gateway enters (1–32 of `a-z 0-9 -`); its name becomes `gw-POOL-N`.
    pub pool: String,
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /api/v1/gateways/tokens` response. The token is shown here once; only the SHA-256 of its
/// secret part is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinTokenCreated {
    /// The join token (`wgj_SECRET.CA_SHA256`), for the gateway's config (`joinToken`): the
    /// gateway refuses a control plane whose CA certificate does not have that SHA-256.
    pub token: String,
    /// Its pool.
    pub pool: String,
    /// When it stops being accepted (RFC 3339).
    pub expires_at: String,
    /// SHA-256 (hex) of the control plane's CA certificate, the pin the token carries.
    #[serde(default)]
    pub ca_sha256: String,
}

impl std::fmt::Debug for JoinTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokenCreated")
            .field("pool", &self.pool)
            .field("ca_sha256", &self.ca_sha256)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/gateways/tokens/{id}/revoke` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinTokenRevoked {
    /// The token's ID (first 12 hex digits of its SHA-256).
    pub id: String,
    /// Its pool.
    pub pool: String,
    /// `true` when it had been revoked before: nothing changed.
    pub already_revoked: bool,
}

/// One join token in `GET /api/v1/gateways/tokens` (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinTokenView {
    /// The first 12 hex digits of the token's SHA-256.
    pub id: String,
    /// Its pool.
    pub pool: String,
    /// Who created it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it stops being accepted (RFC 3339).
    pub expires_at: String,
    /// `unused`, `used`, `expired` or `revoked`.
    pub state: String,
    /// The gateway that joined with it.
    pub used_by: Option<String>,
}

/// One gateway in `GET /api/v1/gateways`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayView {
    /// Its name, e.g. `gw-us-1`.
    pub name: String,
    /// Its pool (`-` for the in-process `dev` gateway).
    pub pool: String,
    /// The address clients reach it on.
    pub address: String,
    /// Its software version.
    pub version: String,
    /// Sessions not closed on it.
    pub live_sessions: u64,
    /// Its last heartbeat (RFC 3339).
    pub last_heartbeat: String,
    /// `live`, `lost` or `removed`.
    pub state: String,
    /// When its client certificate expires (RFC 3339); `None` for the in-process `dev`
    /// gateway. Certificates are not renewed automatically yet: a gateway must join again
    /// before this (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_at: Option<String>,
}

/// `GET /api/v1/gateways/tokens` response (an object, as `GET /api/v1/gateways`'s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinTokenList {
    /// Every join token, newest first.
    pub tokens: Vec<JoinTokenView>,
}

/// `GET /api/v1/gateways` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayList {
    /// Every gateway, by name.
    pub gateways: Vec<GatewayView>,
}
