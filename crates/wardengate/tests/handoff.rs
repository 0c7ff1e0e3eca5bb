//! Ownership handoff (seed "Ownership and handoff", acceptance case S6): alice hands her shell to
//! bob; bob accepts and attaches with the SSH login `bob@corp:SESSION`; the shell state survives,
//! the owner changes, later input is attributed to bob, alice's client is detached with a
//! message. Refusals (no permitting policy, accept after the window) leave alice the owner.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{
    Rig, flood_a_stopped_client, read, signal, type_line, wait_exit, wait_output, wait_until,
};

/// Lets bob reach `dev1` (the rig gives bob no policy).
fn permit_bob(rig: &Rig) {
    rig.apply(
        "kind: policy\nname: bob-dev\nsubjects: [user:bob@corp]\ntargets: {names: [dev1]}\n\
         protocols: [ssh]\nrecording: full\n",
    );
}

/// An API token for bob, from `wgctl token create`.
fn bob_token(rig: &Rig) -> String {
    rig.wgctl_ok(&["token", "create", "bob@corp"])
        .trim()
        .to_owned()
}

/// `wgctl` as bob.
fn wgctl_as(rig: &Rig, token: &str, args: &[&str]) -> std::process::Output {
    rig.wgctl_cmd(args)
        .env("WGCTL_TOKEN", token)
        .output()
        .unwrap()
}

fn owner(rig: &Rig, id: &str) -> String {
    rig.session(id)["actor"].as_str().unwrap().to_owned()
}

/// alice's shell on `dev1`, after `setup` ran in it: her client (output in `alice.out`) and
/// the session's ID.
fn alice_ready(rig: &Rig, setup: &str) -> (std::process::Child, String) {
    let out_a = rig.path("alice.out");
    let mut alice = rig.shell("alice", "alice@corp:dev1", &out_a);
    let id = rig.wait_one_session();
    type_line(&mut alice, &format!("{setup}echo READY$((2+2))"));
    wait_output(&out_a, "READY4");
    (alice, id)
}

#[test]
fn handoff_keeps_the_shell_and_moves_the_owner() {
    let rig = Rig::start();
    permit_bob(&rig);
    let token = bob_token(&rig);
    let (mut alice, id) = alice_ready(&rig, "export X=1; cd /tmp; ");

    let req = rig.wgctl_ok(&[
        "session",
        "handoff",
        &id,
        "--to",
        "bob@corp",
        "--reason",
        "shift change",
    ]);
    assert_eq!(
        req,
        format!(
            "handoff requested -> bob@corp\n  bob@corp must accept within 5m with: wgctl session accept {id}\n\
             {id}  previous owner: alice@corp  new owner: bob@corp (pending)\n"
        )
    );
    let acc = wgctl_as(&rig, &token, &["session", "accept", &id]);
    assert!(
        acc.status.success(),
        "{}",
        String::from_utf8_lossy(&acc.stderr)
    );
    assert!(String::from_utf8_lossy(&acc.stdout).contains(&format!("bob@corp:{id}")));
    assert_eq!(owner(&rig, &id), "bob@corp");
    // The previous owner's client is let go at the acceptance: its input no longer reaches
    // the shell, and the session waits for bob.
    let st = wait_exit(&mut alice, Duration::from_secs(20));
    assert_ne!(st.code(), Some(0));
    wait_until("detached for bob", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "detached"
    });

    // bob attaches to the same PTY: the shell state is there.
    let out_b = rig.path("bob.out");
    let mut bob = rig.shell("bob", &format!("bob@corp:{id}"), &out_b);
    type_line(&mut bob, "echo STATE=$X:$PWD:$((3+3))");
    let text = wait_output(&out_b, "STATE=1:/tmp:6");
    assert!(text.contains("STATE=1:/tmp:6"), "{text}");
    // alice's client was told why.
    let err = read(&rig.path("alice.err"));
    assert!(
        err.contains("this session was handed off to bob@corp (shift change)"),
        "alice's stderr: {err}"
    );
    // Same session, owned by bob.
    let live = rig.sessions();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["id"], id.as_str());
    assert_eq!(live[0]["actor"], "bob@corp");
    let list = rig.wgctl_ok(&["session", "list"]);
    assert!(list.contains("bob@corp"), "{list}");

    type_line(&mut bob, "exit");
    wait_exit(&mut bob, Duration::from_secs(20));
    wait_until("closed", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
    let kinds: Vec<String> = rig
        .audit(&id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in [
        "session.handoff.requested",
        "session.handoff.accepted",
        "session.attached",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    let accepted = rig
        .audit(&id)
        .into_iter()
        .find(|e| e["kind"] == "session.handoff.accepted")
        .unwrap();
    let text = accepted.to_string();
    assert!(
        text.contains("alice@corp") && text.contains("bob@corp") && text.contains("shift change"),
        "{text}"
    );
    // The recording attributes bob's input to bob: his keystrokes come after the marker.
    let cast = rig.recording_stream(&id);
    let marker = cast
        .find("attached: input from bob@corp")
        .expect("attach marker");
    let typed = cast.rfind("STATE=").unwrap();
    assert!(typed > marker);
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
}

#[test]
fn refused_handoffs_leave_the_owner_in_place() {
    let rig = Rig::start();
    let token = bob_token(&rig);
    let out_a = rig.path("alice.out");
    let mut alice = rig.shell("alice", "alice@corp:dev1", &out_a);
    let id = rig.wait_one_session();

    // bob holds no policy for dev1: the handoff cannot be made to him.
    let r = rig.wgctl(&[
        "session", "handoff", &id, "--to", "bob@corp", "--reason", "x",
    ]);
    assert!(!r.status.success());
    assert_eq!(owner(&rig, &id), "alice@corp");

    // With a policy, but accepted after the window: refused as expired.
    permit_bob(&rig);
    rig.wgctl_ok(&[
        "session", "handoff", &id, "--to", "bob@corp", "--reason", "x", "--ttl", "1s",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let late = wgctl_as(&rig, &token, &["session", "accept", &id]);
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("expired"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
    assert_eq!(owner(&rig, &id), "alice@corp");

    // Accepted in time, but bob lost his policy meanwhile: refused.
    rig.wgctl_ok(&[
        "session", "handoff", &id, "--to", "bob@corp", "--reason", "x",
    ]);
    rig.wgctl_ok(&["delete", "policy", "bob-dev"]);
    let denied = wgctl_as(&rig, &token, &["session", "accept", &id]);
    assert!(!denied.status.success());
    assert_eq!(owner(&rig, &id), "alice@corp");
    // bob cannot attach to a session he does not own.
    let att = rig
        .ssh("bob", &format!("bob@corp:{id}"), &["true"])
        .output()
        .unwrap();
    assert_ne!(att.status.code(), Some(0));

    // alice still has her shell.
    type_line(&mut alice, "echo STILL$((4+4))");
    wait_output(&out_a, "STILL8");
    type_line(&mut alice, "exit");
    assert_eq!(
        wait_exit(&mut alice, Duration::from_secs(20)).code(),
        Some(0)
    );
}

/// The incoming owner's policy applies from the acceptance on; a session recorded less than
/// that policy demands cannot be handed over (recording cannot start half-way), and a session
/// without a terminal cannot be handed over at all.
#[test]
fn a_handoff_never_lowers_recording_or_moves_a_session_without_a_terminal() {
    let rig = Rig::start();
    rig.apply(&format!(
        "kind: target\nname: dev1-norec\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n---\n\
         kind: policy\nname: alice-norec\nsubjects: [user:alice@corp]\ntargets: {{names: [dev1-norec]}}\n\
         recording: \"off\"\n---\n\
         kind: policy\nname: bob-full\nsubjects: [user:bob@corp]\ntargets: {{names: [dev1-norec, dev1]}}\n\
         recording: full\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
    let out = rig.path("a.out");
    let mut alice = rig.shell("alice", "alice@corp:dev1-norec", &out);
    let id = rig.wait_one_session();
    type_line(&mut alice, "echo READY$((3+4))");
    wait_output(&out, "READY7");
    let r = rig.wgctl(&[
        "session", "handoff", &id, "--to", "bob@corp", "--reason", "x",
    ]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("requires recording full"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(owner(&rig, &id), "alice@corp");
    type_line(&mut alice, "exit");
    wait_exit(&mut alice, Duration::from_secs(20));

    // A command without a terminal has no console to hand over.
    let mut job = rig
        .ssh("alice", "alice@corp:dev1", &["sleep 30"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    let r = rig.wgctl(&[
        "session", "handoff", &id, "--to", "bob@corp", "--reason", "x",
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("no interactive terminal"));
    let _ = job.kill();
    let _ = job.wait();
}

/// The previous owner's client stopped reading under a flood of output (review, 2026-11-30):
/// the handoff still lets it go, and bob attaches and types. Before the fix the write to the
/// stopped client held the console for good: bob got nothing and his input went nowhere.
#[test]
fn a_handoff_from_a_stalled_client_still_reaches_the_new_owner() {
    let rig = Rig::start();
    permit_bob(&rig);
    let token = bob_token(&rig);
    let (mut alice, id) = alice_ready(&rig, "");
    flood_a_stopped_client(&mut alice, 1_500_000, "FLOOD$((3+3))");
    rig.wgctl_ok(&[
        "session", "handoff", &id, "--to", "bob@corp", "--reason", "stalled",
    ]);
    let acc = wgctl_as(&rig, &token, &["session", "accept", &id]);
    assert!(
        acc.status.success(),
        "{}",
        String::from_utf8_lossy(&acc.stderr)
    );
    wait_until("detached for bob", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "detached"
    });
    let out_b = rig.path("bob.out");
    let mut bob = rig.shell("bob", &format!("bob@corp:{id}"), &out_b);
    wait_output(&out_b, "FLOOD6");
    type_line(&mut bob, "echo BOB=$((4+4))");
    wait_output(&out_b, "BOB=8");
    type_line(&mut bob, "exit");
    wait_exit(&mut bob, Duration::from_secs(20));
    signal(&alice, "-CONT");
    let st = wait_exit(&mut alice, Duration::from_secs(20));
    assert_ne!(st.code(), Some(0));
    wait_until("closed", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
}
