//! Concurrency limits (PRODUCT.md §4, acceptance case S2): slots are taken atomically, freed when
//! a session ends, and a denial names its scope before any target account is touched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Rig, read, wait_until};

fn alice_with_limit(rig: &Rig, n: u32) {
    rig.apply(&format!(
        "kind: user\nname: alice@corp\ngroups: [dev]\nmaxSessionsPerUser: {n}\nsshKeys: [\"{}\"]\n",
        rig.public_key("alice")
    ));
}

fn denied_for(rig: &Rig, actor: &str) -> usize {
    rig.wgctl_json(&["audit", "list", "--kind", "session.denied"])["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == actor)
        .count()
}

#[test]
fn short_bursts_never_trip_the_limit_and_the_next_one_over_is_refused() {
    let rig = Rig::start();
    alice_with_limit(&rig, 5);
    // 300 short sessions at a parallelism equal to the limit.
    let ssh: Vec<String> = {
        let c = rig.ssh("alice", "alice@corp:dev1", &["true"]);
        std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect()
    };
    let mut xargs = Command::new("xargs")
        .args(["-P5", "-I{}"])
        .args(&ssh)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = xargs.stdin.take().unwrap();
        for i in 1..=300 {
            writeln!(stdin, "{i}").unwrap();
        }
    }
    let st = xargs.wait().unwrap();
    assert!(st.success(), "some of the 300 sessions failed");
    let last_exit = Instant::now();
    assert_eq!(denied_for(&rig, "alice@corp"), 0);
    wait_until("usage back to 0", Duration::from_secs(5), || {
        rig.wgctl_json(&["limits", "usage", "--actor", "alice@corp"])["usage"][0]["used"] == 0
    });
    assert!(
        last_exit.elapsed() < Duration::from_secs(1),
        "usage took {:?} to return to 0",
        last_exit.elapsed()
    );

    // Hold 5 sessions, then a 6th is refused with a structured error naming the actor scope.
    let logins_before = read(&rig.sshd_log).matches("Accepted publickey").count();
    let mut holds = Vec::new();
    for _ in 0..5 {
        holds.push(
            rig.ssh("alice", "alice@corp:dev1", &["sleep 60"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    wait_until("5 live sessions", Duration::from_secs(20), || {
        rig.wgctl_json(&["limits", "usage", "--actor", "alice@corp"])["usage"][0]["used"] == 5
    });
    let usage = rig.wgctl_ok(&["limits", "usage", "--actor", "alice@corp"]);
    assert!(
        usage
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["actor", "alice@corp", "5", "5"],
        "{usage}"
    );
    wait_until("5 target logins", Duration::from_secs(10), || {
        read(&rig.sshd_log).matches("Accepted publickey").count() >= logins_before + 5
    });
    let logins = read(&rig.sshd_log).matches("Accepted publickey").count();
    let connections = read(&rig.sshd_log).matches("Connection from").count();
    let out = rig
        .ssh("alice", "alice@corp:dev1", &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("concurrency_limit, scope=actor, limit=5"),
        "{err}"
    );
    let denied = rig.wgctl_json(&["audit", "list", "--kind", "session.denied"]);
    let last = denied["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["details"]["error"], "concurrency_limit");
    assert_eq!(last["details"]["scope"], "actor");
    assert_eq!(last["details"]["limit"], 5);
    assert_eq!(last["details"]["target"], "dev1");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read(&rig.sshd_log).matches("Accepted publickey").count(),
        logins,
        "no target login for the refused attempt"
    );
    assert_eq!(
        read(&rig.sshd_log).matches("Connection from").count(),
        connections,
        "no target connection for the refused attempt"
    );
    for mut h in holds {
        let _ = h.kill();
        let _ = h.wait();
    }
    wait_until("slots freed", Duration::from_secs(5), || {
        rig.wgctl_json(&["limits", "usage", "--actor", "alice@corp"])["usage"][0]["used"] == 0
    });
}

#[test]
fn target_and_policy_scopes_are_reported_distinctly() {
    let rig = Rig::start();
    rig.apply(&format!(
        "kind: target\nname: dev1-small\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\ntags: {{env: dev}}\n\
         maxSessionsPerTarget: 1\naccounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n\
         ---\nkind: target\nname: dev1-breakglass\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n\
         ---\nkind: policy\nname: breakglass\nsubjects: [user:alice@corp]\ntargets: {{names: [dev1-breakglass]}}\n\
         concurrency: {{max: 1}}\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
    for (target, scope) in [("dev1-small", "target"), ("dev1-breakglass", "policy")] {
        let mut hold = rig
            .ssh("alice", &format!("alice@corp:{target}"), &["sleep 60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the held session", Duration::from_secs(20), || {
            rig.wgctl_json(&["session", "list", "--target", target])["sessions"]
                .as_array()
                .is_some_and(|s| s.len() == 1 && s[0]["state"] == "active")
        });
        let out = rig
            .ssh("alice", &format!("alice@corp:{target}"), &["true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("concurrency_limit, scope={scope}, limit=1")),
            "{err}"
        );
        if scope == "target" {
            assert!(err.contains("target at capacity"), "{err}");
        }
        let _ = hold.kill();
        let _ = hold.wait();
        wait_until("slot freed", Duration::from_secs(5), || {
            rig.wgctl_json(&[
                "limits",
                "usage",
                &format!("--{scope}"),
                if scope == "target" {
                    target
                } else {
                    "breakglass"
                },
            ])["usage"][0]["used"]
                == 0
        });
    }
}

/// A session terminated while its access decision is still pending (here: waiting for a
/// concurrency slot, in `requested`) ends as a forced end: the client is told the operator and
/// the reason and exits 255, like any terminated session — not "access denied", exit 1.
#[test]
fn terminate_during_the_decision_tells_the_operator_and_reason() {
    let rig = Rig::start();
    alice_with_limit(&rig, 1);
    let mut hold = rig
        .ssh("alice", "alice@corp:dev1", &["sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the held session active", Duration::from_secs(30), || {
        rig.sessions().iter().any(|s| s["state"] == "active")
    });
    // The second attempt waits up to 1 s for alice's slot; the terminate has to land in that
    // second. On a loaded machine it may miss (the wait ends first: "already closed"), so the
    // attempt is repeated a few times.
    let mut tries = 0;
    let (id, done) = loop {
        tries += 1;
        assert!(tries <= 5, "never caught a session in `requested`");
        let attempt = rig
            .ssh("alice", "alice@corp:dev1", &["echo RAN"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut id = None;
        while id.is_none() && Instant::now() < deadline {
            id = rig
                .sessions()
                .into_iter()
                .find(|s| s["state"] == "requested")
                .and_then(|s| s["id"].as_str().map(str::to_owned));
        }
        let Some(id) = id else {
            let _ = attempt.wait_with_output();
            continue;
        };
        let out = rig.wgctl_ok(&["session", "terminate", &id, "--reason", "stop that"]);
        let done = attempt.wait_with_output().unwrap();
        if out.contains("already closed") {
            continue;
        }
        assert!(out.starts_with(&format!("terminated {id} at ")), "{out}");
        assert!(
            out.ends_with("recording  none (the session never started)\n"),
            "{out}"
        );
        break (id, done);
    };
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(255), "stderr {err:?}");
    assert!(done.stdout.is_empty(), "the command must not run");
    assert!(
        err.contains("wardengate: session terminated by admin@local: stop that"),
        "{err}"
    );
    assert!(!err.contains("access denied"), "{err}");
    let s = rig.session(&id);
    assert_eq!(s["state"], "closed");
    assert_eq!(s["end_reason"], "terminated");
    let kinds: Vec<String> = rig
        .audit(&id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!kinds.iter().any(|k| k == "session.denied"), "{kinds:?}");
    let _ = hold.kill();
    let _ = hold.wait();
}
