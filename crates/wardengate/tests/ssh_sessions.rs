//! Operators see, inspect and terminate live sessions; recordings and the audit chain are
//! evidence. Real OpenSSH client, real sshd target, `wardengate dev`, `wgctl`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Rig, read, sha256_hex, wait_until};

fn events(rig: &Rig, id: &str) -> Vec<String> {
    rig.audit(id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn list_show_and_terminate_a_running_session() {
    let rig = Rig::start();
    let out_file = rig.path("client.out");
    let err_file = rig.path("client.err");
    // S4: a loop printing timestamps under a PTY.
    let mut client = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &[
                "-tt",
                "while :; do date +%s.%N; sleep 0.2; done # wg-s4-marker",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    wait_until("output", Duration::from_secs(10), || {
        read(&out_file).lines().count() > 3
    });

    let list = rig.wgctl_ok(&["session", "list"]);
    let mut lines = list.lines();
    assert_eq!(
        lines.next().unwrap(),
        "SESSION             ACTOR               TARGET               PROTO  GW        AGE"
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&format!(
            "{id}   alice@corp          dev1                 ssh    gw-dev-1  00:00:"
        )),
        "{row}"
    );
    assert!(
        rig.wgctl_ok(&["session", "list", "--actor", "bob@corp"])
            .lines()
            .count()
            == 1
    );
    assert!(
        rig.wgctl_ok(&["session", "list", "--target", "dev1", "--protocol", "ssh"])
            .contains(&id)
    );

    let show = rig.wgctl_ok(&["session", "show", &id]);
    for needle in [
        format!("session       {id}"),
        "state         active".into(),
        "actor         alice@corp (group:dev)".into(),
        format!("target        dev1 (127.0.0.1:{})", rig.sshd_port),
        "account       root  (vault/ssh/dev1)".into(),
        "policy        dev-ssh".into(),
        "gateway       gw-dev-1 (127.0.0.1)".into(),
        "recording     full  (chunk 1/".into(),
    ] {
        assert!(show.contains(&needle), "missing {needle:?} in\n{show}");
    }
    assert!(
        show.lines()
            .any(|l| l.starts_with("client        127.0.0.1  (-)  OpenSSH_")),
        "{show}"
    );

    // Without a reason: refused, the session continues.
    let out = rig.wgctl(&["session", "terminate", &id]);
    assert_eq!(out.status.code(), Some(2));
    let http = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {}", rig.token)])
        .args(["-H", "Content-Type: application/json", "-d", "{}"])
        .arg(format!("{}/api/v1/sessions/{id}/terminate", rig.api))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&http.stdout), "400");
    assert_eq!(rig.session(&id)["state"], "active");

    let t0 = Instant::now();
    let out = rig.wgctl_ok(&[
        "session",
        "terminate",
        &id,
        "--reason",
        "policy review - suspected off-hours access",
    ]);
    let mut lines = out.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("terminated {id} at 20"))
    );
    let rec_line = lines.next().unwrap();
    assert!(
        rec_line.starts_with("recording  sealed (chunks="),
        "{rec_line}"
    );
    // The client is cut within 2 s, non-zero, with the reason.
    let status = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "client still connected after 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(255));
    assert!(
        read(&err_file).contains("policy review - suspected off-hours access"),
        "{}",
        read(&err_file)
    );
    // Both legs are gone: no connection to the target, no remote process.
    wait_until("target leg closed", Duration::from_secs(2), || {
        rig.target_connections() == 0
    });
    wait_until("remote loop gone", Duration::from_secs(2), || {
        !Command::new("pgrep")
            .args(["-f", "wg-s4-marker"])
            .status()
            .unwrap()
            .success()
    });
    assert_eq!(rig.session(&id)["state"], "closed");
    assert!(!rig.wgctl_ok(&["session", "list"]).contains(&id));

    // Idempotent, and says so.
    let again = rig.wgctl_ok(&["session", "terminate", &id, "--reason", "again"]);
    assert!(
        again.starts_with(&format!("{id} already closed at ")),
        "{again}"
    );

    // Evidence: order of events, a verifying recording and audit chain.
    let kinds = events(&rig, &id);
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(pos("session.requested") < pos("session.approved"));
    assert!(pos("session.approved") < pos("session.opened"));
    assert!(pos("session.terminated") < pos("recording.sealed"));
    assert!(pos("recording.sealed") < pos("session.closed"));
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
    assert!(
        rig.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
}

#[test]
fn termination_loses_no_output() {
    let rig = Rig::start();
    let out_file = rig.path("client.out");
    let mut client = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &[
                "-tt",
                "head -c 5000000 /dev/urandom | base64; echo LAST-MARK; sleep 600",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    wait_until("LAST-MARK", Duration::from_secs(60), || {
        read(&out_file).contains("LAST-MARK")
    });
    let out = rig.wgctl_ok(&["session", "terminate", &id, "--reason", "S3"]);
    let _ = client.wait();
    let seal_hex = out
        .lines()
        .nth(1)
        .unwrap()
        .rsplit("sha256=")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();

    let received = std::fs::read(&out_file).unwrap();
    let cast = rig.recording_stream(&id);
    assert_eq!(
        sha256_hex(cast.as_bytes()),
        seal_hex,
        "the seal is the hash of the stream"
    );
    let mut output = String::new();
    for line in cast.lines().skip(1) {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        if ev[1] == "o" {
            output.push_str(ev[2].as_str().unwrap());
        }
    }
    assert!(output.contains("LAST-MARK"));
    assert_eq!(
        sha256_hex(output.as_bytes()),
        sha256_hex(&received),
        "recorded output ({} bytes) differs from what the client received ({} bytes)",
        output.len(),
        received.len()
    );
    let kinds = events(&rig, &id);
    let t = kinds
        .iter()
        .position(|k| k == "session.terminated")
        .unwrap();
    let s = kinds.iter().position(|k| k == "recording.sealed").unwrap();
    let c = kinds.iter().position(|k| k == "session.closed").unwrap();
    assert!(t < s && s < c, "{kinds:?}");
    let sealed = rig
        .audit(&id)
        .into_iter()
        .find(|e| e["kind"] == "recording.sealed")
        .unwrap();
    assert_eq!(sealed["details"]["sha256"], seal_hex.as_str());
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let rig = Rig::start();
    // Unknown target.
    let out = rig
        .ssh("alice", "alice@corp:nosuch", &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown target \"nosuch\""));
    // Malformed login name.
    let out = rig.ssh("alice", "alice-corp", &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed login name"));
    // A key that is not the actor's.
    let out = rig
        .ssh("bob", "alice@corp:dev1", &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    // A policy that denies (bob has none): one clear line, a session.denied event, no target login.
    let before = read(&rig.sshd_log).matches("Accepted publickey").count();
    let out = rig.ssh("bob", "bob@corp:dev1", &["true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("access denied (policy_denied)"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let denied = rig.wgctl_json(&["audit", "list", "--kind", "session.denied"]);
    assert!(
        denied["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "bob@corp")
    );
    assert_eq!(
        read(&rig.sshd_log).matches("Accepted publickey").count(),
        before
    );
    // A refused attempt that opens no channel (ssh -N) is closed with the reason, not left hanging.
    let started = std::time::Instant::now();
    let out = rig
        .ssh("bob", "bob@corp:dev1", &["-N", "-o", "LogLevel=INFO"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy_denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reasons are bounded and cannot carry terminal control sequences.
    let long = "r".repeat(2000);
    for bad in ["a\u{1b}[2Jb", long.as_str()] {
        let out = rig.wgctl(&["session", "terminate", "sess_000000000000", "--reason", bad]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Unknown or malformed session IDs.
    assert_eq!(
        rig.wgctl(&["session", "show", "sess_000000000000"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        rig.wgctl(&["session", "terminate", "sess_000000000000", "--reason", "x"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        rig.wgctl(&["session", "show", "nope"]).status.code(),
        Some(2)
    );
    // Invalid YAML: the error names line and column and nothing is applied.
    let before = rig.wgctl_ok(&["get", "target", "dev1", "-o", "json"]);
    let bad = rig.path("bad.yaml");
    std::fs::write(
        &bad,
        "kind: target\nname: dev1\naddress: 10.0.0.1:22\nprotocol: ssh\n---\nkind: policy\nname: p\nsubjects: [user:x\n",
    )
    .unwrap();
    let out = rig.wgctl(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line ") && err.contains("column "), "{err}");
    assert_eq!(
        rig.wgctl_ok(&["get", "target", "dev1", "-o", "json"]),
        before
    );
    // The API refuses the same file (server-side validation, not only the CLI's).
    let body = serde_json::json!({"yaml": std::fs::read_to_string(&bad).unwrap()}).to_string();
    let http = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {}", rig.token)])
        .args(["-H", "Content-Type: application/json", "-d", &body])
        .arg(format!("{}/api/v1/apply", rig.api))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&http.stdout);
    assert!(text.ends_with("\n400"), "{text}");
    assert!(text.contains("\"error\":\"bad_request\""), "{text}");
    // No token, bad token.
    let out = Command::new(env!("CARGO_BIN_EXE_wgctl"))
        .args(["session", "list"])
        .env("WGCTL_ADDR", &rig.api)
        .env("WGCTL_TOKEN", "wgt_bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn state_survives_a_restart_and_the_audit_chain_detects_tampering() {
    let mut rig = Rig::start();
    let out = rig
        .ssh("alice", "alice@corp:dev1", &["echo hi"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut id = String::new();
    wait_until("the session to close", Duration::from_secs(10), || {
        let closed = rig.wgctl_json(&["session", "list", "--state", "closed"]);
        match closed["sessions"][0]["id"].as_str() {
            Some(s) => {
                id = s.to_owned();
                true
            }
            None => false,
        }
    });
    // A second process on the same data directory is refused and disturbs nothing.
    let second = Command::new(env!("CARGO_BIN_EXE_wardengate"))
        .args(["dev", "--data-dir"])
        .arg(&rig.data)
        .args(["--ssh-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    rig.stop_wardengate();
    rig.start_wardengate();
    assert_eq!(rig.session(&id)["state"], "closed");
    let out = rig
        .ssh("alice", "alice@corp:dev1", &["echo again"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "again\n");
    assert!(
        rig.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
    rig.stop_wardengate();

    // Edit one audit row behind the product's back: verify must notice.
    let db = rig.data.join("wardengate.db");
    let st = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"UPDATE audit_events SET actor='mallory' WHERE seq=3\"); c.commit()",
            db.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    rig.start_wardengate();
    let out = rig.wgctl(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("edited"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A forger with write access to the database recomputes every hash after the edit and the
    // chain head: without the chain key (derived from the vault master key, outside the
    // database) the chain still does not verify.
    rig.stop_wardengate();
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import hashlib, json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute("SELECT seq, time_ms, kind, actor, session, reason, details_json FROM audit_events ORDER BY seq").fetchall()
prev = "0" * 64
for seq, t, kind, actor, session, reason, details in rows:
    canon = json.dumps([seq, t, kind, actor, session, reason, details, prev], separators=(",", ":"), ensure_ascii=False)
    h = hashlib.sha256(canon.encode()).hexdigest()
    c.execute("UPDATE audit_events SET prev = ?, hash = ? WHERE seq = ?", (prev, h, seq))
    prev = h
c.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))
c.commit()
"#,
        )
        .arg(&db)
        .status()
        .unwrap();
    assert!(st.success());
    rig.start_wardengate();
    let out = rig.wgctl(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a recomputed chain must not verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Tamper with a recording chunk: verify must notice.
    let chunk = rig
        .data
        .join("recordings")
        .join(&id)
        .join("chunk-000001.cast");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&chunk, bytes).unwrap();
    let out = rig.wgctl(&["recording", "verify", &id]);
    assert_eq!(out.status.code(), Some(1));

    // Rewrite it consistently (chunk, manifest and SHA256SUMS agree): the seal recorded in the
    // store at close still exposes it, and playback refuses it.
    let dir = rig.data.join("recordings").join(&id);
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import hashlib, json, sys, os
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
whole = hashlib.sha256()
for c in m["chunks"]:
    data = open(os.path.join(d, c["file"]), "rb").read()
    c["sha256"] = hashlib.sha256(data).hexdigest(); c["bytes"] = len(data)
    whole.update(data)
m["sha256"] = whole.hexdigest(); m["bytes"] = sum(c["bytes"] for c in m["chunks"])
json.dump(m, open(os.path.join(d, "manifest.json"), "w"))
open(os.path.join(d, "SHA256SUMS"), "w").write("".join(c["sha256"] + "  " + c["file"] + chr(10) for c in m["chunks"]))
"#,
        )
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = rig.wgctl(&["recording", "verify", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("differs from the seal recorded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(
        rig.wgctl(&["recording", "play", &id, "--speed", "1000"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn binary_streams_without_a_terminal_are_recorded_as_size_and_digest() {
    let rig = Rig::start();
    let src = rig.path("payload.bin");
    let mut payload = vec![0u8; 1_000_000];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(&src, &payload).unwrap();
    let remote = rig.path("remote.bin");
    let up = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &[&format!("echo text-before; cat > {}", remote.display())],
        )
        .stdin(std::fs::File::open(&src).unwrap())
        .output()
        .unwrap();
    assert!(up.status.success());
    let down = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &[&format!("cat {}", remote.display())],
        )
        .output()
        .unwrap();
    assert_eq!(down.stdout, payload);
    let digest = sha256_hex(&payload);
    let mut ids = Vec::new();
    wait_until("both sessions closed", Duration::from_secs(10), || {
        let closed = rig.wgctl_json(&["session", "list", "--state", "closed"]);
        ids = closed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.len() == 2
    });
    let all: String = ids.iter().map(|id| rig.recording_stream(id)).collect();
    assert!(
        all.contains("text-before"),
        "text output is recorded in full"
    );
    assert!(
        all.contains(&format!("binary input: 1000000 bytes, sha256={digest}")),
        "{all}"
    );
    assert!(
        all.contains(&format!("binary output: 1000000 bytes, sha256={digest}")),
        "{all}"
    );
    assert!(
        all.len() < 100_000,
        "binary payload must not be stored: {} bytes",
        all.len()
    );
}

#[test]
fn a_client_that_vanishes_closes_its_session_and_target_leg() {
    let rig = Rig::start();
    let mut client = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &["-tt", "echo up; sleep 600 # wg-vanish-marker"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    client.kill().unwrap();
    let _ = client.wait();
    wait_until("the session to close", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
    assert_eq!(rig.session(&id)["end_reason"], "client_exit");
    wait_until("target leg closed", Duration::from_secs(5), || {
        rig.target_connections() == 0
    });
    wait_until("remote command gone", Duration::from_secs(5), || {
        !Command::new("pgrep")
            .args(["-f", "wg-vanish-marker"])
            .status()
            .unwrap()
            .success()
    });
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
}

/// A forced end signals the session's processes on the target (sshd's "signal" request, SIGTERM
/// to the session's process group): a command without a terminal and the background job it
/// started are both gone, where a dropped connection (or a direct one) would leave them running.
/// sshd honours the request for unprivileged accounts only (a root login skips privilege
/// separation and is refused), so this logs in as the local account `wgtest`, which
/// scripts/test.sh creates.
#[test]
fn terminate_signals_the_processes_of_a_command_without_a_terminal() {
    let account = "wgtest";
    assert!(
        Command::new("id")
            .arg(account)
            .output()
            .unwrap()
            .status
            .success(),
        "no local account {account}: run the tests with scripts/test.sh, which creates it"
    );
    let rig = Rig::start();
    // sshd reads the shared authorized_keys file as the account: let it in.
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        (rig.dir.path().to_path_buf(), 0o755),
        (rig.path("authorized_keys"), 0o644),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let host = read(&rig.path("sshd_host.pub"));
    let host = host
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    rig.apply(&format!(
        r#"kind: target
name: dev1-user
address: "127.0.0.1:{port}"
protocol: ssh
tags: {{env: dev}}
accounts:
  - name: {account}
    credential: vault/ssh/dev1
hostKey: "{host}"
"#,
        port = rig.sshd_port,
    ));
    // Named through argv[0], so that the processes themselves match, not only their shell.
    let marker = format!("wg-signal-{}", std::process::id());
    let command = format!("(exec -a {marker}-bg sleep 600) & exec -a {marker}-fg sleep 601");
    let mut client = rig
        .ssh(
            "alice",
            &format!("alice@corp:dev1-user:{account}"),
            &[&command],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    let count = || {
        // The account's processes only: the local client's command line names the marker too.
        let out = Command::new("pgrep")
            .args(["-u", account, "-f", &marker])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    wait_until(
        "the remote command and its background job running",
        Duration::from_secs(5),
        || count() == 2,
    );
    rig.wgctl_ok(&[
        "session",
        "terminate",
        &id,
        "--reason",
        "no stray processes",
    ]);
    let _ = client.wait();
    wait_until("the remote processes gone", Duration::from_secs(5), || {
        count() == 0
    });
}

/// A TCP proxy to `to` that waits `delay` before connecting each accepted client.
fn slow_proxy(to: u16, delay: Duration) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    return;
                };
                let (mut a, mut b) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut c2, mut up2) = (c, up);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut up2);
                    let _ = up2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut b, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn terminate_during_set_up_closes_the_session_and_tells_the_client() {
    let rig = Rig::start();
    let port = slow_proxy(rig.sshd_port, Duration::from_secs(3));
    rig.apply(&format!(
        "kind: target\nname: slow1\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\ntags: {{env: dev}}\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{}\"\n",
        rig.public_key("sshd_host")
    ));
    let client = rig
        .ssh(
            "alice",
            "alice@corp:slow1",
            &["-o", "LogLevel=INFO", "echo RAN"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = String::new();
    wait_until(
        "an approved session",
        Duration::from_secs(10),
        || match rig.sessions().first() {
            Some(s) if s["state"] == "approved" => {
                id = s["id"].as_str().unwrap().to_owned();
                true
            }
            _ => false,
        },
    );
    let out = rig.wgctl_ok(&["session", "terminate", &id, "--reason", "during setup"]);
    assert!(out.starts_with(&format!("terminated {id} at ")), "{out}");
    let done = client.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(255),
        "stdout {:?} stderr {:?}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
        read(&rig.wardengate_log)
    );
    assert!(done.stdout.is_empty(), "the command must not run");
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("during setup"), "{err}");
    let s = rig.session(&id);
    assert_eq!(s["state"], "closed");
    assert_eq!(s["end_reason"], "terminated");
}
