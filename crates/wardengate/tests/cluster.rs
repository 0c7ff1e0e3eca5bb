//! Standalone processes (issue #3): `wardengate control` and two `wardengate gateway`s joined
//! with one-time tokens, in front of the rig's real sshd, driven with the real ssh and wgctl.
//! Covered: join tokens are single-use; sessions on both gateways are listed with the right GW;
//! `kill -9` of a gateway → its sessions closed as `gateway_lost` within the lease, a
//! `gateway.lost` event, and its concurrency slots freed (the actor connects again at once through
//! the other gateway); a gateway with an invalid credential is refused; `wgctl gateway remove`
//! revokes a gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Rig, free_port, read, wait_until};

/// A `wardengate control` process on a SQLite store in the rig's directory.
struct Control {
    child: Child,
    api: String,
    grpc: String,
    token: String,
    recordings: PathBuf,
    log: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control(rig: &Rig) -> Control {
    let dir = rig.path("cp");
    let recordings = rig.path("shared-recordings");
    let api_port = free_port();
    let grpc_port = free_port();
    let config = rig.path("control.yaml");
    std::fs::write(
        &config,
        format!(
            "store: sqlite://{dir}/wardengate.db\ndataDir: {dir}\nrecordingsDir: {rec}\n\
             apiAddr: 127.0.0.1:{api_port}\ngrpcAddr: 127.0.0.1:{grpc_port}\ngatewayLease: 3s\n",
            dir = dir.display(),
            rec = recordings.display(),
        ),
    )
    .unwrap();
    let log = rig.path("control.log");
    let child = Command::new(env!("CARGO_BIN_EXE_wardengate"))
        .args(["control", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the control plane's token", Duration::from_secs(30), || {
        dir.join("admin.token").exists()
            && std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", grpc_port)).is_ok()
    });
    Control {
        child,
        api: format!("http://127.0.0.1:{api_port}"),
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        token: read(&dir.join("admin.token")).trim().to_owned(),
        recordings,
        log,
    }
}

impl Control {
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
    let dir = rig.path(name);
    let port = free_port();
    let config = rig.path(&format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "controlUrls: [\"{grpc}\"]\ndataDir: {dir}\nrecordingsDir: {rec}\njoinToken: \"{join_token}\"\n\
             sshAddr: 127.0.0.1:{port}\nheartbeatInterval: 1s\n",
            grpc = cp.grpc,
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
    let (config, ssh_port) = gateway_config(rig, cp, name, join_token);
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
    wait_until("both gateways live", Duration::from_secs(10), || {
        cp.gateway_state("gw-us-1") == "live" && cp.gateway_state("gw-us-2") == "live"
    });
    let tokens = cp.wgctl_ok(&["gateway", "token", "list"]);
    assert_eq!(tokens.matches(" used ").count(), 2, "{tokens}");
    let list = cp.wgctl_ok(&["gateway", "list"]);
    assert!(
        list.contains("gw-us-1") && list.contains("gw-us-2"),
        "{list}"
    );

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

    // A gateway whose credential is not valid gets nothing from the control plane.
    std::fs::create_dir_all(rig.path("gwf")).unwrap();
    std::fs::write(
        rig.path("gwf").join("identity.json"),
        r#"{"name":"gw-us-9","pool":"us","credential":"wgg_forged"}"#,
    )
    .unwrap();
    let forged = start_gateway(&rig, &cp, "gwf", "");
    let out = ssh_via(&rig, &forged, &["true"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!cp.wgctl_ok(&["gateway", "list"]).contains("gw-us-9"));

    // Revoking gateway B: it is refused from then on.
    cp.wgctl_ok(&["gateway", "remove", "gw-us-2"]);
    assert_eq!(cp.gateway_state("gw-us-2"), "removed");
    let out = ssh_via(&rig, &b, &["true"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        cp.wgctl_ok(&["audit", "verify"])
            .starts_with("audit chain OK")
    );
    drop(forged);
    let _ = (&a.dir, &a.log);
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A gateway that stalls past its lease (SIGSTOP) is declared lost and its session closed; when
/// it comes back (SIGCONT) it learns that from its heartbeat and severs the session: nothing is
/// resurrected. A control plane that stalls for less than the lease disturbs no session.
#[test]
fn a_returning_lost_gateway_severs_what_was_closed() {
    let rig = Rig::start();
    let cp = start_control(&rig);
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
    let gw = start_gateway(&rig, &cp, "gwa", &join_token(&cp));
    let mut client = ssh_via(&rig, &gw, &["-tt", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
}
