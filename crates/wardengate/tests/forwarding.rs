//! Local port forwarding (acceptance case S7): `ssh -L` works to a destination the policy
//! allows, and is refused and audited elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use common::{Rig, wait_until};

/// A one-line TCP service on loopback: answers every connection with `greeting`.
fn service(greeting: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().map_while(Result::ok) {
            let _ = c.write_all(greeting.as_bytes());
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fetch(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn local_forwarding_follows_policy_and_refusals_are_audited() {
    let rig = Rig::start();
    let allowed = service("hello-from-allowed\n");
    let other = service("must-not-be-reached\n");
    rig.apply(&format!(
        "kind: target\nname: dev1-fwd\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n---\n\
         kind: policy\nname: fwd\nsubjects: [user:alice@corp]\ntargets: {{names: [dev1-fwd]}}\n\
         forwarding: {{local: [\"127.0.0.1:{allowed}\"]}}\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
    let (l_ok, l_denied) = (free_port(), free_port());
    let mut tunnel = rig
        .ssh(
            "alice",
            "alice@corp:dev1-fwd",
            &[
                "-N",
                "-L",
                &format!("{l_ok}:127.0.0.1:{allowed}"),
                "-L",
                &format!("{l_denied}:127.0.0.1:{other}"),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the tunnel listening", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", l_ok)).is_ok()
    });
    assert_eq!(fetch(l_ok), "hello-from-allowed\n");
    assert_eq!(
        fetch(l_denied),
        "",
        "a forward the policy does not allow must not connect"
    );
    let id = rig.wait_one_session();
    // Gateway-decided events travel through its event journal: they arrive within moments.
    let mut kinds: Vec<serde_json::Value> = Vec::new();
    wait_until("both forward events", Duration::from_secs(5), || {
        kinds = rig.audit(&id);
        ["session.forward.opened", "session.forward.denied"]
            .iter()
            .all(|k| kinds.iter().any(|e| e["kind"] == *k))
    });
    let opened = kinds
        .iter()
        .find(|e| e["kind"] == "session.forward.opened")
        .unwrap();
    assert_eq!(opened["details"]["port"], allowed);
    let denied = kinds
        .iter()
        .find(|e| e["kind"] == "session.forward.denied")
        .unwrap();
    assert_eq!(denied["details"]["port"], other);
    assert_eq!(denied["actor"], "alice@corp");
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    // A forward-only session has a recording too: the markers name the destinations.
    wait_until("the tunnel session closed", Duration::from_secs(10), || {
        rig.session(&id)["state"] == "closed"
    });
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
    assert!(
        rig.recording_stream(&id)
            .contains(&format!("forward: 127.0.0.1:{allowed}"))
    );

    // Remote forwarding is refused and recorded.
    let out = rig
        .ssh(
            "alice",
            "alice@corp:dev1-fwd",
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &format!("0:127.0.0.1:{allowed}"),
            ],
        )
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    wait_until(
        "the remote forward refusal audited",
        Duration::from_secs(5),
        || {
            rig.wgctl_json(&["audit", "list", "--kind", "session.forward.denied"])["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["details"]["direction"] == "remote")
        },
    );

    // A policy without forwarding refuses every forward.
    let l = free_port();
    let mut tunnel = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &["-N", "-L", &format!("{l}:127.0.0.1:{allowed}")],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the second tunnel listening",
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", l)).is_ok(),
    );
    assert_eq!(fetch(l), "");
    let _ = tunnel.kill();
    let _ = tunnel.wait();
}
