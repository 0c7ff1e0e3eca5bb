//! The resource model applied with `wgctl apply -f FILE` (PRODUCT.md §2).
//!
//! A file holds one or more YAML documents separated by `---`; each has a `kind`. Parsing is
//! all-or-nothing: [`parse_documents`] returns every resource or the first error, with the line and
//! column in the file where it was found.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::serde_duration;

/// Protocols a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SSH (RFC 4251-4254).
    Ssh,
    /// PostgreSQL frontend/backend protocol v3.
    Pg,
    /// Remote Desktop Protocol.
    Rdp,
}

impl Protocol {
    /// The short name used in the list's PROTO column and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Pg => "pg",
            Protocol::Rdp => "rdp",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = crate::lifecycle::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ssh" => Ok(Protocol::Ssh),
            "pg" => Ok(Protocol::Pg),
            "rdp" => Ok(Protocol::Rdp),
            _ => Err(crate::lifecycle::UnknownName {
                what: "protocol",
                name: s.to_owned(),
            }),
        }
    }
}

/// Operator roles (PRODUCT.md §9). A user without a role is a plain user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List, show, recordings and audit.
    Auditor,
    /// List, show, terminate, shadow, approve.
    Operator,
    /// Everything.
    Admin,
}

/// MFA enrolment state of a user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaEnrolment {
    /// `enrolled` once a TOTP secret exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
}

/// `kind: user` — a human actor; `name` is the identity as the IdP reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    /// e.g. `alice@corp`.
    pub name: String,
    /// Group names, matched by `group:NAME` subjects.
    #[serde(default)]
    pub groups: Vec<String>,
    /// OpenSSH `authorized_keys`-style public keys.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// MFA enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaEnrolment>,
    /// Overrides the global `maxSessionsPerUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<u32>,
    /// Operator role for the API and `wgctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// `kind: servicePrincipal` — a non-human actor such as `svc_deploy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// e.g. `svc_deploy`.
    pub name: String,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// OpenSSH public keys.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Overrides the global `maxSessionsPerUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<u32>,
}

/// An account on a target, with the vault path of its credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The login name on the target.
    pub name: String,
    /// A vault path such as `vault/ssh/deploy-prod`.
    pub credential: String,
}

/// `kind: target` — a host or database reached through the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    /// e.g. `web-01.prod`.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// Free-form labels matched by policies and mass termination.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Accounts the gateway may inject.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// The pinned host key in OpenSSH public-key format (`ssh-ed25519 AAAA…`). Required for SSH
    /// targets: the gateway refuses a target whose key differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Overrides the global `maxSessionsPerTarget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_target: Option<u32>,
}

/// A tag selector `key=value` (e.g. `--target-tag env=prod`): both parts non-empty, the spaces
/// around each dropped. `None` when it is not of that form.
pub fn parse_tag_selector(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    let (k, v) = (k.trim(), v.trim());
    (!k.is_empty() && !v.is_empty()).then(|| (k.to_owned(), v.to_owned()))
}

/// Which targets a policy covers: by name, by tags (all must match), or both (either matches).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSelector {
    /// Target names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Tags that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// `mfa:` in a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MfaRequirement {
    /// No second factor.
    #[default]
    None,
    /// TOTP by keyboard-interactive.
    Required,
}

/// `recording:` in a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingMode {
    /// Output, input and resize events.
    #[default]
    Full,
    /// Only the session record and audit events.
    Metadata,
    /// Nothing recorded.
    Off,
}

impl RecordingMode {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingMode::Full => "full",
            RecordingMode::Metadata => "metadata",
            RecordingMode::Off => "off",
        }
    }
}

/// `shadow:` in a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShadowMode {
    /// Observers are announced to the session owner.
    #[default]
    Visible,
    /// Observers are not announced.
    Covert,
    /// No shadowing.
    Blocked,
}

/// `reconnect.mode:` in a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconnectMode {
    /// Keep the session for the grace period and re-attach.
    Resume,
    /// A new session after MFA; the old one is sealed.
    Reauth,
    /// No reconnect.
    #[default]
    Strict,
}

impl ReconnectMode {
    /// The lowercase name used in policies, the API and the gateway protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconnectMode::Resume => "resume",
            ReconnectMode::Reauth => "reauth",
            ReconnectMode::Strict => "strict",
        }
    }
}

/// `reconnect:` in a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    /// The mode.
    #[serde(default)]
    pub mode: ReconnectMode,
    /// Grace period (default 120 s).
    #[serde(default = "default_reconnect_grace", with = "serde_duration")]
    pub grace: Duration,
}

fn default_reconnect_grace() -> Duration {
    Duration::from_secs(120)
}

impl Reconnect {
    /// No reconnect (the behaviour when a session's policy is gone).
    pub fn strict() -> Self {
        Reconnect {
            mode: ReconnectMode::Strict,
            grace: default_reconnect_grace(),
        }
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            mode: ReconnectMode::default(),
            grace: default_reconnect_grace(),
        }
    }
}

/// `idle:` in a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idle {
    /// Time without meaningful input before the warning (default 15 min).
    #[serde(default = "default_idle_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// Time after the warning before the sever (default 60 s).
    #[serde(default = "default_idle_grace", with = "serde_duration")]
    pub grace: Duration,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_idle_grace() -> Duration {
    Duration::from_secs(60)
}

impl Default for Idle {
    fn default() -> Self {
        Idle {
            timeout: default_idle_timeout(),
            grace: default_idle_grace(),
        }
    }
}

/// `approval:` in a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Number of approvals needed.
    pub required: u32,
    /// Who may approve (`group:NAME` / `user:NAME`).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How long an approval stays valid.
    #[serde(default = "default_approval_ttl", with = "serde_duration")]
    pub ttl: Duration,
}

fn default_approval_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// `concurrency:` in a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Live sessions admitted by this policy at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// `forwarding:` in a policy: which port forwards the actor may open through the session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarding {
    /// Destinations of local forwards (`ssh -L`) as the target sees them, `HOST:PORT`; `*` for
    /// any host or any port (e.g. `127.0.0.1:5432`, `*:443`). Empty: no local forwarding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local: Vec<String>,
}

impl Forwarding {
    /// Whether a local forward to `host:port` is allowed.
    pub fn allows_local(&self, host: &str, port: u32) -> bool {
        self.local
            .iter()
            .any(|rule| forward_rule_matches(rule, host, port))
    }
}

/// Whether one `HOST:PORT` rule (either part may be `*`) matches a destination.
pub fn forward_rule_matches(rule: &str, host: &str, port: u32) -> bool {
    let Some((h, p)) = rule.rsplit_once(':') else {
        return false;
    };
    let host_ok = h == "*" || h.eq_ignore_ascii_case(host);
    let port_ok = p == "*" || p.parse::<u32>().is_ok_and(|p| p == port);
    host_ok && port_ok
}

/// One command filter rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandFilter {
    /// A regular expression; matching commands are refused.
    pub deny: String,
}

/// `kind: policy` — who may reach which targets, how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// e.g. `prod-ssh-write`.
    pub name: String,
    /// `group:NAME` or `user:NAME` (users and service principals).
    pub subjects: Vec<String>,
    /// The targets covered.
    #[serde(default)]
    pub targets: TargetSelector,
    /// Protocols allowed; empty means every protocol.
    #[serde(default)]
    pub protocols: Vec<Protocol>,
    /// Account names allowed; empty means every account of the target.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// MFA requirement.
    #[serde(default)]
    pub mfa: MfaRequirement,
    /// Approvals (not enforced yet: a policy that requires them denies, see ARCHITECTURE.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Recording mode.
    #[serde(default)]
    pub recording: RecordingMode,
    /// Shadowing mode.
    #[serde(default)]
    pub shadow: ShadowMode,
    /// Reconnect behaviour.
    #[serde(default)]
    pub reconnect: Reconnect,
    /// Idle disconnect.
    #[serde(default)]
    pub idle: Idle,
    /// Policy-scope concurrency.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Command filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_filters: Vec<CommandFilter>,
    /// Port forwarding allowed through the session (none by default).
    #[serde(default, skip_serializing_if = "is_default_forwarding")]
    pub forwarding: Forwarding,
}

fn is_default_forwarding(f: &Forwarding) -> bool {
    f.local.is_empty()
}

/// `kind: limits` — cluster-wide defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Always `default`; there is one limits resource.
    #[serde(default = "default_limits_name")]
    pub name: String,
    /// Default per-actor limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<u32>,
    /// Default per-target limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_target: Option<u32>,
}

fn default_limits_name() -> String {
    "default".to_owned()
}

/// The kinds of resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `user`
    User,
    /// `servicePrincipal`
    ServicePrincipal,
    /// `target`
    Target,
    /// `policy`
    Policy,
    /// `limits`
    Limits,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::User,
        Kind::ServicePrincipal,
        Kind::Target,
        Kind::Policy,
        Kind::Limits,
    ];

    /// The name used in YAML `kind:` and in `wgctl get KIND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::ServicePrincipal => "servicePrincipal",
            Kind::Target => "target",
            Kind::Policy => "policy",
            Kind::Limits => "limits",
        }
    }

    /// Parses a kind, accepting the YAML name, lowercase, and plural forms (`users`, `targets`).
    ///
    /// # Errors
    /// [`crate::lifecycle::UnknownName`] listing nothing else; the caller shows the valid kinds.
    pub fn parse(text: &str) -> Result<Kind, crate::lifecycle::UnknownName> {
        let t = text.to_ascii_lowercase();
        let t = t.strip_suffix('s').unwrap_or(&t);
        match t {
            "user" => Ok(Kind::User),
            "serviceprincipal" | "sp" => Ok(Kind::ServicePrincipal),
            "target" => Ok(Kind::Target),
            "policy" | "policie" | "policies" => Ok(Kind::Policy),
            "limit" => Ok(Kind::Limits),
            _ => Err(crate::lifecycle::UnknownName {
                what: "kind (user, servicePrincipal, target, policy, limits)",
                name: text.to_owned(),
            }),
        }
    }
}

/// One resource of any kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Resource {
    /// A human actor.
    User(User),
    /// A non-human actor.
    ServicePrincipal(ServicePrincipal),
    /// A target.
    Target(Target),
    /// A policy.
    Policy(Policy),
    /// Global limits.
    Limits(Limits),
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::User(_) => Kind::User,
            Resource::ServicePrincipal(_) => Kind::ServicePrincipal,
            Resource::Target(_) => Kind::Target,
            Resource::Policy(_) => Kind::Policy,
            Resource::Limits(_) => Kind::Limits,
        }
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            Resource::User(r) => &r.name,
            Resource::ServicePrincipal(r) => &r.name,
            Resource::Target(r) => &r.name,
            Resource::Policy(r) => &r.name,
            Resource::Limits(r) => &r.name,
        }
    }

    /// Checks what the type system cannot: names, addresses, subjects, keys.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        check_name(self.name())?;
        match self {
            Resource::User(u) => {
                for k in &u.ssh_keys {
                    check_public_key_text(k)?;
                }
                if u.max_sessions_per_user == Some(0) {
                    return Err("maxSessionsPerUser must be at least 1".into());
                }
            }
            Resource::ServicePrincipal(s) => {
                for k in &s.ssh_keys {
                    check_public_key_text(k)?;
                }
            }
            Resource::Target(t) => {
                // The SSH login ACTOR:sess_… names a live session: a target called like one
                // could never be reached.
                if t.name.parse::<crate::SessionId>().is_ok() {
                    return Err(format!(
                        "target name {:?} has the form of a session ID (sess_ + 12 hex), which logins read as a session",
                        t.name
                    ));
                }
                check_address(&t.address)?;
                for a in &t.accounts {
                    check_name(&a.name).map_err(|e| format!("accounts: {e}"))?;
                    if !a.credential.starts_with("vault/") {
                        return Err(format!(
                            "accounts[{}].credential must be a vault path like vault/ssh/NAME, got {:?}",
                            a.name, a.credential
                        ));
                    }
                }
                if let Some(k) = &t.host_key {
                    check_public_key_text(k).map_err(|e| format!("hostKey: {e}"))?;
                }
                if t.max_sessions_per_target == Some(0) {
                    return Err("maxSessionsPerTarget must be at least 1".into());
                }
            }
            Resource::Policy(p) => {
                if p.subjects.is_empty() {
                    return Err("subjects must name at least one group:NAME or user:NAME".into());
                }
                for s in &p.subjects {
                    match s.split_once(':') {
                        Some(("group" | "user", rest)) if !rest.is_empty() => {}
                        _ => {
                            return Err(format!("subject {s:?} must be group:NAME or user:NAME"));
                        }
                    }
                }
                if p.targets.names.is_empty() && p.targets.tags.is_empty() {
                    return Err("targets must give names or tags".into());
                }
                if p.concurrency.max == Some(0) {
                    return Err("concurrency.max must be at least 1".into());
                }
                if p.idle.timeout.is_zero() {
                    return Err("idle.timeout must be positive".into());
                }
                if p.idle.grace.is_zero() {
                    return Err("idle.grace must be positive (at least 1s)".into());
                }
                // A detached session holds its target leg, PTY and concurrency slots.
                if p.reconnect.grace > MAX_RECONNECT_GRACE {
                    return Err("reconnect.grace must be at most 24h".into());
                }
                for rule in &p.forwarding.local {
                    let ok = rule.rsplit_once(':').is_some_and(|(h, port)| {
                        !h.is_empty() && (port == "*" || port.parse::<u16>().is_ok_and(|n| n > 0))
                    });
                    if !ok {
                        return Err(format!(
                            "forwarding.local entry {rule:?} must be HOST:PORT (either may be *)"
                        ));
                    }
                }
            }
            Resource::Limits(l) => {
                if l.name != "default" {
                    return Err(
                        "limits must be named default (there is one limits resource)".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Longest `reconnect.grace` a policy may give.
const MAX_RECONNECT_GRACE: Duration = Duration::from_secs(24 * 3600);

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("name {name:?} must be 1 to 253 characters"));
    }
    if name
        .chars()
        .any(|c| c == ':' || c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "name {name:?} must not contain ':', '/', spaces or control characters"
        ));
    }
    Ok(())
}

fn check_address(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} must be host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "address {addr:?} must be host:port with a port 1-65535"
        ));
    }
    Ok(())
}

/// Checks that `text` looks like an OpenSSH public key line (`ALGO BASE64 [COMMENT]`). The full
/// decoding happens where the key is used (the SSH crate); this catches pasted garbage early.
fn check_public_key_text(text: &str) -> Result<(), String> {
    let mut parts = text.split_whitespace();
    let algo = parts.next().unwrap_or("");
    let blob = parts.next().unwrap_or("");
    let known =
        algo.starts_with("ssh-") || algo.starts_with("ecdsa-sha2-") || algo.starts_with("sk-");
    if !known
        || blob.len() < 16
        || !blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    {
        return Err(format!(
            "{:?} is not an OpenSSH public key (expected e.g. \"ssh-ed25519 AAAA... comment\")",
            text.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// An error in a resource file, with its position (1-based line and column) when known.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}", self.render())]
pub struct ParseError {
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    fn render(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: {}", self.message),
            (Some(l), None) => format!("line {l}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

#[derive(Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

/// Parses every YAML document of a resource file and validates each resource.
///
/// Documents are separated by lines that are exactly `---` (or end with `...`), as in YAML 1.2
/// §9.1; empty documents are skipped. Unknown fields are errors (a typo must not silently drop a
/// restriction).
///
/// # Errors
/// The first [`ParseError`]; its line and column are positions in the whole file.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ParseError> {
    let mut out = Vec::new();
    let mut seen: std::collections::HashMap<(Kind, String), usize> =
        std::collections::HashMap::new();
    for (offset, doc) in split_documents(text) {
        if doc.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        let at = |e: serde_yaml_ng::Error| {
            let loc = e.location();
            // serde_yaml_ng appends " at line L column C" to the message; strip it, we say it.
            let mut message = e.to_string();
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            ParseError {
                line: loc.as_ref().map(|l| l.line() + offset),
                column: loc.as_ref().map(|l| l.column()),
                message,
            }
        };
        let kind: KindOnly = serde_yaml_ng::from_str(doc).map_err(at)?;
        let first_line = doc
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap_or(0)
            + 1
            + offset;
        let Some(kind) = kind.kind else {
            return Err(ParseError {
                line: Some(first_line),
                column: Some(1),
                message: "document has no `kind` (user, servicePrincipal, target, policy, limits)"
                    .into(),
            });
        };
        let resource = match kind.as_str() {
            "user" => Resource::User(from_doc(doc).map_err(at)?),
            "servicePrincipal" => Resource::ServicePrincipal(from_doc(doc).map_err(at)?),
            "target" => Resource::Target(from_doc(doc).map_err(at)?),
            "policy" => Resource::Policy(from_doc(doc).map_err(at)?),
            "limits" => Resource::Limits(from_doc(doc).map_err(at)?),
            other => {
                return Err(ParseError {
                    line: Some(first_line),
                    column: Some(1),
                    message: format!(
                        "unknown kind {other:?} (expected user, servicePrincipal, target, policy, limits)"
                    ),
                });
            }
        };
        resource.validate().map_err(|message| ParseError {
            line: Some(first_line),
            column: Some(1),
            message: format!(
                "{} {:?}: {message}",
                resource.kind().as_str(),
                resource.name()
            ),
        })?;
        if let Some(earlier) =
            seen.insert((resource.kind(), resource.name().to_owned()), first_line)
        {
            return Err(ParseError {
                line: Some(first_line),
                column: Some(1),
                message: format!(
                    "{} {:?} is defined twice (also at line {earlier})",
                    resource.kind().as_str(),
                    resource.name()
                ),
            });
        }
        out.push(resource);
    }
    Ok(out)
}

/// Deserialises a document into `T`, ignoring its `kind` key.
///
/// `#[serde(flatten)]` would disable `deny_unknown_fields` on `T`, so the top-level `kind:` line is
/// turned into a comment of the same length instead: every other line and column stays where it
/// was, and error locations still point into the original text.
fn from_doc<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(&blank_kind_line(doc))
}

/// Replaces the top-level `kind:` line with a comment of the same length, keeping every other
/// line and column where it was.
fn blank_kind_line(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    for line in doc.split_inclusive('\n') {
        if line.starts_with("kind:") {
            out.push('#');
            out.push_str(&line[1..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Splits a multi-document YAML text into `(line offset, document text)` pairs.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 0;
    let mut pos = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            docs.push((start_line, &text[start_byte..pos]));
            start_byte = pos + line.len();
            start_line = i + 1;
        }
        pos += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_selectors_need_a_key_and_a_value() {
        assert_eq!(
            parse_tag_selector(" env = prod "),
            Some(("env".into(), "prod".into()))
        );
        assert_eq!(
            parse_tag_selector("a=b=c"),
            Some(("a".into(), "b=c".into()))
        );
        for bad in ["env", "env=", "=prod", " = ", ""] {
            assert_eq!(parse_tag_selector(bad), None, "{bad:?}");
        }
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq7 alice@laptop";

    #[test]
    fn parses_the_product_example() {
        let text = format!(
            r#"kind: user
name: alice@corp
groups: [sre]
sshKeys: ["{KEY}"]
maxSessionsPerUser: 3
---
kind: servicePrincipal
name: svc_deploy
groups: [deployers]
---
kind: target
name: web-01.prod
address: 10.10.4.20:22
protocol: ssh
tags: {{env: prod, team: web}}
accounts:
  - name: deploy
    credential: vault/ssh/deploy-prod
maxSessionsPerTarget: 5
---
kind: policy
name: prod-ssh-write
subjects: [group:sre, user:alice@corp]
targets: {{tags: {{env: prod}}}}
protocols: [ssh]
accounts: [deploy]
mfa: required
approval: {{required: 1, approvers: [group:sre-leads], ttl: 1h}}
recording: full
shadow: visible
reconnect: {{mode: resume, grace: 120s}}
idle: {{timeout: 15m, grace: 60s}}
concurrency: {{max: 1}}
commandFilters: [{{deny: "^rm -rf /"}}]
---
kind: limits
maxSessionsPerUser: 3
maxSessionsPerTarget: 5
"#
        );
        let rs = parse_documents(&text).unwrap();
        assert_eq!(rs.len(), 5);
        let Resource::Policy(p) = &rs[3] else {
            panic!("expected policy")
        };
        assert_eq!(p.idle.timeout, Duration::from_secs(900));
        assert_eq!(p.reconnect.mode, ReconnectMode::Resume);
        assert_eq!(p.concurrency.max, Some(1));
        assert_eq!(rs[4].name(), "default");
    }

    #[test]
    fn syntax_error_names_line_and_column_in_the_file() {
        let text = "kind: user\nname: a@corp\n---\nkind: target\nname: t\naddress: [unclosed\n";
        let e = parse_documents(text).unwrap_err();
        assert!(e.line.unwrap() >= 6, "{e:?}");
        assert!(e.column.is_some());
        assert!(e.to_string().starts_with("line "), "{e}");
    }

    #[test]
    fn unknown_field_is_an_error_with_position() {
        let text = "kind: user\nname: a@corp\ngroup: [sre]\n";
        let e = parse_documents(text).unwrap_err();
        assert_eq!(e.line, Some(3), "{e:?}");
        assert!(e.message.contains("group"), "{e}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (text, needle) in [
            (
                "kind: target\nname: t\naddress: nohost\nprotocol: ssh\n",
                "host:port",
            ),
            (
                "kind: target\nname: t\naddress: h:22\nprotocol: telnet\n",
                "telnet",
            ),
            (
                "kind: policy\nname: p\nsubjects: [alice]\ntargets: {names: [t]}\n",
                "group:NAME",
            ),
            ("kind: widget\nname: w\n", "unknown kind"),
            (
                "kind: user\nname: a\n---\nkind: user\nname: a\n",
                "defined twice (also at line 1)",
            ),
            (
                "kind: user\nname: a\n---\nkind: user\nname: a\n",
                "defined twice",
            ),
            ("name: w\n", "no `kind`"),
            ("kind: user\nname: a:b\n", "must not contain"),
            (
                "kind: user\nname: a\nsshKeys: [\"hello\"]\n",
                "not an OpenSSH public key",
            ),
            (
                "kind: policy\nname: p\nsubjects: [user:a]\ntargets: {names: [t]}\nidle: {timeout: soon}\n",
                "invalid duration",
            ),
            (
                "kind: target\nname: sess_0123456789ab\naddress: h:22\nprotocol: ssh\n",
                "form of a session ID",
            ),
            (
                "kind: policy\nname: p\nsubjects: [user:a]\ntargets: {names: [t]}\nreconnect: {mode: resume, grace: 25h}\n",
                "at most 24h",
            ),
        ] {
            let e = parse_documents(text).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }
}
