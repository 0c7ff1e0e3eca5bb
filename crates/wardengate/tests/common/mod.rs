//! The shared end-to-end harness: a real `sshd` target, `wardengate dev` (the real binary), the
//! real OpenSSH client and `wgctl`, all on loopback with temporary keys and dynamic ports.
//!
//! `Rig::start()` gives: target `dev1` (an sshd, tag `env=dev`, account `root` with a key in the
//! vault), actors `admin@local` (the bootstrap admin), `alice@corp` and `bob@corp` (each with its
//! own key), and a policy `dev-ssh` letting admin and alice reach `env=dev` over ssh with full
//! recording. Bob has no policy. A test is then a few lines.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running test rig.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub sshd_port: u16,
    pub ssh_port: u16,
    pub api: String,
    pub token: String,
    pub sshd_log: PathBuf,
    sshd: Child,
    wardengate: Option<Child>,
    pub wardengate_log: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path, comment: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (install openssh-client)");
    assert!(st.success());
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Rig {
    pub fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for k in ["admin", "alice", "bob", "target_account", "sshd_host"] {
            keygen(&root.join(k), k);
        }
        // The target: a stock sshd on a loopback port.
        std::fs::create_dir_all("/run/sshd").ok();
        let sshd_port = free_port();
        std::fs::copy(
            root.join("target_account.pub"),
            root.join("authorized_keys"),
        )
        .unwrap();
        let sshd_log = root.join("sshd.log");
        // SetEnv: root's shell start-up on the CI machines runs `pyenv rehash`, which waits up
        // to 60 s for a lock file that a shell killed mid-rehash (a terminated session) leaves
        // behind; every later interactive shell then starts a minute late. One second is
        // enough for a live rehash.
        let config = format!(
            "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {root}/sshd_host\n\
             AuthorizedKeysFile {root}/authorized_keys\nPidFile none\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\nMaxStartups 200\nMaxSessions 100\n\
             AcceptEnv LANG LC_* WG_*\n\
             SetEnv PYENV_REHASH_TIMEOUT=1\n",
            root = root.display()
        );
        std::fs::write(root.join("sshd_config"), config).unwrap();
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(root.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sshd_log).unwrap())
            .spawn()
            .expect("sshd (install openssh-server)");
        wait_until("sshd to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", sshd_port)).is_ok()
        });
        let data = root.join("data");
        let wardengate_log = root.join("wardengate.log");
        let mut rig = Rig {
            dir,
            data,
            sshd_port,
            ssh_port: 0,
            api: String::new(),
            token: String::new(),
            sshd_log,
            sshd,
            wardengate: None,
            wardengate_log,
        };
        rig.start_wardengate();
        rig.token = read(&rig.data.join("admin.token")).trim().to_owned();
        assert!(rig.token.starts_with("wgt_"), "token file");
        rig.apply(&rig.fixture_yaml());
        let out = rig.wgctl(&[
            "vault",
            "put",
            "vault/ssh/dev1",
            "--private-key-file",
            rig.path("target_account").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "vault put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rig
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pubkey(&self, name: &str) -> String {
        read(&self.path(&format!("{name}.pub"))).trim().to_owned()
    }

    pub fn fixture_yaml(&self) -> String {
        let host = self.pubkey("sshd_host");
        format!(
            r#"kind: user
name: alice@corp
groups: [dev]
sshKeys: ["{alice}"]
---
kind: user
name: bob@corp
sshKeys: ["{bob}"]
---
kind: target
name: dev1
address: "127.0.0.1:{port}"
protocol: ssh
tags: {{env: dev}}
accounts:
  - name: root
    credential: vault/ssh/dev1
hostKey: "{host}"
---
kind: policy
name: dev-ssh
subjects: [user:admin@local, user:alice@corp]
targets: {{tags: {{env: dev}}}}
protocols: [ssh]
recording: full
"#,
            alice = self.pubkey("alice"),
            bob = self.pubkey("bob"),
            port = self.sshd_port,
        )
    }

    /// (Re)starts `wardengate dev` on the rig's data directory.
    pub fn start_wardengate(&mut self) {
        // A port picked free can be taken by a parallel test before wardengate binds it: a
        // first start tries other ports.
        for attempt in 0..3 {
            let fresh = self.ssh_port == 0;
            if self.try_start_wardengate() {
                return;
            }
            let taken = read(&self.wardengate_log).contains("Address already in use");
            if !(fresh && taken) || attempt == 2 {
                panic!(
                    "wardengate dev did not start:\n{}",
                    read(&self.wardengate_log)
                );
            }
            self.ssh_port = 0;
        }
    }

    fn try_start_wardengate(&mut self) -> bool {
        let port = if self.ssh_port == 0 {
            free_port()
        } else {
            self.ssh_port
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_wardengate"))
            .args(["dev", "--data-dir"])
            .arg(&self.data)
            .args(["--ssh-addr", &format!("127.0.0.1:{port}")])
            .args(["--api-addr", "127.0.0.1:0"])
            .arg("--ssh-key")
            .arg(self.path("admin.pub"))
            .env("WARDENGATE_LOG", "info,wg_gateway=debug,russh=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.wardengate_log)
                    .unwrap(),
            )
            .spawn()
            .expect("wardengate binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut api = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let t = line.trim();
                if let Some(rest) = t.strip_prefix("API") {
                    api = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches("/api/v1")
                        .to_owned();
                }
                if t.starts_with("Try next:") {
                    let _ = tx.send(api.clone());
                }
            }
        });
        let api = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        };
        self.api = api;
        self.ssh_port = port;
        self.wardengate = Some(child);
        true
    }

    /// Stops `wardengate dev` with SIGTERM and waits for it.
    pub fn stop_wardengate(&mut self) {
        if let Some(mut c) = self.wardengate.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Kills `wardengate dev` with SIGKILL (a crash: nothing is flushed or reported).
    pub fn crash_wardengate(&mut self) {
        if let Some(mut c) = self.wardengate.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The public key (OpenSSH text) of one of the rig's key pairs.
    pub fn public_key(&self, name: &str) -> String {
        self.pubkey(name)
    }

    /// A `wgctl` command with the rig's address and token.
    pub fn wgctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wgctl"));
        c.args(args)
            .env("WGCTL_ADDR", &self.api)
            .env("WGCTL_TOKEN", &self.token)
            .stdin(Stdio::null());
        c
    }

    pub fn wgctl(&self, args: &[&str]) -> Output {
        self.wgctl_cmd(args).output().unwrap()
    }

    /// `wgctl …` that must succeed; returns stdout.
    pub fn wgctl_ok(&self, args: &[&str]) -> String {
        let out = self.wgctl(args);
        assert!(
            out.status.success(),
            "wgctl {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn wgctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.wgctl_ok(&a)).unwrap()
    }

    pub fn apply(&self, yaml: &str) {
        let f = self.path("apply.yaml");
        std::fs::write(&f, yaml).unwrap();
        self.wgctl_ok(&["apply", "-f", f.to_str().unwrap()]);
    }

    /// Live sessions (API view), newest first.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        self.wgctl_json(&["session", "list"])["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn session(&self, id: &str) -> serde_json::Value {
        self.wgctl_json(&["session", "show", id])
    }

    /// Waits for exactly one live session and returns its ID.
    pub fn wait_one_session(&self) -> String {
        let mut id = String::new();
        wait_until("a live session", Duration::from_secs(20), || {
            let s = self.sessions();
            if s.len() == 1 && s[0]["state"] == "active" {
                id = s[0]["id"].as_str().unwrap().to_owned();
                true
            } else {
                false
            }
        });
        id
    }

    pub fn audit(&self, session: &str) -> Vec<serde_json::Value> {
        self.wgctl_json(&["audit", "list", "--session", session])["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn ssh_base(&self, key: &str, port: u16) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-i",
        ])
        .arg(self.path(key))
        .args(["-p", &port.to_string()]);
        c
    }

    /// `ssh` through the gateway as `login` (e.g. `alice@corp:dev1`) with `key`; extra args follow.
    pub fn ssh(&self, key: &str, login: &str, args: &[&str]) -> Command {
        self.ssh_with(key, &[], login, args)
    }

    /// As [`Rig::ssh`], with extra client `options` (e.g. `-v`, `-o Ciphers=…`) before the host.
    pub fn ssh_with(&self, key: &str, options: &[&str], login: &str, args: &[&str]) -> Command {
        let mut c = self.ssh_base(key, self.ssh_port);
        c.args(options).arg(format!("{login}@127.0.0.1")).args(args);
        c
    }

    /// `ssh` straight to the target sshd as root (the peer to compare with).
    pub fn ssh_direct(&self, args: &[&str]) -> Command {
        let mut c = self.ssh_base("target_account", self.sshd_port);
        c.arg("root@127.0.0.1").args(args);
        c
    }

    /// An interactive shell on a PTY (`ssh -tt`) through the gateway as `login` with `key`, fed
    /// through stdin ([`type_line`]), its output going to the file `out` and its stderr to
    /// `out` + `.err`.
    pub fn shell(&self, key: &str, login: &str, out: &Path) -> Child {
        let err = out.with_extension("err");
        self.ssh(key, login, &["-tt"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(err).unwrap())
            .spawn()
            .unwrap()
    }

    /// ssh options as one string, for scp/sftp/rsync `-e`/`-o` use.
    pub fn ssh_opts(&self, key: &str) -> Vec<String> {
        vec![
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-i".into(),
            self.path(key).display().to_string(),
        ]
    }

    /// The recording stream (asciicast v2) of a session, fetched through the REST API.
    pub fn recording_stream(&self, id: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-sSf",
                "-H",
                &format!("Authorization: Bearer {}", self.token),
            ])
            .arg(format!("{}/api/v1/recordings/{id}/stream", self.api))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Puts `local` to `remote` and gets it back to `back` with `sftp -b` through the gateway as
    /// `login` (passed as `-o User=`: the login's ':' and '@' would read as host and path
    /// separators), with extra sftp arguments such as `-l KBITS`.
    pub fn sftp_round_trip(
        &self,
        key: &str,
        login: &str,
        local: &Path,
        remote: &Path,
        back: &Path,
        extra: &[&str],
    ) -> Output {
        let batch = self.path("sftp-batch");
        std::fs::write(
            &batch,
            format!(
                "put {} {}\nget {} {}\n",
                local.display(),
                remote.display(),
                remote.display(),
                back.display()
            ),
        )
        .unwrap();
        Command::new("sftp")
            .args(self.ssh_opts(key))
            .args(extra)
            .args(["-P", &self.ssh_port.to_string(), "-b"])
            .arg(&batch)
            .args(["-o", &format!("User={login}"), "127.0.0.1"])
            .output()
            .unwrap()
    }

    /// Established TCP connections from anywhere to the target sshd.
    pub fn target_connections(&self) -> usize {
        let out = Command::new("ss")
            .args([
                "-Htn",
                "state",
                "established",
                "dport",
                &format!("= :{}", self.sshd_port),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

/// Waits up to `timeout` for a client to exit (a hung client fails the test instead of hanging
/// the suite).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Types one line into an interactive client's stdin.
pub fn type_line(client: &mut Child, line: &str) {
    use std::io::Write;
    let stdin = client.stdin.as_mut().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

/// Sends `sig` (e.g. `-STOP`) to a child process with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Starts `lines` lines of output followed by `marker` in a client's shell, stops the client
/// (SIGSTOP) before the output starts, and waits until its SSH window (2 MiB) and the socket
/// buffers are full: the gateway's write to it is then waiting for window.
pub fn flood_a_stopped_client(client: &mut Child, lines: u32, marker: &str) {
    type_line(client, &format!("sleep 1; seq 1 {lines}; echo {marker}"));
    signal(client, "-STOP");
    std::thread::sleep(Duration::from_secs(4));
}

/// Waits (up to 10 s) for `marker` in a client's output file and returns the output; on a
/// timeout the panic shows the output and the client's stderr (`out` + `.err`).
pub fn wait_output(out: &Path, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = read(out);
        if text.contains(marker) {
            return text;
        }
        if Instant::now() >= deadline {
            let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
            panic!("timed out waiting for {marker:?}; output:\n{text}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_wardengate();
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}
