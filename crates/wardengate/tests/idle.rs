//! Idle disconnect (seed "Idle disconnect mechanics", acceptance case S1): keepalives and target
//! output are not activity; the user is warned, then severed after the grace; a keystroke within
//! the grace cancels. Timings scaled down: timeout 3 s, grace 2 s.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Rig, read, wait_until};

fn idle_target(rig: &Rig) {
    rig.apply(&format!(
        "kind: target\nname: dev1-idle\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n---\n\
         kind: policy\nname: idle-short\nsubjects: [user:alice@corp]\ntargets: {{names: [dev1-idle]}}\n\
         recording: full\nidle: {{timeout: 3s, grace: 2s}}\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
}

fn warnings(rig: &Rig, id: &str) -> usize {
    rig.audit(id)
        .iter()
        .filter(|e| e["kind"] == "session.idle_warning")
        .count()
}

#[test]
fn keepalives_and_output_are_not_activity() {
    let rig = Rig::start();
    idle_target(&rig);
    let err_file = rig.path("client.err");
    let start = Instant::now();
    let mut client = rig
        .ssh(
            "alice",
            "alice@corp:dev1-idle",
            &[
                "-tt",
                "-o",
                "ServerAliveInterval=1",
                "while :; do echo tick; sleep 1; done",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    wait_until("the idle warning", Duration::from_secs(8), || {
        warnings(&rig, &id) == 1
    });
    let warned = start.elapsed();
    assert!(
        warned >= Duration::from_millis(2500),
        "warned too early: {warned:?}"
    );
    assert_eq!(rig.session(&id)["state"], "idle");
    let warning = rig
        .audit(&id)
        .into_iter()
        .find(|e| e["kind"] == "session.idle_warning")
        .unwrap();
    assert_eq!(warning["details"]["idle_timeout"], "3s");
    assert_eq!(warning["details"]["idle_grace"], "2s");
    let status = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(12), "not severed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let severed = start.elapsed();
    assert!(
        severed >= Duration::from_millis(4500),
        "severed too early: {severed:?}"
    );
    assert_eq!(status.code(), Some(255));
    let err = read(&err_file);
    assert!(
        err.contains("wardengate: this session has been idle for 3s"),
        "{err}"
    );
    assert!(err.contains("idle_timeout"), "{err}");
    wait_until("closed", Duration::from_secs(5), || {
        rig.session(&id)["state"] == "closed"
    });
    assert_eq!(rig.session(&id)["end_reason"], "idle_timeout");
    assert!(!rig.wgctl_ok(&["session", "list"]).contains(&id));
    assert!(rig.wgctl_ok(&["recording", "verify", &id]).contains(" OK "));
}

#[test]
fn a_keystroke_within_the_grace_cancels_the_sever() {
    let rig = Rig::start();
    idle_target(&rig);
    let start = Instant::now();
    let mut client = rig
        .ssh("alice", "alice@corp:dev1-idle", &["-tt", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = rig.wait_one_session();
    wait_until("the idle warning", Duration::from_secs(8), || {
        warnings(&rig, &id) == 1
    });
    // A keystroke inside the grace.
    client.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    let typed = Instant::now();
    wait_until("back to active", Duration::from_secs(3), || {
        rig.session(&id)["state"] == "active"
    });
    // Past the original sever time the session is still alive.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        client.try_wait().unwrap().is_none(),
        "severed despite the keystroke"
    );
    // The next warning comes about a timeout after the keystroke, then the sever.
    wait_until("the second warning", Duration::from_secs(8), || {
        warnings(&rig, &id) == 2
    });
    assert!(typed.elapsed() >= Duration::from_millis(2500));
    let st = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(25), "not severed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.code(), Some(255));
}

#[test]
fn a_transfer_longer_than_the_timeout_is_never_cut() {
    let rig = Rig::start();
    idle_target(&rig);
    let src = rig.path("slow.bin");
    std::fs::write(&src, vec![b'w'; 5_000_000]).unwrap();
    let remote = rig.path("slow-remote.bin");
    let back = rig.path("slow-back.bin");
    let start = Instant::now();
    // 8000 kbit/s: about 5 s each way, longer than timeout + grace.
    let out = rig.sftp_round_trip(
        "alice",
        "alice@corp:dev1-idle",
        &src,
        &remote,
        &back,
        &["-l", "8000"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() > Duration::from_secs(6),
        "the transfer was too fast to prove anything"
    );
    assert_eq!(std::fs::read(&back).unwrap().len(), 5_000_000);
    wait_until(
        "the session closed by the client",
        Duration::from_secs(5),
        || {
            let closed = rig.wgctl_json(&[
                "session",
                "list",
                "--state",
                "closed",
                "--target",
                "dev1-idle",
            ]);
            closed["sessions"][0]["end_reason"] == "client_exit"
        },
    );
}

#[test]
fn a_job_without_a_terminal_producing_output_is_not_idle() {
    // A download or long job: the client sends nothing, the target streams output.
    let rig = Rig::start();
    idle_target(&rig);
    let out = rig
        .ssh(
            "alice",
            "alice@corp:dev1-idle",
            &["for i in 1 2 3 4 5 6 7 8; do echo tick; sleep 1; done"],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches("tick").count(),
        8
    );
}
