//! Standalone processes (issue #3): `wardengate control` and two `wardengate gateway`s joined
//! with one-time tokens, in front of the rig's real sshd, driven with the real ssh and wgctl.
//! Covered: join tokens are single-use; sessions on both gateways are listed with the right GW;
//! `kill -9` of a gateway → its sessions closed as `gateway_lost` within the lease, a
//! `gateway.lost` event, and its concurrency slots freed (the actor connects again at once through
//! the other gateway). Mutual TLS: gateways talk to the control plane over `https://` with the
//! certificate its CA issued them at join; a gateway whose certificate comes from another control
//! plane's CA is refused; `wgctl gateway remove` gets a gateway's certificate refused; a gateway
//! refuses to join a control plane whose CA does not match the join token's pin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Rig, free_port, read, signal, type_line, wait_exit, wait_output, wait_until};

/// A `wardengate control` process on a SQLite store in the rig's directory.
struct Control {
    child: Child,
    api: String,
    grpc: String,
    token: String,
    recordings: PathBuf,
    log: PathBuf,
    config: PathBuf,
    ports: (u16, u16),
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control(rig: &Rig) -> Control {
    let dir = rig.path("cp");
    let store = format!("sqlite://{}/wardengate.db", dir.display());
    start_replica(rig, "cp", &store, None)
}

/// A control-plane replica named `name` on `store`; `token` is the admin token when another
/// replica bootstrapped the store already.
fn start_replica(rig: &Rig, name: &str, store: &str, token: Option<&str>) -> Control {
    start_replica_leased(rig, name, store, token, "3s")
}

/// [`start_replica`] with the given `gatewayLease`.
fn start_replica_leased(
    rig: &Rig,
    name: &str,
    store: &str,
    token: Option<&str>,
    lease: &str,
) -> Control {
    let dir = rig.path(name);
    let recordings = rig.path("shared-recordings");
    let api_port = free_port();
    let grpc_port = free_port();
    let config = rig.path(&format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "store: {store}\ndataDir: {dir}\nrecordingsDir: {rec}\n\
             apiAddr: 127.0.0.1:{api_port}\ngrpcAddr: 127.0.0.1:{grpc_port}\ngatewayLease: {lease}\n",
            dir = dir.display(),
            rec = recordings.display(),
        ),
    )
    .unwrap();
    let log = rig.path(&format!("{name}.log"));
    let child = spawn_replica(&config, &log);
    wait_until(
        &format!("control replica {name}"),
        Duration::from_secs(30),
        || {
            (token.is_some() || dir.join("admin.token").exists())
                && std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", grpc_port)).is_ok()
        },
    );
    Control {
        child,
        api: format!("http://127.0.0.1:{api_port}"),
        grpc: format!("https://127.0.0.1:{grpc_port}"),
        token: token.map_or_else(
            || read(&dir.join("admin.token")).trim().to_owned(),
            str::to_owned,
        ),
        recordings,
        log,
        config,
        ports: (api_port, grpc_port),
    }
}

fn spawn_replica(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wardengate"))
        .args(["control", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

impl Control {
    /// Starts the replica again (same configuration, addresses and log) after it was killed.
    fn restart(&mut self) {
        let _ = self.child.wait();
        self.child = spawn_replica(&self.config, &self.log);
        let (api, grpc) = self.ports;
        wait_until("the control plane back", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok()
        });
    }

    fn wgctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_wgctl"))
            .args(args)
            .env("WGCTL_ADDR", &self.api)
            .env("WGCTL_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn wgctl_ok(&self, args: &[&str]) -> String {
        let out = self.wgctl(args);
        assert!(
            out.status.success(),
            "wgctl {args:?}: {}\ncontrol log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read(&self.log)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.wgctl_ok(&a)).unwrap()
    }

    fn gateway_state(&self, name: &str) -> String {
        self.json(&["gateway", "list"])["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// A `wardengate gateway` process.
struct Gateway {
    child: Child,
    ssh_port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_config(rig: &Rig, cp: &Control, name: &str, join_token: &str) -> (PathBuf, u16) {
    gateway_config_for(rig, &[cp], name, join_token)
}

fn gateway_config_for(
    rig: &Rig,
    replicas: &[&Control],
    name: &str,
    join_token: &str,
) -> (PathBuf, u16) {
    let cp = replicas[0];
    let urls: Vec<String> = replicas.iter().map(|c| format!("\"{}\"", c.grpc)).collect();
    let dir = rig.path(name);
    let port = free_port();
    let config = rig.path(&format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "controlUrls: [{urls}]\ndataDir: {dir}\nrecordingsDir: {rec}\njoinToken: \"{join_token}\"\n\
             sshAddr: 127.0.0.1:{port}\nheartbeatInterval: 1s\n",
            urls = urls.join(", "),
            dir = dir.display(),
            rec = cp.recordings.display(),
        ),
    )
    .unwrap();
    (config, port)
}

fn spawn_gateway(rig: &Rig, config: &Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wardengate"))
        .args(["gateway", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(rig.path(&format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap()
}

fn start_gateway(rig: &Rig, cp: &Control, name: &str, join_token: &str) -> Gateway {
    start_gateway_for(rig, &[cp], name, join_token)
}

fn start_gateway_for(rig: &Rig, replicas: &[&Control], name: &str, join_token: &str) -> Gateway {
    let (config, ssh_port) = gateway_config_for(rig, replicas, name, join_token);
    let child = spawn_gateway(rig, &config, name);
    let log = rig.path(&format!("{name}.log"));
    wait_until(
        &format!("gateway {name} to listen"),
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_ok(),
    );
    Gateway {
        child,
        ssh_port,
        dir: rig.path(name),
        log,
    }
}

/// `ssh` through gateway `gw` as alice.
fn ssh_via(rig: &Rig, gw: &Gateway, args: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.args(rig.ssh_opts("alice"))
        .args(["-o", "ConnectTimeout=10", "-p", &gw.ssh_port.to_string()])
        .arg("alice@corp:dev1@127.0.0.1")
        .args(args);
    c
}

/// An `ssh` through `gw` running `args`, its stdin held open (the session lives until the
/// child is killed or the gateway ends it) and its output discarded.
fn held_ssh(rig: &Rig, gw: &Gateway, args: &[&str]) -> std::process::Child {
    ssh_via(rig, gw, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn join_token(cp: &Control) -> String {
    cp.wgctl_ok(&["gateway", "token", "create", "--pool", "us", "--ttl", "10m"])
        .trim()
        .to_owned()
}

#[test]
fn gateways_join_once_and_a_lost_gateway_frees_its_sessions() {
    let rig = Rig::start();
    let cp = start_control(&rig);
    // Resources on the standalone control plane: the rig's fixture, alice limited to one
    // session at a time, the target credential.
    let fixture = rig.path("cluster-fixture.yaml");
    std::fs::write(&fixture, rig.fixture_yaml()).unwrap();
    cp.wgctl_ok(&["apply", "-f", fixture.to_str().unwrap()]);
    std::fs::write(
        &fixture,
        format!(
            "kind: user\nname: alice@corp\ngroups: [dev]\nsshKeys: [\"{}\"]\nmaxSessionsPerUser: 1\n",
            rig.public_key("alice")
        ),
    )
    .unwrap();
    cp.wgctl_ok(&["apply", "-f", fixture.to_str().unwrap()]);
    cp.wgctl_ok(&[
        "vault",
        "put",
        "vault/ssh/dev1",
        "--private-key-file",
        rig.path("target_account").to_str().unwrap(),
    ]);

    // Two gateways join with one token each; reusing a token is refused.
    let t1 = join_token(&cp);
    let t2 = join_token(&cp);
    let mut a = start_gateway(&rig, &cp, "gwa", &t1);
    let b = start_gateway(&rig, &cp, "gwb", &t2);
    let (config, _) = gateway_config(&rig, &cp, "gwc", &t1);
    let mut c = spawn_gateway(&rig, &config, "gwc");
    let st = c.wait().unwrap();
    assert!(!st.success());
    assert!(
        read(&rig.path("gwc.log")).contains("used already"),
        "{}",
        read(&rig.path("gwc.log"))
    );
    // A second process on gateway A's data directory is refused (it would take A's identity).
    let mut twin = spawn_gateway(&rig, &rig.path("gwa.yaml"), "gwa-twin");
    assert!(!wait_exit(&mut twin, Duration::from_secs(10)).success());
    let twin_log = read(&rig.path("gwa-twin.log"));
    assert!(twin_log.contains("already running"), "{twin_log}");
    wait_until("both gateways live", Duration::from_secs(10), || {
        cp.gateway_state("gw-us-1") == "live" && cp.gateway_state("gw-us-2") == "live"
    });
    let tokens = cp.wgctl_ok(&["gateway", "token", "list"]);
    assert_eq!(tokens.matches(" used ").count(), 2, "{tokens}");
    // An unused token can be revoked: a gateway presenting it is refused. A used one cannot
    // (the answer points at `gateway remove`).
    let t3 = join_token(&cp);
    let ids = |state: &str| -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_str(&cp.wgctl_ok(&["gateway", "token", "list", "-o", "json"]))
                .unwrap();
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == state)
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let unused = ids("unused");
    assert_eq!(unused.len(), 1, "{unused:?}");
    let out = cp.wgctl_ok(&["gateway", "token", "revoke", &unused[0]]);
    assert!(
        out.contains("revoked: a gateway presenting it is refused"),
        "{out}"
    );
    assert_eq!(ids("revoked"), unused);
    let (config, _) = gateway_config(&rig, &cp, "gwd", &t3);
    let mut d = spawn_gateway(&rig, &config, "gwd");
    assert!(!wait_exit(&mut d, Duration::from_secs(20)).success());
    assert!(
        read(&rig.path("gwd.log")).contains("the token was revoked"),
        "{}",
        read(&rig.path("gwd.log"))
    );
    // The token itself names it too (hashed by wgctl: the secret is not sent).
    let t4 = join_token(&cp);
    let out = cp.wgctl_ok(&["gateway", "token", "revoke", &t4]);
    assert!(
        out.contains("revoked: a gateway presenting it is refused"),
        "{out}"
    );
    assert_eq!(ids("revoked").len(), 2);
    assert!(!read(&cp.log).contains(t4.split('.').next().unwrap()));
    let used = cp.wgctl(&["gateway", "token", "revoke", &ids("used")[0]]);
    assert_eq!(used.status.code(), Some(1));
    let err = String::from_utf8_lossy(&used.stderr);
    assert!(err.contains("wgctl gateway remove gw-us-"), "{err}");
    let list = cp.wgctl_ok(&["gateway", "list"]);
    assert!(
        list.contains("gw-us-1") && list.contains("gw-us-2"),
        "{list}"
    );
    // Each joined gateway's certificate expiry is visible (a year from now).
    let json: serde_json::Value =
        serde_json::from_str(&cp.wgctl_ok(&["gateway", "list", "-o", "json"])).unwrap();
    for g in json["gateways"].as_array().unwrap() {
        let expires = g["certificate_expires_at"].as_str().unwrap_or_default();
        assert!(expires.starts_with("202"), "{g}");
    }

    // A session through gateway A, listed with GW gw-us-1.
    let mut held = ssh_via(&rig, &a, &["sleep 300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    wait_until("the session on gw-us-1", Duration::from_secs(15), || {
        let s = cp.json(&["session", "list"]);
        match s["sessions"].as_array().unwrap().first() {
            Some(s) if s["state"] == "active" => {
                id = s["id"].as_str().unwrap().to_owned();
                s["gateway"] == "gw-us-1"
            }
            _ => false,
        }
    });
    // At alice's limit: a second session through B is refused.
    let refused = ssh_via(&rig, &b, &["true"]).output().unwrap();
    assert_ne!(refused.status.code(), Some(0));

    // kill -9 gateway A: within the lease (3 s, swept every second) its session is closed as
    // gateway_lost and the slot is free.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    wait_until("gateway_lost", Duration::from_secs(10), || {
        cp.json(&["session", "show", &id])["state"] == "closed"
    });
    let lost_after = killed.elapsed();
    assert!(lost_after < Duration::from_secs(8), "{lost_after:?}");
    let view = cp.json(&["session", "show", &id]);
    assert_eq!(view["end_reason"], "gateway_lost");
    assert_eq!(cp.gateway_state("gw-us-1"), "lost");
    let events = cp.json(&["audit", "list", "--kind", "gateway.lost"]);
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    let again = ssh_via(&rig, &b, &["echo through-b"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "through-b\n",
        "{}\n{}",
        String::from_utf8_lossy(&again.stderr),
        read(&b.log)
    );
    let _ = held.kill();
    let _ = held.wait();
    // Gateway A never comes back: its recording stays unsealed until the operator removes it,
    // which seals what reached the disk as partial.
    assert!(
        cp.json(&["session", "show", &id])["recording"]["sha256"].is_null(),
        "a lost gateway's recording is not sealed behind its back"
    );
    cp.wgctl_ok(&["gateway", "remove", "gw-us-1"]);
    let view = cp.json(&["session", "show", &id]);
    assert_eq!(view["recording"]["status"], "partial", "{view}");
    let verify = cp.wgctl_ok(&["recording", "verify", &id]);
    assert!(verify.contains(" OK "), "{verify}");

    // A gateway whose certificate comes from another control plane's CA gets nothing from this
    // one: it joins another control plane, then is pointed at this one (trusting this CA).
    let other = start_replica(
        &rig,
        "cp-other",
        &format!("sqlite://{}/wardengate.db", rig.path("cp-other").display()),
        None,
    );
    let elsewhere = start_gateway(&rig, &other, "gwx", &join_token(&other));
    drop(elsewhere);
    std::fs::copy(b.dir.join("ca.crt"), rig.path("gwx").join("ca.crt")).unwrap();
    let forged = start_gateway(&rig, &cp, "gwx", "");
    let out = ssh_via(&rig, &forged, &["true"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    wait_until(
        "the foreign certificate refused",
        Duration::from_secs(10),
        || {
            read(&forged.log).contains(
                "client certificate refused: it was not issued by this control plane's CA",
            )
        },
    );
    assert_eq!(
        cp.json(&["gateway", "list"])["gateways"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A join token whose CA pin is not this control plane's: the gateway refuses the control
    // plane before sending the token, which stays unused.
    let genuine = join_token(&cp);
    let (secret, pin) = genuine.split_once('.').unwrap();
    let other_pin = other.json(&["gateway", "token", "create", "--pool", "us"])["ca_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(pin, other_pin);
    let (config, _) = gateway_config(&rig, &cp, "gwp", &format!("{secret}.{other_pin}"));
    let mut pinned = spawn_gateway(&rig, &config, "gwp");
    assert!(!pinned.wait().unwrap().success());
    let log = read(&rig.path("gwp.log"));
    assert!(log.contains("does not match the join token's pin"), "{log}");
    assert!(!rig.path("gwp").join("identity.json").exists());
    let tokens = cp.json(&["gateway", "token", "list"]);
    let unused = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "unused")
        .count();
    assert_eq!(unused, 1, "{tokens}");

    // The identity a gateway keeps: its private key is 0600 and never left it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(b.dir.join("gateway.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = read(&b.dir.join("gateway.key"));
    assert!(!read(&cp.log).contains(key.trim()));

    // Revoking gateway B ends its live session first (terminated through B, recording sealed
    // by it), then refuses B's certificate from then on.
    let mut on_b = ssh_via(&rig, &b, &["sleep 300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut b_id = String::new();
    wait_until("a session on gw-us-2", Duration::from_secs(15), || {
        let s = cp.json(&["session", "list", "--state", "active"]);
        match s["sessions"].as_array().unwrap().first() {
            Some(s) if s["gateway"] == "gw-us-2" => {
                b_id = s["id"].as_str().unwrap().to_owned();
                true
            }
            _ => false,
        }
    });
    cp.wgctl_ok(&["gateway", "remove", "gw-us-2"]);
    assert_eq!(cp.gateway_state("gw-us-2"), "removed");
    let st = wait_exit(&mut on_b, Duration::from_secs(10));
    assert_ne!(st.code(), Some(0));
    let view = cp.json(&["session", "show", &b_id]);
    assert_eq!(view["state"], "closed", "{view}");
    assert_eq!(view["end_reason"], "terminated", "{view}");
    let verify = cp.wgctl_ok(&["recording", "verify", &b_id]);
    assert!(verify.contains(" OK "), "{verify}");
    let out = ssh_via(&rig, &b, &["true"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    wait_until(
        "the removed gateway's certificate refused",
        Duration::from_secs(10),
        || read(&b.log).contains("client certificate refused: gateway gw-us-2 was removed"),
    );
    assert!(
        cp.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
    drop(forged);
    let _ = (&a.dir, &a.log);
}

/// A gateway that stalls past its lease (SIGSTOP) is declared lost and its session closed; when
/// it comes back (SIGCONT) it learns that from its heartbeat and severs the session: nothing is
/// resurrected. A control plane that stalls for less than the lease disturbs no session.
#[test]
fn a_returning_lost_gateway_severs_what_was_closed() {
    let rig = Rig::start();
    let cp = start_control(&rig);
    provision(&rig, &cp);
    let gw = start_gateway(&rig, &cp, "gwa", &join_token(&cp));
    let mut client = held_ssh(&rig, &gw, &["-tt", "cat"]);
    let mut id = String::new();
    wait_until("the session", Duration::from_secs(15), || {
        let s = cp.json(&["session", "list"]);
        match s["sessions"].as_array().unwrap().first() {
            Some(s) if s["state"] == "active" => {
                id = s["id"].as_str().unwrap().to_owned();
                true
            }
            _ => false,
        }
    });

    // The control plane stalls for less than the lease: the session carries on.
    signal(&cp.child, "-STOP");
    std::thread::sleep(Duration::from_secs(2));
    signal(&cp.child, "-CONT");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        client.try_wait().unwrap().is_none(),
        "session cut by a short control stall"
    );
    assert_eq!(cp.json(&["session", "show", &id])["state"], "active");
    assert_eq!(cp.gateway_state("gw-us-1"), "live");

    // The gateway stalls past the lease: lost, session closed on the control plane.
    signal(&gw.child, "-STOP");
    wait_until("gateway_lost", Duration::from_secs(10), || {
        cp.json(&["session", "show", &id])["state"] == "closed"
    });
    assert_eq!(cp.gateway_state("gw-us-1"), "lost");
    // It comes back: its heartbeat names the closed session, which it severs.
    signal(&gw.child, "-CONT");
    let started = Instant::now();
    let st = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the returning gateway kept a closed session:\n{}",
            read(&gw.log)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(st.code(), Some(0));
    wait_until("live again", Duration::from_secs(5), || {
        cp.gateway_state("gw-us-1") == "live"
    });
    let view = cp.json(&["session", "show", &id]);
    assert_eq!(view["state"], "closed");
    assert_eq!(view["end_reason"], "gateway_lost");
    assert!(
        cp.json(&["session", "list"])["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The recording was left for the stalled gateway to finish (it was still writing): sealed
    // by it when it severed the session, the seal recorded late, and the files verify against it.
    wait_until("the late seal", Duration::from_secs(10), || {
        cp.json(&["session", "show", &id])["recording"]["sha256"].is_string()
    });
    let view = cp.json(&["session", "show", &id]);
    assert_eq!(view["recording"]["status"], "sealed", "{view}");
    let verify = cp.wgctl_ok(&["recording", "verify", &id]);
    assert!(verify.contains(" OK "), "{verify}");
    let sealed = cp.json(&[
        "audit",
        "list",
        "--session",
        &id,
        "--kind",
        "recording.sealed",
    ]);
    assert_eq!(sealed["events"].as_array().unwrap().len(), 1, "{sealed}");
}

/// A gateway stalled past its lease and then removed gets its recordings sealed as partial by
/// the control plane; when it wakes up it writes on (output that waited in the buffers) and
/// seals again. The sealed part stays verifiable and is what is played; the bytes written after
/// the seal are reported, not taken for tampering.
#[test]
fn a_removed_stalled_gateway_cannot_spoil_its_recordings() {
    let rig = Rig::start();
    let cp = start_control(&rig);
    provision(&rig, &cp);
    let gw = start_gateway(&rig, &cp, "gwa", &join_token(&cp));
    let mut client = held_ssh(
        &rig,
        &gw,
        &[
            "-tt",
            "while :; do echo tick-$(date +%s%N); sleep 0.1; done",
        ],
    );
    let id = wait_sessions(&cp, 1).remove(0);
    std::thread::sleep(Duration::from_secs(1));
    signal(&gw.child, "-STOP");
    wait_until("gateway_lost", Duration::from_secs(10), || {
        cp.json(&["session", "show", &id])["state"] == "closed"
    });
    cp.wgctl_ok(&["gateway", "remove", "gw-us-1"]);
    let sealed = cp.json(&["session", "show", &id]);
    assert_eq!(sealed["recording"]["status"], "partial", "{sealed}");
    // It wakes up: buffered output is recorded, it learns it was removed and severs.
    signal(&gw.child, "-CONT");
    let _ = wait_exit(&mut client, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let verify = cp.wgctl(&["recording", "verify", &id]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}\n{}", read(&gw.log));
    assert!(text.contains(" OK "), "{text}");
    assert!(text.contains("written after the seal"), "{text}");
    let bytes = sealed["recording"]["bytes"].as_u64().unwrap();
    let play = Command::new(env!("CARGO_BIN_EXE_wgctl"))
        .args(["recording", "play", &id, "--speed", "1000"])
        .env("WGCTL_ADDR", &cp.api)
        .env("WGCTL_TOKEN", &cp.token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        play.status.success(),
        "{}",
        String::from_utf8_lossy(&play.stderr)
    );
    assert!(bytes > 0);
}

/// Removing a gateway that does not answer (stalled) does not wait on it: its live session is
/// closed as lost within seconds, and the gateway severs it when it wakes up refused.
#[test]
fn removing_a_stalled_gateway_does_not_hang() {
    let rig = Rig::start();
    let store = format!("sqlite://{}/wardengate.db", rig.path("cp").display());
    let cp = start_replica_leased(&rig, "cp", &store, None, "30s");
    provision(&rig, &cp);
    let gw = start_gateway(&rig, &cp, "gwa", &join_token(&cp));
    let mut client = held_ssh(&rig, &gw, &["-tt", "cat"]);
    let id = wait_sessions(&cp, 1).remove(0);
    signal(&gw.child, "-STOP");
    let started = Instant::now();
    cp.wgctl_ok(&["gateway", "remove", "gw-us-1"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    let view = cp.json(&["session", "show", &id]);
    assert_eq!(view["state"], "closed", "{view}");
    assert_eq!(view["end_reason"], "gateway_lost", "{view}");
    signal(&gw.child, "-CONT");
    let st = wait_exit(&mut client, Duration::from_secs(15));
    assert_ne!(st.code(), Some(0));
}

/// The rig's fixture and the target credential on a standalone control plane.
fn provision(rig: &Rig, cp: &Control) {
    let fixture = rig.path("cluster-fixture.yaml");
    std::fs::write(&fixture, rig.fixture_yaml()).unwrap();
    cp.wgctl_ok(&["apply", "-f", fixture.to_str().unwrap()]);
    cp.wgctl_ok(&[
        "vault",
        "put",
        "vault/ssh/dev1",
        "--private-key-file",
        rig.path("target_account").to_str().unwrap(),
    ]);
}

/// The live sessions' IDs, once there are `n`.
fn wait_sessions(cp: &Control, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    wait_until(
        &format!("{n} active sessions"),
        Duration::from_secs(15),
        || {
            let list = cp.json(&["session", "list"]);
            let sessions = list["sessions"].as_array().unwrap();
            ids = sessions
                .iter()
                .filter(|s| s["state"] == "active")
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect();
            ids.len() == n
        },
    );
    ids
}

/// The control plane is killed and comes back after longer than the lease (the gateways were
/// not silent: nobody could hear them): the gateway's sessions carry on; a connection attempted meanwhile is refused with a clear line (fail closed); what
/// happened during the outage — a session that ended, with its exit status — reaches the
/// control plane from the gateway's event journal, in order and once; and the returned control
/// plane commands the gateway again.
#[test]
fn a_control_plane_outage_loses_no_event() {
    let rig = Rig::start();
    let store = format!("sqlite://{}/wardengate.db", rig.path("cp").display());
    let mut cp = start_replica_leased(&rig, "cp", &store, None, "3s");
    provision(&rig, &cp);
    let gw = start_gateway(&rig, &cp, "gwa", &join_token(&cp));
    let out = rig.path("held.out");
    let mut held = ssh_via(&rig, &gw, &["-tt"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let held_id = wait_sessions(&cp, 1).remove(0);
    let mut ending = ssh_via(&rig, &gw, &["sleep 3; echo done; exit 5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ending_id = wait_sessions(&cp, 2)
        .into_iter()
        .find(|id| *id != held_id)
        .unwrap();

    cp.child.kill().unwrap();
    let down = Instant::now();
    // Fail closed: no new session without the control plane, and the client is told why.
    let refused = ssh_via(&rig, &gw, &["true"]).output().unwrap();
    assert_ne!(refused.status.code(), Some(0));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("control plane unreachable"), "{why}");
    // The sessions go on: one ends on its own, its exit status relayed; the other still relays.
    let st = wait_exit(&mut ending, Duration::from_secs(15));
    assert_eq!(st.code(), Some(5));
    type_line(&mut held, "echo still-$((40+2))");
    wait_output(&out, "still-42");
    let journal = gw.dir.join("events").join("journal.log");
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "the ended session's events wait in the journal"
    );

    // Down for longer than the lease.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(down.elapsed()));
    cp.restart();
    // Replayed: the session that ended meanwhile is closed with its exit status.
    wait_until(
        "the outage's events replayed",
        Duration::from_secs(15),
        || cp.json(&["session", "show", &ending_id])["state"] == "closed",
    );
    let view = cp.json(&["session", "show", &ending_id]);
    assert_eq!(view["exit_status"], 5, "{view}");
    assert_eq!(view["end_reason"], "client_exit", "{view}");
    // A full lease after the restart, the gateway is still live and its session untouched.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(cp.json(&["session", "show", &held_id])["state"], "active");
    assert!(held.try_wait().unwrap().is_none());
    assert_eq!(cp.gateway_state("gw-us-1"), "live");
    let lost = cp.json(&["audit", "list", "--kind", "gateway.lost"]);
    assert!(lost["events"].as_array().unwrap().is_empty(), "{lost}");
    wait_until("the journal emptied", Duration::from_secs(5), || {
        std::fs::metadata(&journal).is_ok_and(|m| m.len() == 0)
    });
    // Each event once.
    let audit = cp.json(&["audit", "list", "--session", &ending_id]);
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["session.opened", "session.closed"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            1,
            "{kind}: {kinds:?}"
        );
    }
    // The returned control plane reaches the gateway again: terminate the held session.
    let term = cp.wgctl(&[
        "session",
        "terminate",
        &held_id,
        "--reason",
        "outage drill over",
    ]);
    let text = String::from_utf8_lossy(&term.stdout);
    assert!(
        text.contains("recording  sealed"),
        "{text}{}\ngateway log:\n{}\ncontrol log:\n{}",
        String::from_utf8_lossy(&term.stderr),
        read(&gw.log),
        read(&cp.log)
    );
    let st = wait_exit(&mut held, Duration::from_secs(10));
    assert_ne!(st.code(), Some(0));
    assert!(
        cp.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
    // SIGTERM stops a replica whose gateway is still connected (its command stream does not
    // hold the shutdown up).
    signal(&cp.child, "-TERM");
    let st = wait_exit(&mut cp.child, Duration::from_secs(10));
    assert!(st.success(), "{st:?}\n{}", read(&cp.log));
}

/// A scratch PostgreSQL database, dropped at the end.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create() -> PgDb {
        let base = std::env::var("WG_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let (server, _) = base.rsplit_once('/').unwrap();
        let name = format!(
            "wg_ha_{}_{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos()
        );
        let admin_url = base.clone();
        let st = Command::new("psql")
            .arg(&admin_url)
            .args(["-qAtc", &format!("CREATE DATABASE {name}")])
            .status()
            .expect("psql (PostgreSQL client)");
        assert!(st.success(), "cannot create database {name} on {server}");
        PgDb {
            url: format!("{server}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .args([
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .status();
    }
}

/// Two control-plane replicas on one PostgreSQL database and a gateway connected to both:
/// sessions are listed and terminated from either replica; `kill -9` of one replica leaves the
/// live sessions alone, new sessions go through the survivor at once, terminations keep working
/// and the audit chain (serialised in the database) still verifies.
#[test]
fn two_replicas_on_postgres_survive_the_loss_of_one() {
    let rig = Rig::start();
    let db = PgDb::create();
    let mut r1 = start_replica(&rig, "cp1", &db.url, None);
    // Every replica needs the same master key (vault and audit-chain key).
    std::fs::create_dir_all(rig.path("cp2")).unwrap();
    std::fs::copy(
        rig.path("cp1").join("master.key"),
        rig.path("cp2").join("master.key"),
    )
    .unwrap();
    let r2 = start_replica(&rig, "cp2", &db.url, Some(&r1.token.clone()));
    let fixture = rig.path("cluster-fixture.yaml");
    std::fs::write(&fixture, rig.fixture_yaml()).unwrap();
    r1.wgctl_ok(&["apply", "-f", fixture.to_str().unwrap()]);
    r1.wgctl_ok(&[
        "vault",
        "put",
        "vault/ssh/dev1",
        "--private-key-file",
        rig.path("target_account").to_str().unwrap(),
    ]);
    let gw = start_gateway_for(&rig, &[&r1, &r2], "gwa", &join_token(&r2));

    // Two sessions; both listed from either replica with their gateway.
    let spawn_held = || held_ssh(&rig, &gw, &["-tt", "cat"]);
    let mut s1 = spawn_held();
    let mut s2 = spawn_held();
    let mut ids = Vec::new();
    wait_until("two live sessions", Duration::from_secs(20), || {
        let list = r2.json(&["session", "list"]);
        let live: Vec<&serde_json::Value> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "active")
            .collect();
        ids = live
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        live.len() == 2 && live.iter().all(|s| s["gateway"] == "gw-us-1")
    });
    assert_eq!(
        r1.json(&["session", "list"])["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Terminate one through replica 1, whichever replica the gateway's calls go to.
    let t = r1.wgctl_ok(&["session", "terminate", &ids[0], "--reason", "via replica 1"]);
    assert!(t.contains("recording  sealed"), "{t}");

    // A stalled replica (SIGSTOP: its kernel still completes TCP handshakes, nothing answers)
    // does not keep a gateway from joining, renewing its certificate and serving: each TLS
    // handshake with it gives up after 5 s and the call moves on to replica 2.
    signal(&r1.child, "-STOP");
    let (config, port) = gateway_config_for(&rig, &[&r1, &r2], "gwb", &join_token(&r2));
    let mut yaml = read(&config);
    yaml.push_str("certificateRenewBefore: 400d\n");
    std::fs::write(&config, &yaml).unwrap();
    let gwb = Gateway {
        child: spawn_gateway(&rig, &config, "gwb"),
        ssh_port: port,
        dir: rig.path("gwb"),
        log: rig.path("gwb.log"),
    };
    let listening = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            listening.elapsed() < Duration::from_secs(60),
            "gateway B did not start while replica 1 was stalled:\n{}",
            read(&gwb.log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        read(&gwb.log).contains("renewed its certificate"),
        "{}",
        read(&gwb.log)
    );
    // A login through it while replica 1 is still stalled.
    let mut login = ssh_via(&rig, &gwb, &["echo past-the-stall"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut login, Duration::from_secs(60));
    let out = login.wait_with_output().unwrap();
    signal(&r1.child, "-CONT");
    assert!(
        st.success() && String::from_utf8_lossy(&out.stdout) == "past-the-stall\n",
        "{st:?} {}\ngateway B log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        read(&gwb.log)
    );
    drop(gwb);

    // kill -9 replica 1.
    r1.child.kill().unwrap();
    r1.child.wait().unwrap();
    let killed = Instant::now();
    // New sessions go through the survivor at once.
    let mut ok = false;
    while killed.elapsed() < Duration::from_secs(5) {
        let out = ssh_via(&rig, &gw, &["echo survivor"]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout) == "survivor\n" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        ok,
        "no new session within 5 s of losing a replica:\n{}",
        read(&gw.log)
    );
    // The sessions that were live still are: the remaining one can be terminated through the
    // survivor, and its client is cut with the reason.
    // The survivor sessions close on their own (`closing` → `closed` takes a moment).
    let mut left: Vec<String> = Vec::new();
    wait_until("one live session left", Duration::from_secs(10), || {
        left = r2.json(&["session", "list"])["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        left.len() == 1
    });
    assert_eq!(
        left.len(),
        1,
        "{left:?}\ngateway log:\n{}\nreplica 2 log:\n{}",
        read(&gw.log),
        read(&r2.log)
    );
    assert!(ids.contains(&left[0]));
    let live_id = left[0].clone();
    // The terminated session's client is gone; the other one is still connected.
    wait_until(
        "the terminated client to exit",
        Duration::from_secs(5),
        || s1.try_wait().unwrap().is_some() || s2.try_wait().unwrap().is_some(),
    );
    let (mut live_client, mut gone_client) = if s1.try_wait().unwrap().is_some() {
        (s2, s1)
    } else {
        (s1, s2)
    };
    assert!(
        live_client.try_wait().unwrap().is_none(),
        "a live session was cut"
    );
    let t = r2.wgctl_ok(&[
        "session",
        "terminate",
        &live_id,
        "--reason",
        "via replica 2",
    ]);
    assert!(t.contains("recording  sealed"), "{t}");
    let st = live_client.wait().unwrap();
    assert_ne!(st.code(), Some(0));
    let _ = gone_client.wait();
    assert!(
        r2.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
    assert_eq!(r2.gateway_state("gw-us-1"), "live");
}

/// A gateway renews its client certificate when it starts within `certificateRenewBefore` of
/// the certificate's expiry: it serves with the new one at once, the certificate it renewed with
/// stays accepted (an answer lost in a crash can be asked again), and older ones are refused.
#[test]
fn a_gateway_renews_its_certificate_when_it_starts() {
    let rig = Rig::start();
    let cp = start_control(&rig);
    provision(&rig, &cp);
    let token = join_token(&cp);
    let gw = start_gateway(&rig, &cp, "gwr", &token);
    let dir = gw.dir.clone();
    let ssh_port = gw.ssh_port;
    wait_until("gw-us-1 live", Duration::from_secs(10), || {
        cp.gateway_state("gw-us-1") == "live"
    });
    drop(gw);
    let files = || {
        (
            read(&dir.join("gateway.key")),
            read(&dir.join("gateway.crt")),
        )
    };
    let joined = files();
    let renewed_events = || {
        cp.json(&["audit", "list", "--kind", "gateway.certificate.renewed"])["events"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(renewed_events(), 0);

    // A renewal window longer than the certificate's year: every start renews.
    let config = rig.path("gwr.yaml");
    let mut yaml = read(&config);
    yaml.push_str("certificateRenewBefore: 400d\n");
    std::fs::write(&config, &yaml).unwrap();
    let start = |n: usize| {
        let name = format!("gwr-{n}");
        let child = spawn_gateway(&rig, &config, &name);
        let g = Gateway {
            child,
            ssh_port,
            dir: dir.clone(),
            log: rig.path(&format!("{name}.log")),
        };
        wait_until("the gateway to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_ok()
        });
        g
    };
    let gw = start(1);
    assert!(
        read(&gw.log).contains("renewed its certificate"),
        "{}",
        read(&gw.log)
    );
    assert_eq!(renewed_events(), 1);
    let first_renewal = files();
    assert_ne!(first_renewal.0, joined.0, "a new key");
    assert_ne!(first_renewal.1, joined.1, "a new certificate");
    for f in ["gateway.next.key", "gateway.next.crt", "gateway.next.ready"] {
        assert!(!dir.join(f).exists(), "{f} left behind");
    }
    // It serves with the new certificate.
    let out = ssh_via(&rig, &gw, &["echo renewed-ok"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "renewed-ok",
        "{}",
        read(&gw.log)
    );
    drop(gw);
    // Having shown the new certificate, the gateway's old one is retired: a copy of the joined
    // key can neither log in nor renew (it would otherwise mint certificates and evict the
    // gateway).
    let renewed_pair = files();
    let swap_in = |pair: &(String, String)| {
        std::fs::remove_file(dir.join("gateway.key")).unwrap();
        std::fs::remove_file(dir.join("gateway.crt")).unwrap();
        std::fs::write(dir.join("gateway.key"), &pair.0).unwrap();
        std::fs::write(dir.join("gateway.crt"), &pair.1).unwrap();
    };
    swap_in(&joined);
    let mut thief = spawn_gateway(&rig, &config, "gwr-thief");
    wait_until(
        "the retired certificate refused",
        Duration::from_secs(20),
        || read(&rig.path("gwr-thief.log")).contains("not the current certificate"),
    );
    let _ = thief.kill();
    let _ = thief.wait();
    assert_eq!(renewed_events(), 1);
    swap_in(&renewed_pair);

    // Again: the first renewal's certificate renews, and is retired once the gateway has
    // served with the second one.
    let gw = start(2);
    assert_eq!(renewed_events(), 2);
    let out = ssh_via(&rig, &gw, &["echo again-ok"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "again-ok");
    drop(gw);
    swap_in(&renewed_pair);
    let mut stale = spawn_gateway(&rig, &config, "gwr-stale");
    wait_until(
        "the stale certificate refused",
        Duration::from_secs(20),
        || read(&rig.path("gwr-stale.log")).contains("not the current certificate"),
    );
    assert_eq!(renewed_events(), 2);
    let _ = stale.kill();
    let _ = stale.wait();
    assert!(
        cp.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
}
