//! Reconnect modes (seed "Reconnect behavior", issue #4): the client's TCP connection is cut
//! (the ssh client is killed with SIGKILL, so the kernel closes its socket) and the same actor
//! connects again.
//! - resume: same session ID and `tty`, shell state kept, one recording holding both parts;
//!   after the grace the session closes as `reconnect_expired`.
//! - reauth: a new session; the old one is sealed and closed as `superseded`.
//! - strict: the session closes at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::Child;
use std::time::Duration;

use common::{Rig, flood_a_stopped_client, read, type_line, wait_exit, wait_output, wait_until};

/// A target reachable by alice under a policy with the given reconnect mode and grace.
fn target_with(rig: &Rig, name: &str, mode: &str, grace: &str) {
    rig.apply(&format!(
        "kind: target\nname: {name}\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n---\n\
         kind: policy\nname: {name}-policy\nsubjects: [user:alice@corp]\ntargets: {{names: [{name}]}}\n\
         recording: full\nreconnect: {{mode: {mode}, grace: {grace}}}\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
}

/// The `/dev/pts/N` that follows `label=` in the output.
fn tty_after(text: &str, label: &str) -> String {
    let at = text.rfind(&format!("{label}=/dev/pts/")).unwrap() + label.len() + 1;
    text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

fn cut(mut client: Child) {
    client.kill().unwrap();
    wait_exit(&mut client, Duration::from_secs(20));
}

/// Opens a shell as alice on `target`, waits for its prompt to answer, cuts the client, and
/// returns the session's ID once it is reported `detached`.
fn start_then_drop(rig: &Rig, target: &str) -> String {
    let out = rig.path(&format!("{target}.out"));
    let mut c = rig.shell("alice", &format!("alice@corp:{target}"), &out);
    let id = rig.wait_one_session();
    type_line(&mut c, "echo READY$((1+1))");
    wait_output(&out, "READY2");
    cut(c);
    id
}

fn wait_detached(rig: &Rig, id: &str) {
    wait_until("detached", Duration::from_secs(5), || {
        rig.session(id)["state"] == "detached"
    });
}

fn kinds(rig: &Rig, id: &str) -> Vec<String> {
    rig.audit(id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn resume_reattaches_the_same_session_and_pty() {
    let rig = Rig::start();
    target_with(&rig, "dev1-resume", "resume", "20s");
    let out1 = rig.path("part1.out");
    let mut c1 = rig.shell("alice", "alice@corp:dev1-resume", &out1);
    let id = rig.wait_one_session();
    type_line(
        &mut c1,
        "export WG_X=kept; cd /tmp; echo T1=$(tty) PART=$((10+1))",
    );
    let text = wait_output(&out1, "PART=11");
    let tty1 = tty_after(&text, "T1");
    cut(c1);
    wait_detached(&rig, &id);
    // While detached the target leg and the shell stay up.
    assert_eq!(rig.target_connections(), 1);
    let list = rig.wgctl_ok(&["session", "list", "--state", "detached"]);
    assert!(list.contains(&id), "{list}");
    let show = rig.wgctl_ok(&["session", "show", &id]);
    assert!(show.contains("detached"), "{show}");

    let out2 = rig.path("part2.out");
    let mut c2 = rig.shell("alice", "alice@corp:dev1-resume", &out2);
    wait_until("active again", Duration::from_secs(10), || {
        rig.session(&id)["state"] == "active"
    });
    type_line(&mut c2, "echo T2=$(tty) X=$WG_X PWD=$PWD PART=$((20+2))");
    let text = wait_output(&out2, "PART=22");
    assert_eq!(tty_after(&text, "T2"), tty1, "same PTY");
    assert!(text.contains("X=kept PWD=/tmp PART=22"), "{text}");
    // Still one session, the same one.
    let live = rig.sessions();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["id"], id.as_str());

    type_line(&mut c2, "exit 3");
    let st = wait_exit(&mut c2, Duration::from_secs(20));
    assert_eq!(st.code(), Some(3));
    wait_until("closed", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
    assert_eq!(rig.session(&id)["end_reason"], "client_exit");
    let k = kinds(&rig, &id);
    for kind in ["session.detached", "session.resumed", "recording.sealed"] {
        assert!(k.iter().any(|x| x == kind), "{kind} missing from {k:?}");
    }
    // One recording holds both parts, and it verifies.
    let cast = rig.recording_stream(&id);
    assert!(
        cast.contains("PART=11") && cast.contains("PART=22"),
        "{cast}"
    );
    assert!(cast.contains("detached"), "detach marker");
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
}

#[test]
fn resume_expires_after_the_grace() {
    let rig = Rig::start();
    target_with(&rig, "dev1-expire", "resume", "2s");
    let id = start_then_drop(&rig, "dev1-expire");
    wait_detached(&rig, &id);
    wait_until("closed after the grace", Duration::from_secs(8), || {
        rig.session(&id)["state"] == "closed"
    });
    assert_eq!(rig.session(&id)["end_reason"], "reconnect_expired");
    wait_until("target leg gone", Duration::from_secs(5), || {
        rig.target_connections() == 0
    });
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
    // Coming back later opens a new session.
    let out2 = rig.path("c2.out");
    let mut c2 = rig.shell("alice", "alice@corp:dev1-expire", &out2);
    let id2 = rig.wait_one_session();
    assert_ne!(id2, id);
    type_line(&mut c2, "exit");
    wait_exit(&mut c2, Duration::from_secs(20));
}

#[test]
fn a_terminated_detached_session_cannot_be_resumed() {
    let rig = Rig::start();
    target_with(&rig, "dev1-term", "resume", "30s");
    let id = start_then_drop(&rig, "dev1-term");
    wait_detached(&rig, &id);
    let t = rig.wgctl_ok(&["session", "terminate", &id, "--reason", "left detached"]);
    assert!(t.contains("recording  sealed"), "{t}");
    assert_eq!(rig.session(&id)["end_reason"], "terminated");
    let out2 = rig.path("c2.out");
    let mut c2 = rig.shell("alice", "alice@corp:dev1-term", &out2);
    let id2 = rig.wait_one_session();
    assert_ne!(id2, id, "a terminated session is never resumed");
    type_line(&mut c2, "exit");
    wait_exit(&mut c2, Duration::from_secs(20));
}

#[test]
fn reauth_opens_a_new_session_and_supersedes_the_old() {
    let rig = Rig::start();
    target_with(&rig, "dev1-reauth", "reauth", "30s");
    let old = start_then_drop(&rig, "dev1-reauth");
    wait_detached(&rig, &old);
    let out2 = rig.path("c2.out");
    let mut c2 = rig.shell("alice", "alice@corp:dev1-reauth", &out2);
    let new = rig.wait_one_session();
    assert_ne!(new, old, "reauth opens a new session");
    let old_view = rig.session(&old);
    assert_eq!(old_view["state"], "closed");
    assert_eq!(old_view["end_reason"], "superseded");
    assert!(kinds(&rig, &old).iter().any(|k| k == "recording.sealed"));
    assert!(
        rig.wgctl_ok(&["recording", "verify", &old])
            .contains(" OK ")
    );
    type_line(&mut c2, "exit");
    wait_exit(&mut c2, Duration::from_secs(20));
}

#[test]
fn strict_closes_at_once_when_the_client_drops() {
    let rig = Rig::start();
    target_with(&rig, "dev1-strict", "strict", "30s");
    let id = start_then_drop(&rig, "dev1-strict");
    wait_until("closed at once", Duration::from_secs(3), || {
        rig.session(&id)["state"] == "closed"
    });
    assert!(!kinds(&rig, &id).iter().any(|k| k == "session.detached"));
    wait_until("target leg gone", Duration::from_secs(3), || {
        rig.target_connections() == 0
    });
}

#[test]
fn the_owner_takes_over_a_stuck_session_by_its_id() {
    let rig = Rig::start();
    target_with(&rig, "dev1-take", "resume", "30s");
    let out1 = rig.path("old.out");
    let mut c1 = rig.shell("alice", "alice@corp:dev1-take", &out1);
    let id = rig.wait_one_session();
    type_line(&mut c1, "export WG_Y=still; echo T1=$(tty) N=$((5+5))");
    let text = wait_output(&out1, "N=10");
    let tty1 = tty_after(&text, "T1");
    // A plain second login is a second session, never a hijack of the first...
    let other = rig
        .ssh("alice", "alice@corp:dev1-take", &["echo second"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout), "second\n");
    // ...while naming the session takes it over.
    let out2 = rig.path("new.out");
    let mut c2 = rig.shell("alice", &format!("alice@corp:{id}"), &out2);
    type_line(&mut c2, "echo T2=$(tty) Y=$WG_Y N=$((6+6))");
    let text = wait_output(&out2, "N=12");
    assert_eq!(tty_after(&text, "T2"), tty1);
    assert!(text.contains("Y=still"), "{text}");
    let st = wait_exit(&mut c1, Duration::from_secs(20));
    assert_ne!(st.code(), Some(0));
    assert!(read(&out1.with_extension("err")).contains("attached to this session"));
    type_line(&mut c2, "exit");
    assert_eq!(wait_exit(&mut c2, Duration::from_secs(20)).code(), Some(0));
    wait_until("closed", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
}

/// While a session is detached, a command, sftp or scp by the same actor is a new session beside
/// it: it is neither pulled into the detached shell nor breaks it (review finding H1), and the
/// terminal closing (its EOF) does not cut the resumed shell's input (H2).
#[test]
fn commands_beside_a_detached_session_are_new_sessions() {
    let rig = Rig::start();
    target_with(&rig, "dev1-side", "resume", "30s");
    let out1 = rig.path("c1.out");
    let mut c1 = rig.shell("alice", "alice@corp:dev1-side", &out1);
    let id = rig.wait_one_session();
    type_line(&mut c1, "export WG_S=side; echo R=$((7+7))");
    wait_output(&out1, "R=14");
    // The client's stdin closes first (EOF on the channel), then it dies.
    drop(c1.stdin.take());
    std::thread::sleep(Duration::from_millis(300));
    cut(c1);
    wait_detached(&rig, &id);
    let exec = rig
        .ssh("alice", "alice@corp:dev1-side", &["echo exec-ran"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "exec-ran\n");
    assert_eq!(exec.status.code(), Some(0));
    assert_eq!(rig.session(&id)["state"], "detached");
    // Attaching by ID needs a terminal.
    let no_tty = rig
        .ssh("alice", &format!("alice@corp:{id}"), &["true"])
        .output()
        .unwrap();
    assert_ne!(no_tty.status.code(), Some(0));
    assert_eq!(rig.session(&id)["state"], "detached");
    // The shell still takes input after the resume.
    let out2 = rig.path("c2.out");
    let mut c2 = rig.shell("alice", "alice@corp:dev1-side", &out2);
    type_line(&mut c2, "echo S=$WG_S:$((8+8))");
    wait_output(&out2, "S=side:16");
    type_line(&mut c2, "exit");
    assert_eq!(wait_exit(&mut c2, Duration::from_secs(20)).code(), Some(0));
}

/// A client that stops reading under a flood of output and then dies (review, 2026-11-30): the
/// write to it waits for window that never opens, holding the console's leg lock. The session
/// must still detach at once, resume, keep in its recording what no client got, and close.
/// Before the fix it stayed `active`, a new login got a new session, and a termination never
/// completed.
#[test]
fn a_client_that_stalled_then_died_still_detaches_and_resumes() {
    let rig = Rig::start();
    target_with(&rig, "dev1-stall", "resume", "60s");
    let out1 = rig.path("stall1.out");
    let mut c1 = rig.shell("alice", "alice@corp:dev1-stall", &out1);
    let id = rig.wait_one_session();
    type_line(&mut c1, "echo READY$((1+1))");
    wait_output(&out1, "READY2");
    flood_a_stopped_client(&mut c1, 2_000_000, "FLOOD$((2+2))");
    cut(c1);
    wait_detached(&rig, &id);

    let out2 = rig.path("stall2.out");
    let mut c2 = rig.shell("alice", "alice@corp:dev1-stall", &out2);
    wait_until("active again", Duration::from_secs(10), || {
        rig.session(&id)["state"] == "active"
    });
    type_line(&mut c2, "echo BACK=$((40+2))");
    wait_output(&out2, "BACK=42");
    assert_eq!(rig.sessions().len(), 1, "the same session, not a new one");
    type_line(&mut c2, "exit 5");
    assert_eq!(wait_exit(&mut c2, Duration::from_secs(20)).code(), Some(5));
    wait_until("closed", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
    // The flood's end came while no client was attached: it is in the recording.
    let cast = rig.recording_stream(&id);
    assert!(
        cast.contains("FLOOD4") && cast.contains("BACK=42"),
        "tail of the recording: {}",
        &cast[cast.len().saturating_sub(2000)..]
    );
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
}
