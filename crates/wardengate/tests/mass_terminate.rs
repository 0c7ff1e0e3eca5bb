//! Mass termination (seed "Force-terminating a session", acceptance case S5): a selector
//! terminates exactly the matching sessions, each sealed, each with its own audit event carrying
//! the reason and a shared bulk-operation ID.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Rig, wait_until};

fn open(rig: &Rig, key: &str, login: &str, n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            rig.ssh(key, login, &["sleep 600"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn live(rig: &Rig) -> Vec<serde_json::Value> {
    rig.sessions()
        .into_iter()
        .filter(|s| s["state"] == "active")
        .collect()
}

fn ids_where(rig: &Rig, f: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<String> {
    live(rig)
        .into_iter()
        .filter(|s| f(s))
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn mass_termination_matches_exactly() {
    let rig = Rig::start();
    rig.apply(&format!(
        "kind: target\nname: prod1\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\ntags: {{env: prod}}\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n---\n\
         kind: policy\nname: prod-ssh\nsubjects: [user:alice@corp]\ntargets: {{tags: {{env: prod}}}}\n\
         protocols: [ssh]\nrecording: full\n---\n\
         kind: policy\nname: bob-dev\nsubjects: [user:bob@corp]\ntargets: {{names: [dev1]}}\nrecording: full\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
    let mut clients = Vec::new();
    clients.extend(open(&rig, "alice", "alice@corp:dev1", 5));
    clients.extend(open(&rig, "alice", "alice@corp:prod1", 5));
    clients.extend(open(&rig, "bob", "bob@corp:dev1", 5));
    wait_until("15 live sessions", Duration::from_secs(30), || {
        live(&rig).len() == 15
    });
    let alices = ids_where(&rig, |s| s["actor"] == "alice@corp");
    let bobs = ids_where(&rig, |s| s["actor"] == "bob@corp");
    assert_eq!((alices.len(), bobs.len()), (10, 5));

    // Without a selector or a reason: refused, nothing happens.
    assert_eq!(
        rig.wgctl(&["session", "terminate", "--reason", "r0"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        rig.wgctl(&["session", "terminate", "--actor", "alice@corp"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(live(&rig).len(), 15);

    let out = rig.wgctl_ok(&[
        "session",
        "terminate",
        "--actor",
        "alice@corp",
        "--reason",
        "r1",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11, "{out}");
    let terminated: BTreeSet<String> = lines[..10]
        .iter()
        .map(|l| {
            assert!(l.contains("recording  sealed (chunks="), "{l}");
            l.split_whitespace().nth(1).unwrap().to_owned()
        })
        .collect();
    assert_eq!(terminated, alices);
    assert!(
        lines[10].starts_with("10 sessions terminated (bulk operation bulk_"),
        "{}",
        lines[10]
    );
    let bulk = lines[10]
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    wait_until("only bob's sessions left", Duration::from_secs(5), || {
        ids_where(&rig, |_| true) == bobs
    });
    for id in &alices {
        let events = rig.audit(id);
        let ev = events
            .iter()
            .find(|e| e["kind"] == "session.terminated")
            .unwrap();
        assert_eq!(ev["reason"], "r1");
        assert_eq!(ev["details"]["bulk_operation"], bulk.as_str());
        // Closed once (in a batch with others), with its seal; never twice.
        let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
        assert_eq!(count("session.terminated"), 1, "{id}: {events:?}");
        assert_eq!(count("session.closed"), 1, "{id}: {events:?}");
        assert_eq!(count("recording.sealed"), 1, "{id}: {events:?}");
        let closed = events
            .iter()
            .find(|e| e["kind"] == "session.closed")
            .unwrap();
        assert_eq!(closed["details"]["end_reason"], "terminated", "{closed}");
        assert!(rig.wgctl_ok(&["recording", "verify", id]).contains(" OK "));
    }

    // Reopen alice's sessions; a tag selector takes exactly the prod ones.
    clients.extend(open(&rig, "alice", "alice@corp:dev1", 5));
    clients.extend(open(&rig, "alice", "alice@corp:prod1", 5));
    wait_until("15 live sessions again", Duration::from_secs(30), || {
        live(&rig).len() == 15
    });
    let prod = ids_where(&rig, |s| s["target"] == "prod1");
    let rest = ids_where(&rig, |s| s["target"] != "prod1");
    // prod1 loses the tag while its sessions run: they were started as env=prod sessions and
    // the selector still takes them (the tags are kept on each session).
    rig.apply(&format!(
        "kind: target\nname: prod1\naddress: \"127.0.0.1:{port}\"\nprotocol: ssh\ntags: {{env: retired}}\n\
         accounts: [{{name: root, credential: vault/ssh/dev1}}]\nhostKey: \"{key}\"\n",
        port = rig.sshd_port,
        key = rig.public_key("sshd_host"),
    ));
    let out = rig.wgctl_ok(&[
        "session",
        "terminate",
        "--target-tag",
        "env=prod",
        "--protocol",
        "ssh",
        "--reason",
        "maintenance window",
    ]);
    assert!(out.contains("5 sessions terminated"), "{out}");
    wait_until(
        "only non-prod sessions left",
        Duration::from_secs(5),
        || ids_where(&rig, |_| true) == rest,
    );
    assert_eq!(prod.len(), 5);

    // Two operators terminate the same ten sessions at once: each session is terminated once,
    // by one of them, with one event; the other is told which matching sessions it did not get.
    assert_eq!(rest.len(), 10);
    let both: Vec<_> = ["first", "second"]
        .iter()
        .map(|r| {
            rig.wgctl_cmd(&["session", "terminate", "--target", "dev1", "--reason", r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut counted = 0;
    for c in both {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary = text
            .lines()
            .find(|l| l.contains(" terminated (bulk operation "))
            .unwrap_or_else(|| panic!("{text}"));
        let n: usize = summary.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("terminated "))
                .count(),
            n
        );
        if let Some(other) = text.lines().find(|l| l.contains("had already ended")) {
            let m: usize = other.split(' ').next().unwrap().parse().unwrap();
            assert!(n + m <= 10, "{text}");
        }
        counted += n;
    }
    assert_eq!(
        counted, 10,
        "each session is terminated by exactly one operator"
    );
    for id in &rest {
        let events = rig.audit(id);
        let terminated = events
            .iter()
            .filter(|e| e["kind"] == "session.terminated")
            .count();
        assert_eq!(terminated, 1, "{id}: {events:?}");
    }
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
}
