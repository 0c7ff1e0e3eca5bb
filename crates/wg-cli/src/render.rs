//! Pure functions from API shapes to the text `wgctl` prints.
//!
//! The layouts of `session list`, `session show`, `session terminate` and `session handoff` are
//! the seed's, byte for byte; they are covered by golden tests. Every value that came from the server passes through
//! [`clean`] so that a hostile string (a client ident, a reason) cannot inject terminal escapes.
//! Every function returns whole lines, each ending in `\n`, never with trailing spaces.

use serde::Serialize;
use wg_domain::api::{
    ApplyResponse, AuditEventView, AuditVerify, HandoffView, RecordingInfo, RecordingVerify,
    SessionView, TerminateResponse, TokenCreated, VaultEntry,
};
use wg_domain::resources::{Kind, MfaRequirement, Resource, Role};
use wg_domain::time::hms;

use crate::cli::SshAddr;
use crate::error::CliError;

/// Minimum widths of the `session list` columns before `AGE` (the seed's layout).
const SESSION_LIST_WIDTHS: [usize; 5] = [20, 20, 21, 7, 10];
/// Width of the labels of `session show`.
const LABEL_WIDTH: usize = 14;
/// Shown for a value that is absent or not built yet.
const NONE: &str = "-";

/// Replaces control characters (escape sequences, newlines) with their Rust escapes so that a value
/// stays on its line and cannot drive the terminal.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders a table: every column but the last is padded to its minimum width, or to its longest
/// value + 2 when a value (or the header) would otherwise touch the next column. Lines carry no
/// trailing spaces.
pub fn table(headers: &[&str], min_widths: &[usize], rows: &[Vec<String>]) -> String {
    let ncols = headers.len();
    let mut widths = Vec::with_capacity(ncols);
    for (i, header) in headers.iter().enumerate().take(ncols.saturating_sub(1)) {
        let min = min_widths.get(i).copied().unwrap_or(0);
        let longest = rows
            .iter()
            .filter_map(|r| r.get(i))
            .map(|v| v.chars().count())
            .chain(std::iter::once(header.chars().count()))
            .max()
            .unwrap_or(0);
        widths.push(if longest >= min { longest + 2 } else { min });
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(ncols) {
            line.push_str(cell);
            if let Some(w) = widths.get(i) {
                let pad = w.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `wgctl session list`: `SESSION ACTOR TARGET PROTO GW AGE`.
pub fn session_list(sessions: &[SessionView]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                clean(&s.id),
                clean(&s.actor),
                clean(&s.target),
                clean(&s.protocol),
                clean(&s.gateway),
                hms(s.age_seconds.saturating_mul(1000)),
            ]
        })
        .collect();
    table(
        &["SESSION", "ACTOR", "TARGET", "PROTO", "GW", "AGE"],
        &SESSION_LIST_WIDTHS,
        &rows,
    )
}

fn field(out: &mut String, label: &str, value: &str) {
    let line = format!("{label:<LABEL_WIDTH$}{value}");
    out.push_str(line.trim_end());
    out.push('\n');
}

fn opt(v: Option<&String>) -> String {
    v.map_or_else(|| NONE.to_owned(), |s| clean(s))
}

/// `wgctl session show`: the access-decision trail, one `label value` line per fact.
pub fn session_show(s: &SessionView) -> String {
    let mut out = String::new();
    field(&mut out, "session", &clean(&s.id));
    field(&mut out, "state", s.state.as_str());
    field(&mut out, "actor", &actor_line(s));
    field(&mut out, "client", &client_line(s));
    field(&mut out, "target", &target_line(s));
    let account = match &s.account {
        Some(a) => format!("{}  ({})", clean(a), opt(s.vault_path.as_ref())),
        None => NONE.to_owned(),
    };
    field(&mut out, "account", &account);
    field(&mut out, "protocol", &protocol_line(s));
    let policy = match &s.policy {
        // Approvals are not built yet: their place is held by `(-)`.
        Some(p) => format!("{}  ({NONE})", clean(p)),
        None => NONE.to_owned(),
    };
    field(&mut out, "policy", &policy);
    field(&mut out, "mfa", &opt(s.mfa.as_ref()));
    let recording = s
        .recording
        .as_ref()
        .map_or_else(|| NONE.to_owned(), recording_line);
    field(&mut out, "recording", &recording);
    field(&mut out, "gateway", &gateway_line(s));
    field(&mut out, "started", &clean(&s.started_at));
    field(&mut out, "idle", &hms(s.idle_seconds.saturating_mul(1000)));
    if s.state.is_closed() {
        let reason = s.end_reason.map_or(NONE, |r| r.as_str());
        let why = match &s.end_detail {
            Some(d) if !d.is_empty() => format!("{reason}: {}", clean(d)),
            _ => reason.to_owned(),
        };
        field(
            &mut out,
            "ended",
            &format!("{}  ({why})", opt(s.ended_at.as_ref())),
        );
        if let Some(code) = s.exit_status {
            field(&mut out, "exit", &code.to_string());
        }
    }
    // Not in the seed's layout: shown, like `ended`, only when there is one.
    if let Some(h) = &s.handoff {
        field(
            &mut out,
            "handoff",
            &format!(
                "-> {}  ({} until {})",
                clean(&h.to),
                h.state.as_str(),
                clean(&h.expires_at)
            ),
        );
    }
    out
}

fn actor_line(s: &SessionView) -> String {
    if s.actor_groups.is_empty() {
        return clean(&s.actor);
    }
    let groups: Vec<String> = s
        .actor_groups
        .iter()
        .map(|g| format!("group:{}", clean(g)))
        .collect();
    format!("{} ({})", clean(&s.actor), groups.join(", "))
}

fn client_line(s: &SessionView) -> String {
    if s.client_ip.is_none() && s.client_geo.is_none() && s.client_software.is_none() {
        return NONE.to_owned();
    }
    let software = s.client_software.as_deref().map_or_else(
        || NONE.to_owned(),
        |sw| clean(sw.strip_prefix("SSH-2.0-").unwrap_or(sw)),
    );
    format!(
        "{}  ({})  {software}",
        opt(s.client_ip.as_ref()),
        opt(s.client_geo.as_ref())
    )
}

fn target_line(s: &SessionView) -> String {
    if s.target_address.is_empty() {
        clean(&s.target)
    } else {
        format!("{} ({})", clean(&s.target), clean(&s.target_address))
    }
}

fn protocol_line(s: &SessionView) -> String {
    match &s.pty {
        Some(p) => format!(
            "{}  pty={}  {}x{}",
            clean(&s.protocol),
            clean(&p.term),
            p.cols,
            p.rows
        ),
        None => clean(&s.protocol),
    }
}

/// `X` of `X KB`: bytes / 1024, rounded to the nearest whole number, except that a recording
/// with any bytes shows at least 1 (a few hundred bytes of output are not "0 KB").
fn kib(bytes: u64) -> u64 {
    match bytes {
        0 => 0,
        b => (b.saturating_add(512) / 1024).max(1),
    }
}

/// The `recording` value of `session show`.
pub fn recording_line(r: &RecordingInfo) -> String {
    let mode = clean(&r.mode);
    if r.mode != "full" {
        return mode;
    }
    let sha = opt(r.sha256.as_ref());
    match r.status.as_str() {
        "recording" => format!("{mode}  (chunk {}/∞, {} KB)", r.chunks, kib(r.bytes)),
        "sealed" | "partial" => format!(
            "{mode}  (chunk {n}/{n}, {} KB, {} sha256={sha})",
            kib(r.bytes),
            r.status,
            n = r.chunks
        ),
        other => format!(
            "{mode}  (chunk {}, {} KB, {})",
            r.chunks,
            kib(r.bytes),
            clean(other)
        ),
    }
}

/// `name (host)` with any `:port` removed from the gateway address, or `name` alone.
fn gateway_line(s: &SessionView) -> String {
    match s.gateway_address.as_deref().map(strip_port) {
        Some(host) if !host.is_empty() => format!("{} ({})", clean(&s.gateway), clean(host)),
        _ => clean(&s.gateway),
    }
}

/// `10.64.0.12:7000` → `10.64.0.12`; `[::1]:7000` → `::1`; a bare host or IPv6 address is kept.
pub fn strip_port(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => addr,
    }
}

fn seal_line(r: &TerminateResponse) -> String {
    match (&r.recording, r.recording_mode.as_str()) {
        (Some(s), _) => format!(
            "recording  {} (chunks={}, bytes={}, sha256={})\n",
            clean(&s.status),
            s.chunks,
            s.bytes,
            clean(&s.sha256)
        ),
        // Ended while its access was being decided: no mode was chosen, nothing recorded.
        (None, "") => "recording  none (the session never started)\n".to_owned(),
        (None, "full") => format!("recording  {NONE}\n"),
        (None, mode) => format!("recording  {}\n", clean(mode)),
    }
}

/// `wgctl session terminate`: the seed's two lines, or the idempotent "already closed" form.
pub fn terminate(r: &TerminateResponse) -> String {
    let at = opt(r.terminated_at.as_ref());
    if r.already_closed {
        let reason = r.end_reason.map_or(NONE, |e| e.as_str());
        let mut out = format!("{} already closed at {at} ({reason})\n", clean(&r.session));
        if r.recording.is_some() {
            out.push_str(&seal_line(r));
        }
        out
    } else {
        format!("terminated {} at {at}\n{}", clean(&r.session), seal_line(r))
    }
}

/// `wgctl session handoff`: the seed's three lines; the window is the offer's TTL written like
/// `5m`.
pub fn handoff_requested(h: &HandoffView) -> String {
    let (id, from, to) = (clean(&h.session), clean(&h.from), clean(&h.to));
    let ttl = wg_domain::time::format_duration(std::time::Duration::from_secs(h.ttl_seconds));
    format!(
        "handoff requested -> {to}\n  \
         {to} must accept within {ttl} with: wgctl session accept {id}\n\
         {id}  previous owner: {from}  new owner: {to} ({})\n",
        h.state.as_str()
    )
}

/// `wgctl session accept`: who owns the session now, and the ssh command that attaches the new
/// owner (login name `OWNER:SESSION_ID`) through the gateway at `ssh`.
pub fn handoff_accepted(h: &HandoffView, ssh: &SshAddr) -> String {
    let (id, from, to) = (clean(&h.session), clean(&h.from), clean(&h.to));
    format!(
        "handoff accepted: {id}  previous owner: {from}  new owner: {to}\n  \
         attach with: ssh -t {to}:{id}@{} -p {}\n",
        clean(&ssh.host),
        ssh.port
    )
}

/// `wgctl token create`: the token alone, for capture (`$(wgctl token create dan@corp)`).
pub fn token_created(t: &TokenCreated) -> String {
    format!("{}\n", clean(&t.token))
}

/// The notice `wgctl token create` writes to standard error.
pub fn token_notice(t: &TokenCreated) -> String {
    format!(
        "wgctl: token for {} created at {}; it is shown only this once\n",
        clean(&t.principal),
        clean(&t.created_at)
    )
}

/// `wgctl apply`: `<kind>/<name> <action>` per resource.
pub fn apply(r: &ApplyResponse) -> String {
    r.applied
        .iter()
        .map(|a| {
            format!(
                "{}/{} {}\n",
                clean(&a.kind),
                clean(&a.name),
                clean(&a.action)
            )
        })
        .collect()
}

fn list_or_dash(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        NONE.to_owned()
    } else {
        clean(&v.join(","))
    }
}

fn num_or_dash(n: Option<u32>) -> String {
    n.map_or_else(|| NONE.to_owned(), |n| n.to_string())
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Auditor => "auditor",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// `wgctl get KIND` as a table; the columns depend on the kind. Resources of another kind are
/// skipped.
pub fn resources_table(kind: Kind, items: &[Resource]) -> String {
    let (headers, rows): (&[&str], Vec<Vec<String>>) = match kind {
        Kind::User => (
            &["NAME", "GROUPS", "ROLE", "SSH-KEYS", "MAX-SESSIONS"],
            items
                .iter()
                .filter_map(|r| match r {
                    Resource::User(u) => Some(vec![
                        clean(&u.name),
                        list_or_dash(u.groups.iter().cloned()),
                        u.role.map_or(NONE, role_name).to_owned(),
                        u.ssh_keys.len().to_string(),
                        num_or_dash(u.max_sessions_per_user),
                    ]),
                    _ => None,
                })
                .collect(),
        ),
        Kind::ServicePrincipal => (
            &["NAME", "GROUPS", "SSH-KEYS", "MAX-SESSIONS"],
            items
                .iter()
                .filter_map(|r| match r {
                    Resource::ServicePrincipal(s) => Some(vec![
                        clean(&s.name),
                        list_or_dash(s.groups.iter().cloned()),
                        s.ssh_keys.len().to_string(),
                        num_or_dash(s.max_sessions_per_user),
                    ]),
                    _ => None,
                })
                .collect(),
        ),
        Kind::Target => (
            &["NAME", "ADDRESS", "PROTO", "TAGS", "ACCOUNTS"],
            items
                .iter()
                .filter_map(|r| match r {
                    Resource::Target(t) => Some(vec![
                        clean(&t.name),
                        clean(&t.address),
                        t.protocol.as_str().to_owned(),
                        list_or_dash(t.tags.iter().map(|(k, v)| format!("{k}={v}"))),
                        list_or_dash(t.accounts.iter().map(|a| a.name.clone())),
                    ]),
                    _ => None,
                })
                .collect(),
        ),
        Kind::Policy => (
            &["NAME", "SUBJECTS", "PROTOCOLS", "MFA", "RECORDING"],
            items
                .iter()
                .filter_map(|r| match r {
                    Resource::Policy(p) => Some(vec![
                        clean(&p.name),
                        list_or_dash(p.subjects.iter().cloned()),
                        if p.protocols.is_empty() {
                            "*".to_owned()
                        } else {
                            list_or_dash(p.protocols.iter().map(|p| p.as_str().to_owned()))
                        },
                        match p.mfa {
                            MfaRequirement::None => "none",
                            MfaRequirement::Required => "required",
                        }
                        .to_owned(),
                        p.recording.as_str().to_owned(),
                    ]),
                    _ => None,
                })
                .collect(),
        ),
        Kind::Limits => (
            &["NAME", "MAX-SESSIONS-PER-USER", "MAX-SESSIONS-PER-TARGET"],
            items
                .iter()
                .filter_map(|r| match r {
                    Resource::Limits(l) => Some(vec![
                        clean(&l.name),
                        num_or_dash(l.max_sessions_per_user),
                        num_or_dash(l.max_sessions_per_target),
                    ]),
                    _ => None,
                })
                .collect(),
        ),
    };
    table(headers, &[], &rows)
}

/// `wgctl get KIND -o yaml`: the resources as YAML documents separated by `---`, re-appliable
/// with `wgctl apply -f`.
///
/// # Errors
/// [`CliError::Failed`] if a resource cannot be serialised.
pub fn resources_yaml(items: &[Resource]) -> Result<String, CliError> {
    let mut out = String::new();
    for (i, r) in items.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let doc = serde_yaml_ng::to_string(r)
            .map_err(|e| CliError::Failed(format!("cannot render {} as YAML: {e}", r.name())))?;
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Pretty, stable JSON followed by a newline (`-o json`).
///
/// # Errors
/// [`CliError::Failed`] if the value cannot be serialised.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot render JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// `wgctl vault put`: `<path> written (<kind>)`.
pub fn vault_written(e: &VaultEntry) -> String {
    format!("{} written ({})\n", clean(&e.path), clean(&e.kind))
}

/// `wgctl vault list`: `PATH KIND UPDATED`.
pub fn vault_list(entries: &[VaultEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![clean(&e.path), clean(&e.kind), clean(&e.updated_at)])
        .collect();
    table(&["PATH", "KIND", "UPDATED"], &[], &rows)
}

/// `wgctl recording verify`: an OK/FAILED summary line, then one line per problem.
pub fn recording_verify(v: &RecordingVerify) -> String {
    let verdict = if v.ok { "OK" } else { "FAILED" };
    let mut out = format!(
        "recording {} {verdict} ({}, chunks={}, bytes={}, sha256={})\n",
        clean(&v.session),
        clean(&v.status),
        v.chunks,
        v.bytes,
        clean(&v.sha256)
    );
    for p in &v.problems {
        out.push_str(&format!("  - {}\n", clean(p)));
    }
    out
}

/// `wgctl audit list`: `SEQ TIME KIND ACTOR SESSION REASON`.
pub fn audit_list(events: &[AuditEventView]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                clean(&e.time),
                clean(&e.kind),
                opt(e.actor.as_ref()),
                opt(e.session.as_ref()),
                opt(e.reason.as_ref()),
            ]
        })
        .collect();
    table(
        &["SEQ", "TIME", "KIND", "ACTOR", "SESSION", "REASON"],
        &[],
        &rows,
    )
}

/// `wgctl audit verify`: `audit chain OK (N events)` or the first problem.
pub fn audit_verify(v: &AuditVerify) -> String {
    if v.ok {
        format!("audit chain OK ({} events)\n", v.events)
    } else {
        format!(
            "audit chain BROKEN ({} events checked): {}\n",
            v.events,
            v.error
                .as_deref()
                .map_or_else(|| "no detail given".to_owned(), clean)
        )
    }
}

/// The one stderr line for a failure: `wgctl: <message>`.
pub fn error_line(e: &CliError) -> String {
    format!("wgctl: {}\n", clean(&e.to_string()))
}

/// `wgctl limits usage`: `SCOPE KEY USED LIMIT` (`-` for no limit).
pub fn limits_usage(rows: &[wg_domain::api::LimitUsage]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|u| {
            vec![
                clean(&u.scope),
                clean(&u.key),
                u.used.to_string(),
                u.limit.map_or_else(|| NONE.to_owned(), |l| l.to_string()),
            ]
        })
        .collect();
    table(&["SCOPE", "KEY", "USED", "LIMIT"], &[], &rows)
}

/// `wgctl session terminate --actor …`: one line per terminated session with its recording,
/// then a summary naming the bulk operation.
pub fn terminate_matching(r: &wg_domain::api::BulkTerminateResponse) -> String {
    let mut out = String::new();
    for t in &r.terminated {
        let seal = seal_line(t);
        out.push_str(&format!(
            "terminated {} at {}  {}",
            clean(&t.session),
            opt(t.terminated_at.as_ref()),
            seal
        ));
    }
    let n = r.terminated.len();
    out.push_str(&format!(
        "{n} session{} terminated (bulk operation {})\n",
        if n == 1 { "" } else { "s" },
        clean(&r.bulk_operation)
    ));
    if n == 0 && r.already_ended == 0 && r.failed.is_empty() {
        out.push_str("no live session matched the selectors\n");
    }
    if r.already_ended > 0 {
        let m = r.already_ended;
        out.push_str(&format!(
            "{m} other matching session{} had already ended (on {} own or by another termination)\n",
            if m == 1 { "" } else { "s" },
            if m == 1 { "its" } else { "their" },
        ));
    }
    out
}

/// `wgctl gateway list`: `NAME POOL ADDRESS VERSION SESSIONS LAST HEARTBEAT STATE`.
pub fn gateway_list(rows: &[wg_domain::api::GatewayView]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|g| {
            vec![
                clean(&g.name),
                clean(&g.pool),
                clean(&g.address),
                clean(&g.version),
                g.live_sessions.to_string(),
                clean(&g.last_heartbeat),
                clean(&g.state),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "POOL",
            "ADDRESS",
            "VERSION",
            "SESSIONS",
            "LAST HEARTBEAT",
            "STATE",
        ],
        &[],
        &rows,
    )
}

/// `wgctl gateway token revoke`: one line.
pub fn token_revoked(r: &wg_domain::api::JoinTokenRevoked) -> String {
    if r.already_revoked {
        format!(
            "join token {} (pool {}) was already revoked\n",
            clean(&r.id),
            clean(&r.pool)
        )
    } else {
        format!(
            "join token {} (pool {}) revoked: a gateway presenting it is refused from now on\n",
            clean(&r.id),
            clean(&r.pool)
        )
    }
}

/// `wgctl gateway token list`: `ID POOL STATE USED BY CREATED BY EXPIRES`.
pub fn join_tokens(rows: &[wg_domain::api::JoinTokenView]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|t| {
            vec![
                clean(&t.id),
                clean(&t.pool),
                clean(&t.state),
                t.used_by.as_deref().map_or_else(|| NONE.to_owned(), clean),
                clean(&t.created_by),
                clean(&t.expires_at),
            ]
        })
        .collect();
    table(
        &["ID", "POOL", "STATE", "USED BY", "CREATED BY", "EXPIRES"],
        &[],
        &rows,
    )
}
