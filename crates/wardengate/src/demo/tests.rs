//! End-to-end tests: the demo target driven by the real OpenSSH client (and,
//! for what OpenSSH cannot send, such as signals and window changes, by a
//! russh client).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::rand_core::{TryCryptoRng, TryRng};
use russh::keys::ssh_key::{Algorithm, LineEnding};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{DemoConfig, ensure_loopback, serve};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The kernel's CSPRNG, for key generation in tests.
struct DevUrandom(std::fs::File);

impl DevUrandom {
    fn open() -> Self {
        Self(std::fs::File::open("/dev/urandom").unwrap())
    }
}

impl TryRng for DevUrandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut buf = [0; 4];
        self.try_fill_bytes(&mut buf)?;
        Ok(u32::from_le_bytes(buf))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut buf = [0; 8];
        self.try_fill_bytes(&mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.read_exact(dst).unwrap();
        Ok(())
    }
}

impl TryCryptoRng for DevUrandom {}

fn ed25519_key() -> PrivateKey {
    PrivateKey::random(&mut DevUrandom::open(), Algorithm::Ed25519).unwrap()
}

fn current_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write_key(dir: &Path, name: &str, key: &PrivateKey) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    file.write_all(key.to_openssh(LineEnding::LF).unwrap().as_bytes())
        .unwrap();
    path
}

/// A running demo target plus a client key it accepts.
struct Target {
    addr: SocketAddr,
    account: String,
    client_key: Arc<PrivateKey>,
    key_path: PathBuf,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Target {
    async fn start() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let client_key = ed25519_key();
        let key_path = write_key(dir.path(), "client_key", &client_key);
        let account = current_user();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = DemoConfig {
            host_key: ed25519_key(),
            authorized_key: client_key.public_key().clone(),
            account: account.clone(),
            shell: PathBuf::from("/bin/sh"),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, config, shutdown.clone()));
        Target {
            addr,
            account,
            client_key: Arc::new(client_key),
            key_path,
            dir,
            shutdown,
            task,
        }
    }

    /// Common OpenSSH options, for `ssh` (`port_flag` "-p") or `sftp` ("-P").
    fn openssh_args(&self, port_flag: &str, key: &Path, user: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "-F",
            "/dev/null",
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
            "-i",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(key.display().to_string());
        args.push(port_flag.to_owned());
        args.push(self.addr.port().to_string());
        args.push(format!("{user}@127.0.0.1"));
        args
    }

    /// Runs `/usr/bin/ssh [extra…] user@target command`.
    async fn ssh(&self, extra: &[&str], command: &str) -> Output {
        self.ssh_with(
            extra,
            command,
            &self.key_path,
            &self.account,
            Stdio::null(),
            &[],
        )
        .await
    }

    async fn ssh_with(
        &self,
        extra: &[&str],
        command: &str,
        key: &Path,
        user: &str,
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> Output {
        let mut cmd = tokio::process::Command::new("/usr/bin/ssh");
        cmd.args(extra)
            .args(self.openssh_args("-p", key, user))
            .arg(command)
            .stdin(stdin)
            .kill_on_drop(true);
        for (name, value) in env {
            cmd.env(name, value);
        }
        tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
            .await
            .expect("ssh timed out")
            .unwrap()
    }

    /// A russh client session, authenticated.
    async fn russh_client(&self) -> russh::client::Handle<TestClient> {
        let config = Arc::new(russh::client::Config::default());
        let mut handle = russh::client::connect(config, self.addr, TestClient)
            .await
            .unwrap();
        let auth = handle
            .authenticate_publickey(
                self.account.clone(),
                PrivateKeyWithHashAlg::new(self.client_key.clone(), None),
            )
            .await
            .unwrap();
        assert!(auth.success());
        handle
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

struct TestClient;

impl russh::client::Handler for TestClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test]
async fn exec_reports_the_exit_status() {
    let target = Target::start().await;
    let out = target.ssh(&[], "exit 42").await;
    assert_eq!(out.status.code(), Some(42), "stderr: {}", stderr(&out));
    let out = target.ssh(&[], "true").await;
    assert_eq!(out.status.code(), Some(0));
    target.stop().await;
}

#[tokio::test]
async fn exec_separates_stdout_and_stderr() {
    let target = Target::start().await;
    let out = target.ssh(&[], "echo out; echo err >&2").await;
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    assert_eq!(out.status.code(), Some(0));
    target.stop().await;
}

#[tokio::test]
async fn exec_without_pty_has_no_tty() {
    let target = Target::start().await;
    let out = target.ssh(&[], "tty").await;
    assert_eq!(stdout(&out), "not a tty\n");
    assert_eq!(out.status.code(), Some(1));
    target.stop().await;
}

#[tokio::test]
async fn exec_with_pty_gets_a_terminal() {
    let target = Target::start().await;
    let out = target
        .ssh_with(
            &["-tt"],
            "stty size; echo \"$TERM\"; tty; exit 3",
            &target.key_path,
            &target.account,
            Stdio::null(),
            &[("TERM", "xterm-256color")],
        )
        .await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.split("\r\n").collect();
    // Without a local terminal OpenSSH asks for a 0x0 PTY; sshd prints the same.
    assert_eq!(lines[0], "0 0", "output: {text:?}");
    assert_eq!(lines[1], "xterm-256color", "output: {text:?}");
    assert!(lines[2].starts_with("/dev/pts/"), "output: {text:?}");
    assert_eq!(out.status.code(), Some(3));
    target.stop().await;
}

#[tokio::test]
async fn killed_by_signal_exits_255_like_sshd() {
    let target = Target::start().await;
    // OpenSSH's client ignores exit-signal and exits 255, as it does with sshd.
    let out = target.ssh(&[], "echo before; kill -TERM $$").await;
    assert_eq!(out.status.code(), Some(255), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "before\n");
    let out = target.ssh(&["-tt"], "kill -KILL $$").await;
    assert_eq!(out.status.code(), Some(255));
    target.stop().await;
}

#[tokio::test]
async fn environment_is_sane_and_env_requests_are_filtered() {
    let target = Target::start().await;
    let out = target
        .ssh_with(
            &["-o", "SendEnv=LANG WG_SECRET"],
            "echo \"$USER|$LOGNAME|$HOME|$SHELL|$LANG|${WG_SECRET-unset}|$(pwd)\"; test -n \"$PATH\"",
            &target.key_path,
            &target.account,
            Stdio::null(),
            &[("LANG", "C.UTF-8"), ("WG_SECRET", "leak")],
        )
        .await;
    let home = std::env::var("HOME").unwrap();
    let user = &target.account;
    assert_eq!(
        stdout(&out),
        format!("{user}|{user}|{home}|/bin/sh|C.UTF-8|unset|{home}\n")
    );
    assert_eq!(out.status.code(), Some(0));
    target.stop().await;
}

#[tokio::test]
async fn children_start_with_default_signal_dispositions() {
    let target = Target::start().await;
    // Ignored signals survive exec: a server started with `&` or nohup must
    // not hand that on, or Ctrl-C in the session would do nothing.
    let out = target
        .ssh(&[], "sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status")
        .await;
    let ignored = u64::from_str_radix(stdout(&out).trim(), 16).unwrap();
    for signal in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGPIPE,
    ] {
        assert_eq!(
            ignored & (1 << (signal - 1)),
            0,
            "signal {signal} is ignored"
        );
    }
    target.stop().await;
}

#[tokio::test]
async fn stdin_is_relayed_and_closed_on_eof() {
    let target = Target::start().await;
    let mut data = vec![0; 3 * 1024 * 1024 + 17];
    DevUrandom::open().0.read_exact(&mut data).unwrap();
    let input = target.dir.path().join("input");
    std::fs::write(&input, &data).unwrap();
    let out = target
        .ssh_with(
            &[],
            "sha256sum",
            &target.key_path,
            &target.account,
            Stdio::from(std::fs::File::open(&input).unwrap()),
            &[],
        )
        .await;
    assert_eq!(stdout(&out), format!("{}  -\n", sha256_hex(&data)));
    assert_eq!(out.status.code(), Some(0));
    target.stop().await;
}

#[tokio::test]
async fn large_output_is_relayed_completely() {
    let target = Target::start().await;
    let out = target
        .ssh(&[], "head -c 20000000 /dev/zero; echo done >&2")
        .await;
    assert_eq!(out.stdout.len(), 20_000_000);
    assert_eq!(stderr(&out), "done\n");
    assert_eq!(out.status.code(), Some(0));
    target.stop().await;
}

#[tokio::test]
async fn sftp_round_trips_a_file() {
    let target = Target::start().await;
    let dir = target.dir.path();
    let mut data = vec![0; 5 * 1024 * 1024];
    DevUrandom::open().0.read_exact(&mut data).unwrap();
    let (local, remote, back) = (dir.join("local"), dir.join("remote"), dir.join("back"));
    std::fs::write(&local, &data).unwrap();
    let batch = dir.join("batch");
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
    let mut cmd = tokio::process::Command::new("/usr/bin/sftp");
    cmd.arg("-b")
        .arg(&batch)
        .args(target.openssh_args("-P", &target.key_path, &target.account))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "sftp failed: {}", stderr(&out));
    assert_eq!(
        sha256_hex(&std::fs::read(&remote).unwrap()),
        sha256_hex(&data)
    );
    assert_eq!(
        sha256_hex(&std::fs::read(&back).unwrap()),
        sha256_hex(&data)
    );
    target.stop().await;
}

#[tokio::test]
async fn non_loopback_listener_is_refused() {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = DemoConfig {
        host_key: ed25519_key(),
        authorized_key: ed25519_key().public_key().clone(),
        account: "demo".to_owned(),
        shell: PathBuf::from("/bin/sh"),
    };
    let error = serve(listener, config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("loopback"), "{error}");

    assert!(ensure_loopback("127.0.0.1:22".parse().unwrap()).is_ok());
    assert!(ensure_loopback("127.8.0.1:22".parse().unwrap()).is_ok());
    assert!(ensure_loopback("[::1]:22".parse().unwrap()).is_ok());
    assert!(ensure_loopback("[::ffff:127.0.0.1]:22".parse().unwrap()).is_ok());
    assert!(ensure_loopback("0.0.0.0:22".parse().unwrap()).is_err());
    assert!(ensure_loopback("[::]:22".parse().unwrap()).is_err());
    assert!(ensure_loopback("192.168.1.10:22".parse().unwrap()).is_err());
    assert!(ensure_loopback("[::ffff:10.0.0.1]:22".parse().unwrap()).is_err());
}

#[tokio::test]
async fn wrong_key_or_account_is_refused() {
    let target = Target::start().await;
    let other = write_key(target.dir.path(), "other_key", &ed25519_key());
    let out = target
        .ssh_with(&[], "true", &other, &target.account, Stdio::null(), &[])
        .await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );

    let out = target
        .ssh_with(
            &[],
            "true",
            &target.key_path,
            "not-the-account",
            Stdio::null(),
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    target.stop().await;
}

/// Everything a channel received until it closed.
#[derive(Debug, Default)]
struct Transcript {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The closing messages in the order received.
    events: Vec<String>,
}

async fn collect(channel: &mut russh::Channel<russh::client::Msg>) -> Transcript {
    let mut transcript = Transcript::default();
    let wait = async {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => transcript.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    transcript.stderr.extend_from_slice(&data)
                }
                ChannelMsg::Eof => transcript.events.push("eof".to_owned()),
                ChannelMsg::ExitStatus { exit_status } => {
                    transcript.events.push(format!("exit-status {exit_status}"))
                }
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    ..
                } => transcript
                    .events
                    .push(format!("exit-signal {signal_name:?} {core_dumped}")),
                ChannelMsg::Close => {
                    transcript.events.push("close".to_owned());
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(CLIENT_TIMEOUT, wait).await.unwrap();
    transcript
}

/// Reads the channel until `needle` shows up on stdout.
async fn wait_for_output(channel: &mut russh::Channel<russh::client::Msg>, needle: &str) -> String {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(msg) = channel.wait().await {
            if let ChannelMsg::Data { data } = msg {
                seen.extend_from_slice(&data);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    return;
                }
            }
        }
        panic!("channel ended before {needle:?}");
    };
    tokio::time::timeout(CLIENT_TIMEOUT, wait).await.unwrap();
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn exit_is_reported_like_sshd_data_eof_status_close() {
    let target = Target::start().await;
    let client = target.russh_client().await;
    let mut channel = client.channel_open_session().await.unwrap();
    channel
        .exec(true, "echo hi; echo oops >&2; exit 5")
        .await
        .unwrap();
    let transcript = collect(&mut channel).await;
    assert_eq!(transcript.stdout, b"hi\n");
    assert_eq!(transcript.stderr, b"oops\n");
    assert_eq!(transcript.events, ["eof", "exit-status 5", "close"]);

    let mut channel = client.channel_open_session().await.unwrap();
    channel.exec(true, "exec sleep 100").await.unwrap();
    // No output to wait for: give the exec a moment to happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    channel.signal(Sig::TERM).await.unwrap();
    let transcript = collect(&mut channel).await;
    assert_eq!(
        transcript.events,
        ["eof", "exit-signal TERM false", "close"]
    );
    target.stop().await;
}

#[tokio::test]
async fn signals_reach_the_process_group() {
    let target = Target::start().await;
    let client = target.russh_client().await;
    let mut channel = client.channel_open_session().await.unwrap();
    channel
        .exec(
            true,
            "trap 'echo caught; exit 7' INT; echo ready; while :; do sleep 0.1; done",
        )
        .await
        .unwrap();
    wait_for_output(&mut channel, "ready").await;
    channel.signal(Sig::INT).await.unwrap();
    let transcript = collect(&mut channel).await;
    assert_eq!(String::from_utf8_lossy(&transcript.stdout), "caught\n");
    assert_eq!(transcript.events, ["eof", "exit-status 7", "close"]);
    target.stop().await;
}

#[tokio::test]
async fn window_change_resizes_the_pty() {
    let target = Target::start().await;
    let client = target.russh_client().await;
    let mut channel = client.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "vt100", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel
        .exec(true, "stty size; echo \"$TERM\"; read line; stty size")
        .await
        .unwrap();
    let seen = wait_for_output(&mut channel, "vt100").await;
    assert!(seen.starts_with("24 80\r\n"), "{seen:?}");
    channel.window_change(132, 50, 0, 0).await.unwrap();
    channel.data(&b"\n"[..]).await.unwrap();
    let transcript = collect(&mut channel).await;
    let rest = String::from_utf8_lossy(&transcript.stdout);
    assert!(rest.ends_with("50 132\r\n"), "{rest:?}");
    assert_eq!(transcript.events, ["eof", "exit-status 0", "close"]);
    target.stop().await;
}

#[tokio::test]
async fn concurrent_channels_are_independent() {
    let target = Target::start().await;
    let client = target.russh_client().await;
    let mut runs = Vec::new();
    for n in 1..=4u32 {
        let mut channel = client.channel_open_session().await.unwrap();
        runs.push(tokio::spawn(async move {
            channel
                .exec(true, format!("sleep 0.3; echo {n}; exit {n}"))
                .await
                .unwrap();
            (n, collect(&mut channel).await)
        }));
    }
    for run in runs {
        let (n, transcript) = run.await.unwrap();
        assert_eq!(transcript.stdout, format!("{n}\n").as_bytes());
        assert_eq!(
            transcript.events,
            [
                "eof".to_owned(),
                format!("exit-status {n}"),
                "close".to_owned()
            ]
        );
    }
    target.stop().await;
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its reaper is gone as far as we care.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: u32) {
    for _ in 0..100 {
        if process_gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("process {pid} survived its session");
}

#[tokio::test]
async fn dropped_connection_kills_the_children() {
    let target = Target::start().await;
    let client = target.russh_client().await;
    // A pipes session with a background job, and a PTY session.
    let mut pipes = client.channel_open_session().await.unwrap();
    pipes
        .exec(true, "sleep 1000 & echo \"bg $!\"; wait")
        .await
        .unwrap();
    let mut pty = client.channel_open_session().await.unwrap();
    pty.request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    pty.exec(true, "echo \"fg $$\"; sleep 1000").await.unwrap();
    let pids: Vec<u32> = [
        wait_for_output(&mut pipes, "\n").await,
        wait_for_output(&mut pty, "\n").await,
    ]
    .iter()
    .map(|seen| seen.split_whitespace().nth(1).unwrap().parse().unwrap())
    .collect();
    drop(pipes);
    drop(pty);
    client
        .disconnect(russh::Disconnect::ByApplication, "bye", "")
        .await
        .unwrap();
    drop(client);
    for pid in pids {
        wait_gone(pid).await;
    }
    target.stop().await;
}

#[tokio::test]
async fn shutdown_kills_running_sessions() {
    let target = Target::start().await;
    let client = target.russh_client().await;
    let mut channel = client.channel_open_session().await.unwrap();
    channel
        .exec(true, "echo \"pid $$\"; exec sleep 1000")
        .await
        .unwrap();
    let seen = wait_for_output(&mut channel, "\n").await;
    let pid: u32 = seen.split_whitespace().nth(1).unwrap().parse().unwrap();
    target.stop().await;
    assert!(process_gone(pid), "process {pid} survived shutdown");
}
