//! The command line of `wgctl` (clap derive). Every command carries an example in its `--help`.
//!
//! Values are checked here, before any request is sent, so that a typo is a usage error (exit 2)
//! with clap's usual message rather than a round trip to the server.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use wg_domain::resources::{Kind, Protocol};
use wg_domain::{SessionId, SessionState};

use crate::client::DEFAULT_ADDR;

/// The gateway's SSH address used when neither `--ssh-addr` nor `WGCTL_SSH_ADDR` is given (the
/// default of `wardengate dev`).
pub const DEFAULT_SSH_ADDR: &str = "127.0.0.1:3022";

const TOP_HELP: &str = "\
Connection:
  WGCTL_ADDR      control-plane URL, plain http (default http://127.0.0.1:8080); --addr overrides
  WGCTL_TOKEN     bearer token; --token overrides (prefer the variable: flags show up in `ps`)
  WGCTL_SSH_ADDR  the gateway's SSH HOST:PORT for `session accept` and `session attach`
                  (default 127.0.0.1:3022); --ssh-addr overrides

Exit codes:
  0  success
  1  other failure, including a recording or audit chain that does not verify
  2  bad request or usage error
  3  not found
  4  denied (unauthorized, forbidden, policy_denied, concurrency_limit, handoff_expired)
  5  control plane unreachable (connection refused, timeout, HTTP 503)

Examples:
  export WGCTL_ADDR=http://127.0.0.1:8080 WGCTL_TOKEN=...
  wgctl session list
  wgctl session terminate sess_a91c7f20bb48 --reason \"credential revoked\"";

/// The gateway's SSH address: `--ssh-addr`, else `WGCTL_SSH_ADDR`, else 127.0.0.1:3022.
///
/// # Errors
/// [`crate::error::CliError::Usage`] when `WGCTL_SSH_ADDR` is not `HOST:PORT`.
pub fn ssh_addr(flag: Option<&SshAddr>) -> Result<SshAddr, crate::error::CliError> {
    if let Some(a) = flag {
        return Ok(a.clone());
    }
    let text = env_value("WGCTL_SSH_ADDR").unwrap_or_else(|| DEFAULT_SSH_ADDR.to_owned());
    parse_ssh_addr(&text).map_err(|e| crate::error::CliError::Usage(format!("WGCTL_SSH_ADDR: {e}")))
}

/// The value of environment variable `name`, if set and not blank.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `wgctl`: operate Wardengate over its REST API.
#[derive(Debug, Parser)]
#[command(
    name = "wgctl",
    version,
    about = "Operate Wardengate: live sessions, resources, vault, recordings and the audit log.",
    after_help = TOP_HELP,
    propagate_version = true
)]
pub struct Cli {
    // The connection flags (and `--ssh-addr`) fall back to WGCTL_ADDR / WGCTL_TOKEN /
    // WGCTL_SSH_ADDR in `control_url`, `bearer_token` and `ssh_addr`, not through clap's `env`:
    // clap counts an argument set from the environment as given and prints it in every usage
    // line, as if it were required.
    /// Control-plane URL (plain http) [default: WGCTL_ADDR, else http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URL")]
    pub addr: Option<String>,
    /// Bearer token for the API [default: WGCTL_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The control-plane URL: `--addr`, else `WGCTL_ADDR`, else `http://127.0.0.1:8080`.
    pub fn control_url(&self) -> String {
        self.addr
            .clone()
            .or_else(|| env_value("WGCTL_ADDR"))
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned())
    }

    /// The bearer token: `--token`, else `WGCTL_TOKEN`, else none.
    pub fn bearer_token(&self) -> Option<String> {
        self.token.clone().or_else(|| env_value("WGCTL_TOKEN"))
    }
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, inspect, terminate and hand off sessions.
    #[command(
        subcommand,
        after_help = "Examples:\n  wgctl session list --idle-gt 5m\n  wgctl session show sess_a91c7f20bb48\n  wgctl session terminate sess_a91c7f20bb48 --reason \"policy review\"\n  wgctl session handoff sess_a91c7f20bb48 --to dan@corp --reason \"shift change\""
    )]
    Session(SessionCmd),
    /// Create or update resources from a YAML file.
    #[command(
        after_help = "Each resource is reported as `<kind>/<name> <action>`.\n\nExamples:\n  wgctl apply -f resources.yaml\n  wgctl get target -o yaml | wgctl apply -f -"
    )]
    Apply(ApplyArgs),
    /// List resources of a kind, or show one.
    #[command(
        after_help = "Kinds: user, servicePrincipal, target, policy, limits (plurals and lowercase accepted).\n\nExamples:\n  wgctl get targets\n  wgctl get policy prod-ssh-write -o yaml"
    )]
    Get(GetArgs),
    /// Delete a resource.
    #[command(after_help = "Example:\n  wgctl delete target web-01.prod")]
    Delete(DeleteArgs),
    /// Store and list vault secrets (secrets are never shown).
    #[command(
        subcommand,
        after_help = "Examples:\n  printf %s \"$PW\" | wgctl vault put vault/ssh/deploy-prod --password-stdin\n  wgctl vault list"
    )]
    Vault(VaultCmd),
    /// Verify and replay session recordings.
    #[command(
        subcommand,
        after_help = "Examples:\n  wgctl recording verify sess_a91c7f20bb48\n  wgctl recording play sess_a91c7f20bb48 --speed 2 --max-idle 2s"
    )]
    Recording(RecordingCmd),
    /// Read and verify the audit log.
    #[command(
        subcommand,
        after_help = "Examples:\n  wgctl audit list --session sess_a91c7f20bb48\n  wgctl audit verify"
    )]
    Audit(AuditCmd),
    /// Issue API tokens for users and service principals (admins only).
    #[command(
        subcommand,
        after_help = "Example:\n  WGCTL_TOKEN=$(wgctl token create dan@corp) wgctl session accept sess_a91c7f20bb48"
    )]
    Token(TokenCmd),
    /// List gateways, issue join tokens, revoke gateways.
    #[command(
        subcommand,
        after_help = "Examples:\n  wgctl gateway list\n  wgctl gateway token create --pool us --ttl 1h\n  wgctl gateway remove gw-us-2"
    )]
    Gateway(GatewayCmd),
    /// Show concurrency use against limits.
    #[command(
        subcommand,
        after_help = "Examples:\n  wgctl limits usage\n  wgctl limits usage --actor alice@corp\n  wgctl limits usage --target web-01.prod -o json"
    )]
    Limits(LimitsCmd),
}

/// `wgctl gateway …`
#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// Every gateway: pool, address, version, live sessions, last heartbeat, state.
    #[command(after_help = "Example:\n  wgctl gateway list -o json")]
    List(GatewayListArgs),
    /// One-time join tokens for new gateways (admins only).
    #[command(
        subcommand,
        after_help = "Examples:\n  wgctl gateway token create --pool us --ttl 1h\n  wgctl gateway token list\n  wgctl gateway token revoke 3f0b9c2d41aa"
    )]
    Token(GatewayTokenCmd),
    /// Revoke a gateway: its credential is refused and its stream cut (admins only).
    #[command(after_help = "Example:\n  wgctl gateway remove gw-us-2")]
    Remove(GatewayRemoveArgs),
}

/// `wgctl gateway list` flags.
#[derive(Debug, Args)]
pub struct GatewayListArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
}

/// `wgctl gateway remove` arguments.
#[derive(Debug, Args)]
pub struct GatewayRemoveArgs {
    /// The gateway, e.g. gw-us-2.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `wgctl gateway token …`
#[derive(Debug, Subcommand)]
pub enum GatewayTokenCmd {
    /// Create a one-time join token for a pool; the token alone goes to standard output.
    #[command(
        after_help = "Put the token in the gateway's config (joinToken) and start it: it joins as\n\
gw-POOL-N, receives its client certificate, and the token is spent. The token\n\
(wgj_SECRET.CA_SHA256) pins the control plane's CA: the gateway refuses a control\n\
plane with another CA.\n\nExample:\n  wgctl gateway token create --pool us --ttl 1h"
    )]
    Create(GatewayTokenCreateArgs),
    /// Every join token (never the token itself): pool, expiry, state, the gateway that used it.
    #[command(after_help = "Example:\n  wgctl gateway token list")]
    List(GatewayListArgs),
    /// Revoke an unused join token: a gateway presenting it is refused from now on.
    #[command(
        after_help = "ID is the token's ID column in `wgctl gateway token list`. A token a gateway has\n\
already joined with cannot be revoked: remove that gateway instead (wgctl gateway remove).\n\n\
Example:\n  wgctl gateway token revoke 3f0b9c2d41aa"
    )]
    Revoke(GatewayTokenRevokeArgs),
}

/// `wgctl gateway token revoke` arguments.
#[derive(Debug, Args)]
pub struct GatewayTokenRevokeArgs {
    /// The token's ID (12 hex digits), from `wgctl gateway token list`, or the token itself.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `wgctl gateway token create` flags.
#[derive(Debug, Args)]
pub struct GatewayTokenCreateArgs {
    /// The pool (a-z, 0-9, '-'); the gateway's name becomes gw-POOL-N.
    #[arg(long)]
    pub pool: String,
    /// How long the token is accepted (default 1h, at most 7 days), e.g. 30m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub ttl: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ShowFormat::Text)]
    pub output: ShowFormat,
}

/// `wgctl limits …`
#[derive(Debug, Subcommand)]
pub enum LimitsCmd {
    /// Live sessions against each concurrency limit (actor, target, policy, gateway scopes).
    #[command(
        after_help = "Without a selector, every scope with live sessions is listed.\n\nExample:\n  wgctl limits usage --actor alice@corp"
    )]
    Usage(LimitsUsageArgs),
}

/// `wgctl limits usage` flags (at most one selector).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("selector").args(["actor", "target", "policy"]).multiple(false)))]
pub struct LimitsUsageArgs {
    /// One actor.
    #[arg(long, value_name = "ACTOR")]
    pub actor: Option<String>,
    /// One target.
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// One policy.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
}

/// `-o` of list commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// `-o` of detail commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// `label value` lines.
    Text,
    /// The API's JSON.
    Json,
}

/// `-o` of `wgctl get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// Aligned columns.
    Table,
    /// The resource documents as JSON.
    Json,
    /// The resource documents as YAML, re-appliable with `wgctl apply -f`.
    Yaml,
}

/// `wgctl session …`
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// List sessions (every session not closed, unless --state says otherwise).
    #[command(
        after_help = "Examples:\n  wgctl session list\n  wgctl session list --actor alice@corp --protocol ssh --idle-gt 5m\n  wgctl session list --state closed -o json"
    )]
    List(SessionListArgs),
    /// Show one session's access-decision trail.
    #[command(after_help = "Example:\n  wgctl session show sess_a91c7f20bb48")]
    Show(SessionShowArgs),
    /// Force-terminate a session; the recording is flushed and sealed first.
    #[command(
        after_help = "The reason is required and lands on the session's audit event. Terminating a\nsession that is already closed succeeds and reports when it closed.\n\nExample:\n  wgctl session terminate sess_a91c7f20bb48 --reason \"policy review - suspected off-hours access\""
    )]
    Terminate(TerminateArgs),
    /// Offer a live session to another principal, who must accept within the TTL.
    #[command(
        after_help = "Allowed to the session's owner and to operators. The incoming owner must hold a policy\n\
that permits the session's target and account; it accepts with `wgctl session accept ID`\n\
and then attaches to the same terminal. One handoff per session is pending at a time.\n\n\
Example:\n  wgctl session handoff sess_a91c7f20bb48 --to dan@corp \\\n    --reason \"shift change, incident INC-4412\""
    )]
    Handoff(HandoffArgs),
    /// Accept a handoff offered to you: you become the session's owner.
    #[command(
        after_help = "Run it with your own token (an admin issues one with `wgctl token create`). It prints\n\
the ssh command that attaches you to the session's terminal, at the gateway address from\n\
--ssh-addr, WGCTL_SSH_ADDR or 127.0.0.1:3022; `wgctl session attach ID` runs it.\n\n\
Example:\n  wgctl session accept sess_a91c7f20bb48"
    )]
    Accept(AcceptArgs),
    /// Attach to a live session you own (runs `ssh -t -p PORT YOU:ID@HOST`).
    #[command(
        after_help = "Your principal comes from the API token (GET /api/v1/whoami); the gateway address from\n\
--ssh-addr, WGCTL_SSH_ADDR or 127.0.0.1:3022. Arguments after `--` go to ssh.\n\n\
Examples:\n  wgctl session attach sess_a91c7f20bb48\n  wgctl session attach sess_a91c7f20bb48 --ssh-addr gw.example:3022 -- -i ~/.ssh/id_ed25519"
    )]
    Attach(AttachArgs),
}

/// `wgctl session handoff` arguments.
#[derive(Debug, Args)]
pub struct HandoffArgs {
    /// Session ID (`sess_` + 12 hex characters).
    #[arg(value_name = "ID", value_parser = parse_session_id)]
    pub id: String,
    /// The incoming owner: a user or service principal, e.g. dan@corp.
    #[arg(long, required = true, value_name = "PRINCIPAL", value_parser = parse_principal)]
    pub to: String,
    /// Why the session changes hands (required; recorded in the audit log).
    #[arg(long, required = true, value_parser = parse_reason)]
    pub reason: String,
    /// How long the incoming owner has to accept: 1s to 1h (e.g. 90s, 5m; default 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
}

/// The gateway's SSH address, `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshAddr {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// `wgctl session accept` arguments.
#[derive(Debug, Args)]
pub struct AcceptArgs {
    /// Session ID (`sess_` + 12 hex characters).
    #[arg(value_name = "ID", value_parser = parse_session_id)]
    pub id: String,
    /// The gateway's SSH address shown in the attach command [default: WGCTL_SSH_ADDR, else
    /// 127.0.0.1:3022].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_ssh_addr)]
    pub ssh_addr: Option<SshAddr>,
}

/// `wgctl session attach` arguments.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Session ID (`sess_` + 12 hex characters).
    #[arg(value_name = "ID", value_parser = parse_session_id)]
    pub id: String,
    /// The gateway's SSH address [default: WGCTL_SSH_ADDR, else 127.0.0.1:3022].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_ssh_addr)]
    pub ssh_addr: Option<SshAddr>,
    /// Extra ssh options (after `--`), e.g. `-i KEY`.
    #[arg(last = true, value_name = "SSH-ARGS")]
    pub ssh_args: Vec<String>,
}

/// `wgctl token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue an API token for an existing user or service principal; it is shown only once.
    #[command(
        after_help = "The token alone goes to standard output (the notice to standard error), so it can be\n\
captured; only its SHA-256 is stored.\n\n\
Examples:\n  wgctl token create dan@corp\n  wgctl token create svc_deploy -o json"
    )]
    Create(TokenCreateArgs),
}

/// `wgctl token create` arguments.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The principal the token acts as, e.g. dan@corp.
    #[arg(value_name = "PRINCIPAL", value_parser = parse_principal)]
    pub principal: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ShowFormat::Text)]
    pub output: ShowFormat,
}

/// `wgctl session list` flags.
#[derive(Debug, Args)]
pub struct SessionListArgs {
    /// Only sessions of this actor.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only sessions to this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Only sessions of this protocol (ssh, pg, rdp).
    #[arg(long, value_parser = parse_protocol)]
    pub protocol: Option<Protocol>,
    /// Only sessions owned by this gateway.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Only sessions in this state (requested, approved, opened, active, idle, detached, closing,
    /// closed).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<SessionState>,
    /// Only sessions idle for longer than this (e.g. 5m, 90s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub idle_gt: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
}

/// `wgctl session show` arguments.
#[derive(Debug, Args)]
pub struct SessionShowArgs {
    /// Session ID (`sess_` + 12 hex characters).
    #[arg(value_name = "ID", value_parser = parse_session_id)]
    pub id: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ShowFormat::Text)]
    pub output: ShowFormat,
}

/// `wgctl session terminate` arguments.
#[derive(Debug, Args)]
pub struct TerminateArgs {
    /// Session ID (`sess_` + 12 hex characters); or select sessions with the flags below.
    #[arg(value_name = "ID", value_parser = parse_session_id, conflicts_with_all = ["actor", "target", "target_tag", "protocol"])]
    pub id: Option<String>,
    /// Why the session is terminated (required; recorded in the audit log).
    #[arg(long, required = true, value_parser = parse_reason)]
    pub reason: String,
    /// Mass termination: every live session of this actor.
    #[arg(long, value_name = "ACTOR", value_parser = parse_selector)]
    pub actor: Option<String>,
    /// Mass termination: every live session to this target.
    #[arg(long, value_name = "TARGET", value_parser = parse_selector)]
    pub target: Option<String>,
    /// Mass termination: every live session to a target tagged key=value (when the session
    /// started, or now).
    #[arg(long = "target-tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub target_tag: Option<String>,
    /// Mass termination: every live session of this protocol (ssh, pg, rdp).
    #[arg(long, value_name = "PROTO", value_parser = parse_protocol_arg)]
    pub protocol: Option<String>,
}

/// A selector of a mass termination: not blank (a blank one must not be taken for "any"),
/// without the spaces around it.
fn parse_selector(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("is empty; give a value or leave the selector out".to_owned()),
        v => Ok(v.to_owned()),
    }
}

/// A `--target-tag` value: `key=value`, both non-empty; spaces around either are dropped.
fn parse_tag(s: &str) -> Result<String, String> {
    wg_domain::resources::parse_tag_selector(s)
        .map(|(k, v)| format!("{k}={v}"))
        .ok_or_else(|| format!("{s:?} is not key=value (both non-empty)"))
}

fn parse_protocol_arg(s: &str) -> Result<String, String> {
    s.parse::<wg_domain::resources::Protocol>()
        .map(|p| p.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// `wgctl apply` arguments.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The YAML file to apply; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub file: String,
}

/// `wgctl get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource kind.
    #[arg(value_name = "KIND", value_parser = parse_kind)]
    pub kind: Kind,
    /// Resource name; all resources of the kind when absent.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = GetFormat::Table)]
    pub output: GetFormat,
}

/// `wgctl delete` arguments.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource kind.
    #[arg(value_name = "KIND", value_parser = parse_kind)]
    pub kind: Kind,
    /// Resource name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `wgctl vault …`
#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Store a secret at a vault path (exactly one of --password-stdin, --private-key-file).
    #[command(
        after_help = "The secret is never echoed or printed. With --password-stdin the password is read\nfrom a pipe (one trailing newline is removed).\n\nExamples:\n  printf %s \"$PW\" | wgctl vault put vault/ssh/deploy-prod --password-stdin\n  wgctl vault put vault/ssh/deploy-key --private-key-file ~/.ssh/deploy_ed25519"
    )]
    Put(VaultPutArgs),
    /// List vault entries (paths and kinds only).
    #[command(after_help = "Example:\n  wgctl vault list")]
    List(VaultListArgs),
}

/// `wgctl vault put` arguments.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("secret")
        .required(true)
        .multiple(false)
        .args(["password_stdin", "private_key_file"])
))]
pub struct VaultPutArgs {
    /// Vault path, e.g. `vault/ssh/deploy-prod`.
    #[arg(value_name = "PATH", value_parser = parse_vault_path)]
    pub path: String,
    /// Read a password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Read an OpenSSH private key from this file.
    #[arg(long, value_name = "FILE")]
    pub private_key_file: Option<PathBuf>,
}

/// `wgctl vault list` arguments.
#[derive(Debug, Args)]
pub struct VaultListArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
}

/// `wgctl recording …`
#[derive(Debug, Subcommand)]
pub enum RecordingCmd {
    /// Re-hash a recording and compare it with its seal (exit 0 only if it matches).
    #[command(after_help = "Example:\n  wgctl recording verify sess_a91c7f20bb48")]
    Verify(RecordingVerifyArgs),
    /// Replay a recording in this terminal with its original timing.
    #[command(
        after_help = "Examples:\n  wgctl recording play sess_a91c7f20bb48\n  wgctl recording play sess_a91c7f20bb48 --speed 4 --max-idle 2s"
    )]
    Play(RecordingPlayArgs),
}

/// `wgctl recording verify` arguments.
#[derive(Debug, Args)]
pub struct RecordingVerifyArgs {
    /// Session ID of the recording (`sess_` + 12 hex characters).
    #[arg(value_name = "ID", value_parser = parse_session_id)]
    pub id: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ShowFormat::Text)]
    pub output: ShowFormat,
}

/// `wgctl recording play` arguments.
#[derive(Debug, Args)]
pub struct RecordingPlayArgs {
    /// Session ID of the recording (`sess_` + 12 hex characters).
    #[arg(value_name = "ID", value_parser = parse_session_id)]
    pub id: String,
    /// Playback speed factor (> 0; 2 plays twice as fast).
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Cap every pause at this duration (e.g. 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub max_idle: Option<Duration>,
}

/// `wgctl audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events in chain order.
    #[command(
        after_help = "Examples:\n  wgctl audit list\n  wgctl audit list --session sess_a91c7f20bb48 --kind session.terminated -o json"
    )]
    List(AuditListArgs),
    /// Verify the audit hash chain (exit 0 only if intact).
    #[command(after_help = "Example:\n  wgctl audit verify")]
    Verify(AuditVerifyArgs),
}

/// `wgctl audit list` flags.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only events of this session.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Only events of this kind, e.g. `session.terminated`.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
}

/// `wgctl audit verify` flags.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ShowFormat::Text)]
    pub output: ShowFormat,
}

fn parse_session_id(s: &str) -> Result<String, String> {
    s.parse::<SessionId>()
        .map(|id| id.to_string())
        .map_err(|e| e.to_string())
}

fn parse_reason(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("the reason must not be blank: say why (it lands on the audit event)".into());
    }
    Ok(t.to_owned())
}

fn parse_principal(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("name a user or service principal, e.g. dan@corp".into());
    }
    if t.chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ':')
    {
        return Err(format!(
            "{s:?} is not a principal name (no spaces, control characters or `:`)"
        ));
    }
    Ok(t.to_owned())
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = wg_domain::time::parse_duration(s).map_err(|e| e.to_string())?;
    wg_domain::handoff::check_ttl(d).map_err(|e| e.to_string())
}

/// Parses `HOST:PORT`, `[IPV6]:PORT`.
pub fn parse_ssh_addr(s: &str) -> Result<SshAddr, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not HOST:PORT (e.g. gw.example:3022 or [::1]:3022)");
    let (host, port) = match t.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            (host, port)
        }
        None => t.rsplit_once(':').ok_or_else(bad)?,
    };
    if host.is_empty()
        || host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@')
        || (host.contains(':') && !t.starts_with('['))
    {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(SshAddr {
        host: host.to_owned(),
        port,
    })
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).map_err(|_| {
        format!("unknown kind {s:?} (expected user, servicePrincipal, target, policy or limits)")
    })
}

fn parse_state(s: &str) -> Result<SessionState, String> {
    s.parse::<SessionState>().map_err(|e| e.to_string())
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse::<Protocol>().map_err(|e| e.to_string())
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    wg_domain::time::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err("the speed must be a number greater than 0 (e.g. 0.5, 1, 2)".into());
    }
    Ok(v)
}

fn parse_vault_path(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.starts_with('/') || t.ends_with('/') {
        return Err("a vault path looks like vault/ssh/deploy-prod".into());
    }
    if t.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("a vault path has no empty, `.` or `..` segments".into());
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a vault path has no spaces or control characters".into());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wgctl").chain(args.iter().copied()))
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        let e = parse(args).expect_err("should be refused");
        assert_eq!(e.exit_code(), 2, "{e}");
        e
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            let help = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("wgctl "),
                "{path} has no example in after_help"
            );
            for sub in cmd.get_subcommands() {
                walk(sub, &path);
            }
        }
        let top = Cli::command();
        let help = top.get_after_help().unwrap().to_string();
        for code in [
            "0  success",
            "2  bad request",
            "3  not found",
            "4  denied",
            "WGCTL_SSH_ADDR",
            "5  control plane unreachable",
        ] {
            assert!(help.contains(code), "exit code {code} undocumented");
        }
        walk(&top, "");
    }

    #[test]
    fn terminate_requires_a_reason() {
        let e = usage_error(&["session", "terminate", "sess_a91c7f20bb48"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = usage_error(&[
            "session",
            "terminate",
            "sess_a91c7f20bb48",
            "--reason",
            "  ",
        ]);
        assert!(e.to_string().contains("must not be blank"), "{e}");
        let cli = parse(&[
            "session",
            "terminate",
            "sess_a91c7f20bb48",
            "--reason",
            " why ",
        ])
        .unwrap();
        let Command::Session(SessionCmd::Terminate(t)) = cli.command else {
            panic!()
        };
        assert_eq!(t.reason, "why");
        assert_eq!(t.id.as_deref(), Some("sess_a91c7f20bb48"));
    }

    #[test]
    fn session_ids_are_checked() {
        usage_error(&["session", "show", "sess_XYZ"]);
        usage_error(&["session", "terminate", "alice", "--reason", "r"]);
        usage_error(&["recording", "verify", "../../etc"]);
    }

    #[test]
    fn vault_put_needs_exactly_one_source() {
        let e = usage_error(&["vault", "put", "vault/ssh/x"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = usage_error(&[
            "vault",
            "put",
            "vault/ssh/x",
            "--password-stdin",
            "--private-key-file",
            "k",
        ]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert!(parse(&["vault", "put", "vault/ssh/x", "--password-stdin"]).is_ok());
        assert!(parse(&["vault", "put", "vault/ssh/x", "--private-key-file", "k"]).is_ok());
        usage_error(&["vault", "put", "/abs/../x", "--password-stdin"]);
    }

    #[test]
    fn playback_speed_must_be_positive() {
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            usage_error(&["recording", "play", "sess_a91c7f20bb48", "--speed", bad]);
        }
        let cli = parse(&[
            "recording",
            "play",
            "sess_a91c7f20bb48",
            "--speed",
            "2.5",
            "--max-idle",
            "2s",
        ])
        .unwrap();
        let Command::Recording(RecordingCmd::Play(p)) = cli.command else {
            panic!()
        };
        assert!((p.speed - 2.5).abs() < f64::EPSILON);
        assert_eq!(p.max_idle, Some(Duration::from_secs(2)));
        let cli = parse(&["recording", "play", "sess_a91c7f20bb48"]).unwrap();
        let Command::Recording(RecordingCmd::Play(p)) = cli.command else {
            panic!()
        };
        assert!((p.speed - 1.0).abs() < f64::EPSILON);
        usage_error(&["recording", "play", "sess_a91c7f20bb48", "--max-idle", "2"]);
    }

    #[test]
    fn list_filters_and_kinds() {
        let cli = parse(&[
            "session",
            "list",
            "--actor",
            "alice@corp",
            "--protocol",
            "ssh",
            "--state",
            "idle",
            "--idle-gt",
            "5m",
            "-o",
            "json",
        ])
        .unwrap();
        let Command::Session(SessionCmd::List(l)) = cli.command else {
            panic!()
        };
        assert_eq!(l.protocol, Some(Protocol::Ssh));
        assert_eq!(l.state, Some(SessionState::Idle));
        assert_eq!(l.idle_gt, Some(Duration::from_secs(300)));
        assert_eq!(l.output, ListFormat::Json);
        usage_error(&["session", "list", "--protocol", "telnet"]);
        usage_error(&["session", "list", "--idle-gt", "soon"]);
        usage_error(&["session", "list", "-o", "yaml"]);

        let cli = parse(&["get", "targets", "-o", "yaml"]).unwrap();
        let Command::Get(g) = cli.command else {
            panic!()
        };
        assert_eq!(g.kind, Kind::Target);
        assert_eq!(g.output, GetFormat::Yaml);
        let cli = parse(&["delete", "ServicePrincipals", "svc_deploy"]).unwrap();
        let Command::Delete(d) = cli.command else {
            panic!()
        };
        assert_eq!(d.kind, Kind::ServicePrincipal);
        usage_error(&["get", "widgets"]);
        usage_error(&["apply"]);
        assert!(parse(&["apply", "-f", "-"]).is_ok());
    }

    #[test]
    fn handoff_flags() {
        let cli = parse(&[
            "session",
            "handoff",
            "sess_a91c7f20bb48",
            "--to",
            "dan@corp",
            "--reason",
            "shift change, incident INC-4412",
        ])
        .unwrap();
        let Command::Session(SessionCmd::Handoff(h)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (h.id.as_str(), h.to.as_str(), h.ttl),
            ("sess_a91c7f20bb48", "dan@corp", None)
        );
        let cli = parse(&[
            "session",
            "handoff",
            "sess_a91c7f20bb48",
            "--to",
            "dan@corp",
            "--reason",
            "r",
            "--ttl",
            "90s",
        ])
        .unwrap();
        let Command::Session(SessionCmd::Handoff(h)) = cli.command else {
            panic!()
        };
        assert_eq!(h.ttl, Some(Duration::from_secs(90)));
        let base = [
            "session",
            "handoff",
            "sess_a91c7f20bb48",
            "--to",
            "dan@corp",
        ];
        let e = usage_error(&base);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        for ttl in ["0s", "2h", "1500ms", "soon"] {
            let mut args = base.to_vec();
            args.extend(["--reason", "r", "--ttl", ttl]);
            usage_error(&args);
        }
        usage_error(&[
            "session",
            "handoff",
            "sess_a91c7f20bb48",
            "--to",
            " ",
            "--reason",
            "r",
        ]);
        usage_error(&["session", "handoff", "sess_a91c7f20bb48", "--reason", "r"]);
    }

    #[test]
    fn ssh_addresses() {
        let cli = parse(&["session", "accept", "sess_a91c7f20bb48"]).unwrap();
        let Command::Session(SessionCmd::Accept(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.ssh_addr, None);
        if std::env::var_os("WGCTL_SSH_ADDR").is_none() {
            assert_eq!(
                ssh_addr(None).unwrap(),
                parse_ssh_addr(DEFAULT_SSH_ADDR).unwrap()
            );
        }
        assert_eq!(
            parse_ssh_addr("gw.example:3022").unwrap(),
            SshAddr {
                host: "gw.example".into(),
                port: 3022
            }
        );
        assert_eq!(
            parse_ssh_addr("[::1]:22").unwrap(),
            SshAddr {
                host: "::1".into(),
                port: 22
            }
        );
        for bad in [
            "gw.example",
            ":22",
            "h:0",
            "h:99999",
            "::1:22",
            "a b:22",
            "u@h:22",
            "[::1]",
        ] {
            assert!(parse_ssh_addr(bad).is_err(), "{bad}");
        }
        usage_error(&[
            "session",
            "attach",
            "sess_a91c7f20bb48",
            "--ssh-addr",
            "nope",
        ]);
    }

    #[test]
    fn token_create_needs_a_principal() {
        let cli = parse(&["token", "create", "dan@corp", "-o", "json"]).unwrap();
        let Command::Token(TokenCmd::Create(t)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (t.principal.as_str(), t.output),
            ("dan@corp", ShowFormat::Json)
        );
        let e = usage_error(&["token", "create"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn blank_selectors_are_refused() {
        let terminate = |selectors: &[&str]| {
            let mut args = vec!["session", "terminate", "--reason", "r"];
            args.extend_from_slice(selectors);
            parse(&args)
        };
        for selectors in [
            &["--actor", " ", "--target", "t"][..],
            &["--actor", "a", "--target", ""],
            &["--actor", "a", "--protocol", " "],
        ] {
            assert!(terminate(selectors).is_err(), "{selectors:?}");
        }
        assert!(terminate(&["--actor", " a "]).is_ok());
    }

    #[test]
    fn target_tags_are_sent_trimmed_and_refused_without_a_value() {
        assert_eq!(parse_tag(" env = prod "), Ok("env=prod".to_owned()));
        assert!(parse_tag("env=").is_err());
    }

    #[test]
    fn connection_flags_override_defaults() {
        let cli = parse(&[
            "--addr",
            "http://cp:9000",
            "--token",
            "t0k",
            "audit",
            "verify",
        ])
        .unwrap();
        assert_eq!(cli.control_url(), "http://cp:9000");
        assert_eq!(cli.bearer_token().as_deref(), Some("t0k"));
        let cli = parse(&["audit", "list", "--addr", "http://cp:9001"]).unwrap();
        assert_eq!(cli.control_url(), "http://cp:9001");
    }

    #[test]
    fn token_value_is_not_shown_in_help() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("WGCTL_TOKEN"));
        assert!(help.contains("Exit codes:"));
    }
}
