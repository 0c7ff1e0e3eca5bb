//! Golden tests of the printed layouts (insta snapshots under `src/snapshots`), checked against
//! the seed's text where the seed shows the layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wg_domain::api::{
    AppliedResource, ApplyResponse, AuditEventView, AuditVerify, HandoffView, PtyInfo,
    RecordingInfo, RecordingVerify, SealInfo, SessionView, TerminateResponse, TokenCreated,
    VaultEntry,
};
use wg_domain::handoff::HandoffState;
use wg_domain::resources::{Kind, parse_documents};
use wg_domain::{EndReason, ErrorBody, ErrorCode, SessionState};

use crate::cli::SshAddr;
use crate::error::CliError;
use crate::render;

const SEAL: &str = "3f0b5c2e9a1d47f6b8c03e2a5d9f1b7c4e6a8d0f2b4c6e8a1d3f5b7c9e0a2c4d";

/// The seed's `session list` output, copied verbatim.
const SEED_LIST: &str = "\
SESSION             ACTOR               TARGET               PROTO  GW        AGE
sess_a91c7f20bb48   alice@corp          web-01.prod          ssh    gw-us-1   00:14:22
sess_c8144e90ab17   bob@corp            billing-ro.prod      pg     gw-us-2   00:02:48
sess_21f3b7910a2d   svc_deploy          win-dc01.prod        rdp    gw-us-1   00:31:07
";

/// The seed's `session show` output, copied verbatim.
const SEED_SHOW: &str = "\
session       sess_a91c7f20bb48
state         active
actor         alice@corp (group:sre)
client        198.51.100.24  (Los Angeles, US)  wgctl/1.6.1
target        web-01.prod (10.10.4.20:22)
account       deploy  (vault/ssh/deploy-prod)
protocol      ssh  pty=xterm-256color  80x24
policy        prod-ssh-write  (approved by carol@corp, 00:14:08 ago)
mfa           webauthn (YubiKey 5C)
recording     full  (chunk 3/∞, 412 KB)
gateway       gw-us-1 (10.64.0.12)
started       2026-04-20T18:41:02Z
idle          00:00:04
";

/// A minimal session: everything optional absent.
fn bare(
    id: &str,
    actor: &str,
    target: &str,
    protocol: &str,
    gateway: &str,
    age: i64,
) -> SessionView {
    SessionView {
        id: id.into(),
        state: SessionState::Active,
        actor: actor.into(),
        actor_groups: vec![],
        target: target.into(),
        target_address: String::new(),
        protocol: protocol.into(),
        account: None,
        vault_path: None,
        policy: None,
        mfa: None,
        gateway: gateway.into(),
        gateway_address: None,
        client_ip: None,
        client_geo: None,
        client_software: None,
        pty: None,
        recording: None,
        started_at: "2026-04-20T18:41:02Z".into(),
        age_seconds: age,
        idle_seconds: 0,
        ended_at: None,
        end_reason: None,
        end_detail: None,
        exit_status: None,
        handoff: None,
    }
}

/// The seed's `sess_a91c7f20bb48`, as the API would return it.
fn alice() -> SessionView {
    SessionView {
        actor_groups: vec!["sre".into()],
        target_address: "10.10.4.20:22".into(),
        account: Some("deploy".into()),
        vault_path: Some("vault/ssh/deploy-prod".into()),
        policy: Some("prod-ssh-write".into()),
        mfa: Some("webauthn (YubiKey 5C)".into()),
        gateway_address: Some("10.64.0.12:7443".into()),
        client_ip: Some("198.51.100.24".into()),
        client_geo: Some("Los Angeles, US".into()),
        client_software: Some("wgctl/1.6.1".into()),
        pty: Some(PtyInfo {
            term: "xterm-256color".into(),
            cols: 80,
            rows: 24,
        }),
        recording: Some(RecordingInfo {
            mode: "full".into(),
            chunks: 3,
            bytes: 412 * 1024 + 100,
            status: "recording".into(),
            sha256: None,
        }),
        idle_seconds: 4,
        ..bare(
            "sess_a91c7f20bb48",
            "alice@corp",
            "web-01.prod",
            "ssh",
            "gw-us-1",
            862,
        )
    }
}

fn seed_sessions() -> Vec<SessionView> {
    vec![
        alice(),
        bare(
            "sess_c8144e90ab17",
            "bob@corp",
            "billing-ro.prod",
            "pg",
            "gw-us-2",
            168,
        ),
        bare(
            "sess_21f3b7910a2d",
            "svc_deploy",
            "win-dc01.prod",
            "rdp",
            "gw-us-1",
            1867,
        ),
    ]
}

#[test]
fn session_list_matches_the_seed() {
    let out = render::session_list(&seed_sessions());
    assert_eq!(out, SEED_LIST);
    let mut seed_lines = SEED_LIST.lines();
    let mut lines = out.lines();
    assert_eq!(lines.next(), seed_lines.next(), "header");
    assert_eq!(
        lines.next(),
        Some(
            "sess_a91c7f20bb48   alice@corp          web-01.prod          ssh    gw-us-1   00:14:22"
        )
    );
    insta::assert_snapshot!(out);
}

#[test]
fn session_list_widens_an_overlong_column() {
    let mut sessions = seed_sessions();
    sessions[1].actor = "bartholomew.longname@corp.example".into();
    let out = render::session_list(&sessions);
    // Every row keeps its columns aligned; no line ends in a space.
    let target_col = out.lines().next().unwrap().find("TARGET").unwrap();
    assert_eq!(
        target_col,
        20 + "bartholomew.longname@corp.example".len() + 2
    );
    for line in out.lines().skip(1) {
        assert_eq!(
            line.find(".prod")
                .map(|_| &line[target_col - 1..target_col]),
            Some(" ")
        );
        assert!(!line.ends_with(' '));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn session_list_empty_is_the_header() {
    assert_eq!(
        render::session_list(&[]),
        SEED_LIST.lines().next().unwrap().to_owned() + "\n"
    );
}

#[test]
fn session_show_matches_the_seed() {
    let out = render::session_show(&alice());
    // Every seed line is reproduced, except the approval (approvals are not built yet).
    for (ours, seed) in out.lines().zip(SEED_SHOW.lines()) {
        if seed.starts_with("policy") {
            assert_eq!(ours, "policy        prod-ssh-write  (-)");
        } else {
            assert_eq!(ours, seed);
        }
    }
    assert_eq!(out.lines().count(), SEED_SHOW.lines().count());
    insta::assert_snapshot!(out);
}

#[test]
fn session_show_closed_terminated() {
    let mut s = alice();
    s.state = SessionState::Closed;
    s.client_software = Some("SSH-2.0-OpenSSH_9.6".into());
    s.actor_groups = vec!["sre".into(), "oncall".into()];
    s.recording = Some(RecordingInfo {
        mode: "full".into(),
        chunks: 7,
        bytes: 918_644,
        status: "sealed".into(),
        sha256: Some(SEAL.into()),
    });
    s.age_seconds = 869;
    s.idle_seconds = 12;
    s.ended_at = Some("2026-04-20T18:55:31Z".into());
    s.end_reason = Some(EndReason::Terminated);
    s.end_detail = Some("policy review - suspected off-hours access".into());
    s.exit_status = None;
    let out = render::session_show(&s);
    assert!(out.contains(
        "ended         2026-04-20T18:55:31Z  (terminated: policy review - suspected off-hours access)\n"
    ));
    assert!(out.contains(&format!(
        "recording     full  (chunk 7/7, 897 KB, sealed sha256={SEAL})\n"
    )));
    assert!(out.contains("client        198.51.100.24  (Los Angeles, US)  OpenSSH_9.6\n"));
    assert!(!out.contains("exit "));
    insta::assert_snapshot!(out);
}

#[test]
fn session_show_closed_with_exit_and_sparse_fields() {
    let mut s = bare(
        "sess_c8144e90ab17",
        "bob@corp",
        "billing-ro.prod",
        "pg",
        "gw-us-2",
        168,
    );
    s.state = SessionState::Closed;
    s.target_address = "10.20.0.5:5432".into();
    s.client_ip = Some("203.0.113.9".into());
    s.recording = Some(RecordingInfo {
        mode: "full".into(),
        chunks: 2,
        bytes: 1000,
        status: "partial".into(),
        sha256: Some(SEAL.into()),
    });
    s.ended_at = Some("2026-04-20T18:44:00Z".into());
    s.end_reason = Some(EndReason::ClientExit);
    s.exit_status = Some(42);
    let out = render::session_show(&s);
    assert!(out.contains("exit          42\n"));
    assert!(out.contains("client        203.0.113.9  (-)  -\n"));
    assert!(out.contains("account       -\n"));
    assert!(out.contains("ended         2026-04-20T18:44:00Z  (client_exit)\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn recording_modes() {
    let info = |mode: &str, status: &str| RecordingInfo {
        mode: mode.into(),
        chunks: 1,
        bytes: 511,
        status: status.into(),
        sha256: None,
    };
    assert_eq!(render::recording_line(&info("off", "sealed")), "off");
    assert_eq!(
        render::recording_line(&info("metadata", "recording")),
        "metadata"
    );
    // 511 bytes round to 0 KB, but a recording with output is shown as at least 1 KB.
    assert_eq!(
        render::recording_line(&info("full", "recording")),
        "full  (chunk 1/∞, 1 KB)"
    );
    let empty = RecordingInfo {
        bytes: 0,
        ..info("full", "recording")
    };
    assert_eq!(render::recording_line(&empty), "full  (chunk 1/∞, 0 KB)");
    let rounded = RecordingInfo {
        bytes: 1535,
        ..info("full", "recording")
    };
    assert_eq!(render::recording_line(&rounded), "full  (chunk 1/∞, 1 KB)");
}

#[test]
fn gateway_hosts() {
    assert_eq!(render::strip_port("10.64.0.12:7443"), "10.64.0.12");
    assert_eq!(render::strip_port("10.64.0.12"), "10.64.0.12");
    assert_eq!(render::strip_port("[fd00::1]:7443"), "fd00::1");
    assert_eq!(render::strip_port("fd00::1"), "fd00::1");
    assert_eq!(render::strip_port("gw.internal:7443"), "gw.internal");
}

fn terminated(already: bool, seal: Option<(&str, u32, u64)>) -> TerminateResponse {
    TerminateResponse {
        session: "sess_a91c7f20bb48".into(),
        state: SessionState::Closed,
        already_closed: already,
        terminated_at: Some("2026-04-20T18:55:31Z".into()),
        end_reason: Some(if already {
            EndReason::ClientExit
        } else {
            EndReason::Terminated
        }),
        recording_mode: if seal.is_some() { "full" } else { "off" }.into(),
        recording: seal.map(|(status, chunks, bytes)| SealInfo {
            chunks,
            bytes,
            sha256: SEAL.into(),
            status: status.into(),
        }),
    }
}

#[test]
fn terminate_output() {
    let out = render::terminate(&terminated(false, Some(("sealed", 7, 918_644))));
    assert_eq!(
        out,
        format!(
            "terminated sess_a91c7f20bb48 at 2026-04-20T18:55:31Z\nrecording  sealed (chunks=7, bytes=918644, sha256={SEAL})\n"
        )
    );
    insta::assert_snapshot!("terminate_sealed", out);
    let out = render::terminate(&terminated(false, None));
    assert_eq!(
        out,
        "terminated sess_a91c7f20bb48 at 2026-04-20T18:55:31Z\nrecording  off\n"
    );
    // Terminated while its access was being decided: no mode, nothing recorded.
    let never = TerminateResponse {
        recording_mode: String::new(),
        ..terminated(false, None)
    };
    assert!(render::terminate(&never).ends_with("\nrecording  none (the session never started)\n"));
    let out = render::terminate(&terminated(false, Some(("partial", 2, 4096))));
    assert!(out.ends_with(&format!(
        "recording  partial (chunks=2, bytes=4096, sha256={SEAL})\n"
    )));
    insta::assert_snapshot!("terminate_partial", out);
}

#[test]
fn terminate_already_closed() {
    let out = render::terminate(&terminated(true, Some(("sealed", 3, 10_000))));
    assert!(
        out.starts_with("sess_a91c7f20bb48 already closed at 2026-04-20T18:55:31Z (client_exit)\n")
    );
    insta::assert_snapshot!("terminate_already_closed", out);
    let out = render::terminate(&terminated(true, None));
    assert_eq!(
        out,
        "sess_a91c7f20bb48 already closed at 2026-04-20T18:55:31Z (client_exit)\n"
    );
}

fn api_error(code: ErrorCode, message: &str) -> CliError {
    CliError::Api {
        status: code.http_status(),
        body: ErrorBody::new(code, message),
    }
}

#[test]
fn error_lines_and_exit_codes() {
    let mut limit = ErrorBody::new(
        ErrorCode::ConcurrencyLimit,
        "target web-01.prod is at capacity",
    );
    limit.scope = Some("target".into());
    limit.limit = Some(5);
    limit.target = Some("web-01.prod".into());
    let cases = vec![
        (api_error(ErrorCode::NotFound, "session sess_000000000000 not found"), 3),
        (api_error(ErrorCode::BadRequest, "reason is required"), 2),
        (api_error(ErrorCode::Unauthorized, "invalid bearer token"), 4),
        (api_error(ErrorCode::Forbidden, "auditor may not terminate sessions"), 4),
        (api_error(ErrorCode::PolicyDenied, "no policy admits alice@corp to db-01"), 4),
        (CliError::Api { status: 429, body: limit }, 4),
        (api_error(ErrorCode::Unavailable, "gateway gw-us-1 is not connected"), 5),
        (
            api_error(
                ErrorCode::HandoffExpired,
                "the handoff of sess_a91c7f20bb48 to dan@corp expired at 2026-04-20T18:46:02Z; alice@corp keeps the session (ask for a new handoff)",
            ),
            4,
        ),
        (CliError::Http { status: 410, text: "Gone".into() }, 4),
        (api_error(ErrorCode::Conflict, "session is closing"), 1),
        (api_error(ErrorCode::Internal, "store failure"), 1),
        (
            CliError::Unreachable(
                "cannot reach the control plane at http://127.0.0.1:8080: Connection refused (os error 111)".into(),
            ),
            5,
        ),
        (CliError::Http { status: 503, text: "Service Unavailable".into() }, 5),
        (CliError::Http { status: 418, text: "teapot".into() }, 2),
        (CliError::Usage("apply.yaml: line 3, column 1: unknown field `group`".into()), 2),
        (CliError::Failed("unexpected answer".into()), 1),
        (CliError::Failed("evil \u{1b}[2Jmessage\nsecond line".into()), 1),
    ];
    let mut out = String::new();
    for (e, code) in &cases {
        assert_eq!(e.exit_code(), *code, "{e}");
        let line = render::error_line(e);
        assert!(line.starts_with("wgctl: ") && line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        out.push_str(&format!("{code} {line}"));
    }
    assert!(out.contains(
        "wgctl: concurrency_limit (scope=target, limit=5): target web-01.prod is at capacity\n"
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn apply_lines() {
    let r = ApplyResponse {
        applied: vec![
            AppliedResource {
                kind: "target".into(),
                name: "web-01.prod".into(),
                action: "created".into(),
            },
            AppliedResource {
                kind: "policy".into(),
                name: "prod-ssh-write".into(),
                action: "unchanged".into(),
            },
        ],
    };
    assert_eq!(
        render::apply(&r),
        "target/web-01.prod created\npolicy/prod-ssh-write unchanged\n"
    );
}

const RESOURCES: &str = r#"kind: user
name: alice@corp
groups: [sre]
sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq7 alice@laptop"]
role: operator
---
kind: target
name: web-01.prod
address: 10.10.4.20:22
protocol: ssh
tags: {env: prod, team: web}
accounts:
  - name: deploy
    credential: vault/ssh/deploy-prod
maxSessionsPerTarget: 5
---
kind: target
name: billing-ro.prod
address: 10.20.0.5:5432
protocol: pg
---
kind: policy
name: prod-ssh-write
subjects: [group:sre, user:alice@corp]
targets: {tags: {env: prod}}
protocols: [ssh]
accounts: [deploy]
mfa: required
recording: full
reconnect: {mode: resume, grace: 120s}
idle: {timeout: 15m, grace: 60s}
concurrency: {max: 1}
commandFilters: [{deny: "^rm -rf /"}]
---
kind: limits
maxSessionsPerUser: 3
maxSessionsPerTarget: 5
"#;

#[test]
fn get_tables() {
    let rs = parse_documents(RESOURCES).unwrap();
    let mut out = String::new();
    for kind in Kind::ALL {
        out.push_str(&format!("# {}\n", kind.as_str()));
        out.push_str(&render::resources_table(kind, &rs));
    }
    assert!(out.contains("NAME             ADDRESS         PROTO  TAGS               ACCOUNTS\n"));
    assert!(out.contains("web-01.prod      10.10.4.20:22   ssh    env=prod,team=web  deploy\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn get_yaml_is_reappliable() {
    let rs = parse_documents(RESOURCES).unwrap();
    let yaml = render::resources_yaml(&rs).unwrap();
    assert_eq!(parse_documents(&yaml).unwrap(), rs);
    assert!(yaml.starts_with("kind: user\n"));
    insta::assert_snapshot!(yaml);
    // The JSON documents carry the kind tag and camelCase fields, as the API does.
    let json = render::json(&rs[1]).unwrap();
    assert!(json.contains("\"kind\": \"target\"") && json.contains("\"maxSessionsPerTarget\": 5"));
    let back: wg_domain::resources::Resource = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rs[1]);
}

#[test]
fn vault_lines() {
    let e = VaultEntry {
        path: "vault/ssh/x".into(),
        kind: "password".into(),
        updated_at: "2026-04-20T18:41:02Z".into(),
    };
    assert_eq!(
        render::vault_written(&e),
        "vault/ssh/x written (password)\n"
    );
    let k = VaultEntry {
        path: "vault/ssh/deploy-prod".into(),
        kind: "private_key".into(),
        updated_at: "2026-04-20T18:42:10Z".into(),
    };
    insta::assert_snapshot!(render::vault_list(&[e, k]));
}

#[test]
fn recording_verify_output() {
    let ok = RecordingVerify {
        session: "sess_a91c7f20bb48".into(),
        ok: true,
        status: "sealed".into(),
        chunks: 7,
        bytes: 918_644,
        sha256: SEAL.into(),
        problems: vec![],
    };
    let bad = RecordingVerify {
        ok: false,
        problems: vec![
            "chunk 3: sha256 mismatch".into(),
            "seal does not match the concatenated chunks".into(),
        ],
        ..ok.clone()
    };
    let out = format!(
        "{}{}",
        render::recording_verify(&ok),
        render::recording_verify(&bad)
    );
    assert!(out.starts_with("recording sess_a91c7f20bb48 OK (sealed"));
    insta::assert_snapshot!(out);
}

#[test]
fn audit_output() {
    let ev = |seq: i64, kind: &str, session: Option<&str>, reason: Option<&str>| AuditEventView {
        seq,
        time: format!("2026-04-20T18:55:3{seq}.000Z"),
        kind: kind.into(),
        actor: Some("carol@corp".into()),
        session: session.map(Into::into),
        reason: reason.map(Into::into),
        details: serde_json::json!({}),
        prev: String::new(),
        hash: String::new(),
    };
    let events = vec![
        ev(1, "policy.applied", None, None),
        ev(
            2,
            "session.terminated",
            Some("sess_a91c7f20bb48"),
            Some("policy review"),
        ),
        ev(3, "recording.sealed", Some("sess_a91c7f20bb48"), None),
    ];
    let mut out = render::audit_list(&events);
    out.push_str(&render::audit_verify(&AuditVerify {
        ok: true,
        events: 3,
        error: None,
    }));
    out.push_str(&render::audit_verify(&AuditVerify {
        ok: false,
        events: 2,
        error: Some("event 2: hash mismatch".into()),
    }));
    assert!(out.contains("audit chain OK (3 events)\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn json_is_pretty_and_stable() {
    let out = render::json(&wg_domain::api::SessionList {
        sessions: vec![alice()],
        next_cursor: None,
    })
    .unwrap();
    assert!(out.starts_with("{\n  \"sessions\": [\n"));
    insta::assert_snapshot!(out);
}

#[test]
fn mass_terminate_output() {
    let bulk = |terminated, already_ended| wg_domain::api::BulkTerminateResponse {
        bulk_operation: "bulk_0a1b2c3d4e5f".into(),
        terminated,
        failed: vec![],
        already_ended,
    };
    let r = bulk(
        vec![
            terminated(false, Some(("sealed", 7, 918_644))),
            terminated(false, None),
        ],
        0,
    );
    let out = render::terminate_matching(&r);
    assert_eq!(
        out,
        format!(
            "terminated sess_a91c7f20bb48 at 2026-04-20T18:55:31Z  recording  sealed (chunks=7, bytes=918644, sha256={SEAL})\n\
             terminated sess_a91c7f20bb48 at 2026-04-20T18:55:31Z  recording  off\n\
             2 sessions terminated (bulk operation bulk_0a1b2c3d4e5f)\n"
        )
    );
    insta::assert_snapshot!(out);
    // Nothing matched: said so, not just "0 sessions terminated".
    let none = bulk(vec![], 0);
    assert_eq!(
        render::terminate_matching(&none),
        "0 sessions terminated (bulk operation bulk_0a1b2c3d4e5f)\n\
         no live session matched the selectors\n"
    );
    // A concurrent mass termination that found its sessions already taken says so.
    let raced = bulk(vec![], 3);
    assert_eq!(
        render::terminate_matching(&raced),
        "0 sessions terminated (bulk operation bulk_0a1b2c3d4e5f)\n\
         3 other matching sessions had already ended (on their own or by another termination)\n"
    );
}

#[test]
fn limits_usage_table() {
    let rows = vec![
        wg_domain::api::LimitUsage {
            scope: "actor".into(),
            key: "alice@corp".into(),
            used: 3,
            limit: Some(3),
        },
        wg_domain::api::LimitUsage {
            scope: "target".into(),
            key: "web-01.prod".into(),
            used: 2,
            limit: None,
        },
    ];
    let out = render::limits_usage(&rows);
    assert_eq!(out.lines().next(), Some("SCOPE   KEY          USED  LIMIT"));
    assert!(out.lines().nth(2).unwrap().ends_with("2     -"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn gateway_list_table() {
    let rows = vec![
        wg_domain::api::GatewayView {
            name: "gw-us-1".into(),
            pool: "us".into(),
            address: "gw1.example.net:2222".into(),
            version: "0.1.0".into(),
            live_sessions: 12,
            last_heartbeat: "2026-11-29T18:02:11Z".into(),
            state: "live".into(),
            certificate_expires_at: Some("2027-11-29T18:00:00Z".into()),
        },
        wg_domain::api::GatewayView {
            name: "gw-us-2".into(),
            pool: "us".into(),
            address: "gw2.example.net:2222".into(),
            version: "0.1.0".into(),
            live_sessions: 0,
            last_heartbeat: "2026-11-29T17:58:40Z".into(),
            state: "lost".into(),
            certificate_expires_at: None,
        },
    ];
    let out = render::gateway_list(&rows);
    assert!(out.starts_with("NAME     POOL  ADDRESS"), "{out}");
    assert!(out.lines().nth(2).unwrap().ends_with("lost"), "{out}");
    insta::assert_snapshot!(out);
}

/// The seed's `session handoff` output, copied verbatim.
const SEED_HANDOFF: &str = "\
handoff requested -> dan@corp
  dan@corp must accept within 5m with: wgctl session accept sess_a91c7f20bb48
sess_a91c7f20bb48  previous owner: alice@corp  new owner: dan@corp (pending)
";

/// The seed's handoff of `sess_a91c7f20bb48` to dan@corp, as the API would return it.
fn dans_handoff() -> HandoffView {
    HandoffView {
        session: "sess_a91c7f20bb48".into(),
        from: "alice@corp".into(),
        to: "dan@corp".into(),
        requested_by: "alice@corp".into(),
        reason: "shift change, incident INC-4412".into(),
        state: HandoffState::Pending,
        requested_at: "2026-04-20T18:55:31Z".into(),
        expires_at: "2026-04-20T19:00:31Z".into(),
        ttl_seconds: 300,
        decided_at: None,
        policy: None,
    }
}

#[test]
fn handoff_matches_the_seed() {
    let out = render::handoff_requested(&dans_handoff());
    assert_eq!(out, SEED_HANDOFF);
    insta::assert_snapshot!(out);
    // The window is the offer's TTL.
    let quick = HandoffView {
        ttl_seconds: 90,
        ..dans_handoff()
    };
    assert!(render::handoff_requested(&quick).contains(
        "  dan@corp must accept within 90s with: wgctl session accept sess_a91c7f20bb48\n"
    ));
}

#[test]
fn handoff_accepted_output() {
    let accepted = HandoffView {
        state: HandoffState::Accepted,
        decided_at: Some("2026-04-20T18:57:02Z".into()),
        policy: Some("prod-oncall".into()),
        ..dans_handoff()
    };
    let ssh = SshAddr {
        host: "127.0.0.1".into(),
        port: 3022,
    };
    let out = render::handoff_accepted(&accepted, &ssh);
    assert_eq!(
        out,
        "handoff accepted: sess_a91c7f20bb48  previous owner: alice@corp  new owner: dan@corp\n  \
         attach with: ssh -t dan@corp:sess_a91c7f20bb48@127.0.0.1 -p 3022\n"
    );
    insta::assert_snapshot!(out);
}

#[test]
fn session_show_with_a_pending_handoff() {
    let mut s = alice();
    s.handoff = Some(dans_handoff());
    let out = render::session_show(&s);
    // The seed's lines are untouched; the offer is one more line at the end.
    let seed_part: Vec<&str> = out.lines().take(SEED_SHOW.lines().count()).collect();
    assert_eq!(
        seed_part,
        render::session_show(&alice()).lines().collect::<Vec<_>>()
    );
    assert_eq!(
        out.lines().last(),
        Some("handoff       -> dan@corp  (pending until 2026-04-20T19:00:31Z)")
    );
    insta::assert_snapshot!(out);
    // In JSON the offer is a `handoff` object; absent, it is null.
    let json = render::json(&s).unwrap();
    assert!(
        json.contains("\"handoff\": {\n    \"session\": \"sess_a91c7f20bb48\""),
        "{json}"
    );
    assert!(
        render::json(&alice())
            .unwrap()
            .contains("\"handoff\": null")
    );
}

#[test]
fn token_output_is_the_token_alone() {
    let t = TokenCreated {
        principal: "dan@corp".into(),
        token: "wgt_0123456789abcdef".into(),
        created_at: "2026-04-20T18:41:02Z".into(),
    };
    assert_eq!(render::token_created(&t), "wgt_0123456789abcdef\n");
    assert_eq!(
        render::token_notice(&t),
        "wgctl: token for dan@corp created at 2026-04-20T18:41:02Z; it is shown only this once\n"
    );
    assert!(
        !format!("{t:?}").contains("wgt_"),
        "Debug must not show the token"
    );
}

#[test]
fn join_token_revoked() {
    let mut r = wg_domain::api::JoinTokenRevoked {
        id: "3f0b9c2d41aa".into(),
        pool: "us".into(),
        already_revoked: false,
    };
    assert_eq!(
        render::token_revoked(&r),
        "join token 3f0b9c2d41aa (pool us) revoked: a gateway presenting it is refused from now on\n"
    );
    r.already_revoked = true;
    assert_eq!(
        render::token_revoked(&r),
        "join token 3f0b9c2d41aa (pool us) was already revoked\n"
    );
}
