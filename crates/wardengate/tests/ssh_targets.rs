//! Target legs: pinned host keys, trust on first use, environment, crash recovery, and the
//! API's self-description. Real OpenSSH client, real sshd, `wardengate dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Rig, read, wait_until};

#[test]
fn a_target_whose_host_key_differs_from_the_pinned_key_is_refused() {
    let rig = Rig::start();
    rig.apply(&format!(
        "kind: target\nname: dev1-wrongkey\naddress: \"127.0.0.1:{}\"\nprotocol: ssh\ntags: {{env: dev}}\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{}\"\n",
        rig.sshd_port,
        rig.public_key("alice"),
    ));
    let before = read(&rig.sshd_log).matches("Accepted publickey").count();
    let out = rig
        .ssh("alice", "alice@corp:dev1-wrongkey", &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the pinned key"), "{err}");
    // The account never logged in on the impostor.
    assert_eq!(
        read(&rig.sshd_log).matches("Accepted publickey").count(),
        before
    );
    // The gateway's report travels through its event journal: it lands within moments.
    wait_until("the refused session closed", Duration::from_secs(5), || {
        let closed = rig.wgctl_json(&[
            "session",
            "list",
            "--state",
            "closed",
            "--target",
            "dev1-wrongkey",
        ]);
        closed["sessions"][0]["end_reason"] == "target_error"
    });
}

#[test]
fn trust_on_first_use_pins_and_records_the_host_key() {
    let rig = Rig::start();
    rig.apply(&format!(
        "kind: target\nname: dev1-tofu\naddress: \"127.0.0.1:{}\"\nprotocol: ssh\ntags: {{env: dev}}\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\n",
        rig.sshd_port,
    ));
    let out = rig
        .ssh("alice", "alice@corp:dev1-tofu", &["echo first"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = rig.wgctl_json(&["get", "target", "dev1-tofu"]);
    let pinned = target["hostKey"].as_str().unwrap_or_default();
    let expected = rig.public_key("sshd_host");
    assert_eq!(
        pinned.split_whitespace().take(2).collect::<Vec<_>>(),
        expected.split_whitespace().take(2).collect::<Vec<_>>()
    );
    let opened = rig.wgctl_json(&["audit", "list", "--kind", "session.opened"]);
    assert!(
        opened["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["host_key_pinned"].is_string())
    );
}

#[test]
fn environment_requests_reach_the_target() {
    let rig = Rig::start();
    let out = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &["-o", "SetEnv=WG_PROBE=relayed", "echo $WG_PROBE"],
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "relayed\n");
}

#[test]
fn a_crash_leaves_sessions_closed_as_gateway_lost_with_partial_recordings() {
    let mut rig = Rig::start();
    let out_file = rig.path("client.out");
    let mut client = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &["-tt", "echo before-crash; sleep 600"],
        )
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    wait_until("output", Duration::from_secs(10), || {
        read(&out_file).contains("before-crash")
    });
    // Let the recorder's 1 s flush put the frames on disk.
    std::thread::sleep(Duration::from_millis(1500));
    rig.crash_wardengate();
    let _ = client.kill();
    let _ = client.wait();
    rig.start_wardengate();
    let s = rig.session(&id);
    assert_eq!(s["state"], "closed");
    assert_eq!(s["end_reason"], "gateway_lost");
    assert_eq!(s["recording"]["status"], "partial");
    let verify = rig.wgctl_ok(&["recording", "verify", &id]);
    assert!(
        verify.contains("OK") && verify.contains("partial"),
        "{verify}"
    );
    let played = rig.wgctl_ok(&["recording", "play", &id, "--speed", "1000"]);
    assert!(played.contains("before-crash"), "{played}");
    assert!(
        rig.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
}

#[test]
fn the_api_describes_itself_and_requires_a_token() {
    let rig = Rig::start();
    let out = Command::new("curl")
        .args(["-sSf"])
        .arg(format!("{}/api/v1/openapi.json", rig.api))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for path in [
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/{id}/terminate",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let code = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/api/v1/sessions", rig.api))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "401");
}
