//! The relay is faithful: exit codes, streams, signals, PTY, window changes, file transfers.
//! Real OpenSSH client, real sshd target, `wardengate dev` in between.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Rig, read, sha256_hex, wait_until};

#[test]
fn exec_exit_status_and_separate_streams_match_direct() {
    let rig = Rig::start();
    let via = rig
        .ssh(
            "alice",
            "alice@corp:dev1",
            &["echo out; echo err >&2; exit 42"],
        )
        .output()
        .unwrap();
    let direct = rig
        .ssh_direct(&["echo out; echo err >&2; exit 42"])
        .output()
        .unwrap();
    assert_eq!(
        via.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&via.stderr)
    );
    assert_eq!(via.status.code(), direct.status.code());
    assert_eq!(via.stdout, b"out\n");
    assert_eq!(via.stderr, direct.stderr);
    assert_eq!(String::from_utf8_lossy(&via.stderr), "err\n");

    // No PTY: `tty` says so, exactly as directly.
    let via = rig
        .ssh("alice", "alice@corp:dev1", &["tty"])
        .output()
        .unwrap();
    let direct = rig.ssh_direct(&["tty"]).output().unwrap();
    assert_eq!(via.stdout, b"not a tty\n");
    assert_eq!(via.stdout, direct.stdout);
    assert_eq!(via.status.code(), direct.status.code());

    // Stdin reaches the command and EOF ends it.
    let mut child = rig
        .ssh("alice", "alice@corp:dev1", &["wc -c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&vec![b'x'; 100_000]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");

    // The session record carries the exit status.
    wait_until(
        "a closed session with exit status 42",
        Duration::from_secs(10),
        || {
            let closed = rig.wgctl_json(&["session", "list", "--state", "closed"]);
            closed["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["exit_status"] == 42 && s["end_reason"] == "client_exit")
        },
    );
}

#[test]
fn signals_reach_the_client_as_directly() {
    let rig = Rig::start();
    let via = rig
        .ssh("alice", "alice@corp:dev1", &["kill -TERM $$"])
        .output()
        .unwrap();
    let direct = rig.ssh_direct(&["kill -TERM $$"]).output().unwrap();
    assert_eq!(via.status.code(), direct.status.code());
    assert_eq!(via.stderr, direct.stderr);
    // The session's end record says how the command ended.
    wait_until("the end record", Duration::from_secs(10), || {
        let closed = rig.wgctl_json(&["session", "list", "--state", "closed"]);
        closed["sessions"][0]["end_detail"]
            .as_str()
            .is_some_and(|d| d.contains("killed by signal TERM"))
    });
}

#[test]
fn pty_input_window_change_and_exit_code_under_tmux() {
    let rig = Rig::start();
    let sock = rig.path("tmux.sock");
    let rc_file = rig.path("rc");
    let ssh: Vec<String> = {
        let c = rig.ssh("alice", "alice@corp:dev1", &[]);
        std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect()
    };
    let shell_cmd = format!("{}; echo rc=$? > {}", ssh.join(" "), rc_file.display());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let st = tmux(&["new-session", "-d", "-x", "100", "-y", "30", &shell_cmd]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let pane = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let id = rig.wait_one_session();
    tmux(&["send-keys", "echo typed-$((6*7))", "Enter"]);
    wait_until("typed input to run", Duration::from_secs(10), || {
        pane().contains("typed-42")
    });
    tmux(&["send-keys", "stty size", "Enter"]);
    wait_until("stty size 30 100", Duration::from_secs(10), || {
        pane().contains("30 100")
    });
    tmux(&["resize-window", "-x", "150", "-y", "50"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "clear; stty size", "Enter"]);
    wait_until("stty size 50 150", Duration::from_secs(10), || {
        pane().contains("50 150")
    });
    // The gateway reports terminal size changes with its progress (every second in dev).
    wait_until(
        "the new size in session show",
        Duration::from_secs(5),
        || {
            let show = rig.session(&id);
            show["pty"]["cols"] == 150
                && show["pty"]["rows"] == 50
                && show["pty"]["term"].is_string()
        },
    );
    tmux(&["send-keys", "exit 7", "Enter"]);
    wait_until("ssh to exit", Duration::from_secs(10), || {
        rc_file.exists() && !read(&rc_file).is_empty()
    });
    assert_eq!(read(&rc_file).trim(), "rc=7");
    let _ = tmux(&["kill-server"]);
    // The recording holds a resize event and the typed input.
    let stream = rig.wgctl_ok(&["recording", "verify", &id]);
    assert!(stream.contains("OK"), "{stream}");
    let cast = rig.recording_stream(&id);
    assert!(
        cast.contains("\"r\",\"150x50\""),
        "no resize event in the recording"
    );
    assert!(cast.contains("typed-"), "no input/output in the recording");
}

#[test]
fn sftp_scp_and_rsync_round_trip_large_files() {
    let rig = Rig::start();
    let src = rig.path("big.bin");
    // 200 MB of incompressible data.
    let st = Command::new("head")
        .args(["-c", "200000000", "/dev/urandom"])
        .stdout(std::fs::File::create(&src).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let want = sha256_hex(&std::fs::read(&src).unwrap());
    let remote = rig.path("remote.bin");
    let back = rig.path("back.bin");
    let opts = rig.ssh_opts("alice");
    // The login goes in the User option: sftp/scp/rsync read its ':' and '@' as separators
    // (documented in the README).
    let out = rig.sftp_round_trip("alice", "alice@corp:dev1", &src, &remote, &back, &[]);
    assert!(
        out.status.success(),
        "sftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_hex(&std::fs::read(&remote).unwrap()), want);
    assert_eq!(sha256_hex(&std::fs::read(&back).unwrap()), want);
    std::fs::remove_file(&back).unwrap();

    // scp (SFTP protocol by default in current OpenSSH) and the legacy protocol (-O).
    let small = rig.path("small.txt");
    std::fs::write(&small, "scp payload\n".repeat(10_000)).unwrap();
    for legacy in [false, true] {
        let dest = rig.path(if legacy { "scp-legacy.txt" } else { "scp.txt" });
        let mut c = Command::new("scp");
        c.args(&opts)
            .args(["-P", &rig.ssh_port.to_string()])
            .args(["-o", "User=alice@corp:dev1"]);
        if legacy {
            c.arg("-O");
        }
        let out = c
            .arg(&small)
            .arg(format!("127.0.0.1:{}", dest.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&small).unwrap()
        );
    }

    // rsync over ssh.
    let rsync_dest = rig.path("rsync-dest.txt");
    let e = format!(
        "ssh {} -p {} -l alice@corp:dev1",
        opts.join(" "),
        rig.ssh_port
    );
    let out = Command::new("rsync")
        .args(["-a", "-e", &e])
        .arg(&small)
        .arg(format!("127.0.0.1:{}", rsync_dest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&rsync_dest).unwrap(),
        std::fs::read(&small).unwrap()
    );
}

#[test]
fn a_request_the_target_refuses_fails_as_directly() {
    // pty-req, env and subsystem in a row: the target's answers must reach the client in order.
    let rig = Rig::start();
    let args = ["-tt", "-o", "SetEnv=WG_A=1", "-s", "no-such-subsystem"];
    let via = rig.ssh("alice", "alice@corp:dev1", &args).output().unwrap();
    let direct = rig.ssh_direct(&args).output().unwrap();
    assert_eq!(via.status.code(), direct.status.code());
    assert_eq!(
        String::from_utf8_lossy(&via.stderr),
        String::from_utf8_lossy(&direct.stderr)
    );
    assert!(String::from_utf8_lossy(&via.stderr).contains("subsystem request failed"));
}

/// The client leg's cipher follows the CPU (ARCHITECTURE.md, "Client-leg ciphers"): with AES
/// instructions the stock OpenSSH client, left to its defaults (ChaCha20-Poly1305 first),
/// negotiates an AES cipher; a client that accepts only ChaCha20 is refused during key exchange,
/// before any session exists (exit 255, nothing listed). Without AES instructions ChaCha20 is negotiated.
#[test]
fn client_leg_cipher_follows_the_cpu() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let aes = (has("aes") && has("pclmulqdq")) || (has("aes") && has("pmull"));
    let rig = Rig::start();
    let out = rig
        .ssh_with("alice", &["-v"], "alice@corp:dev1", &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    let negotiated = log
        .lines()
        .find(|l| l.contains("kex: client->server cipher:"))
        .unwrap_or_else(|| panic!("no cipher line in {log}"));
    if aes {
        assert!(negotiated.contains("cipher: aes"), "{negotiated}");
        let refused = rig
            .ssh_with(
                "alice",
                &["-o", "Ciphers=chacha20-poly1305@openssh.com"],
                "alice@corp:dev1",
                &["true"],
            )
            .output()
            .unwrap();
        assert_eq!(
            refused.status.code(),
            Some(255),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        // (Which side reports the failed negotiation first is a race: OpenSSH prints "no
        // matching cipher found" when it notices, or the server has already closed.)
        // The first session's `closed` reaches the list through the gateway's event journal:
        // wait for it, then count every session, live or closed.
        let count = |args: &[&str]| rig.wgctl_json(args)["sessions"].as_array().map(Vec::len);
        wait_until(
            "the first session is listed closed",
            Duration::from_secs(10),
            || count(&["session", "list", "--state", "closed"]) == Some(1),
        );
        assert_eq!(
            count(&["session", "list"]),
            Some(0),
            "only the first connection made a session, and it is closed"
        );
    } else {
        assert!(negotiated.contains("chacha20-poly1305"), "{negotiated}");
    }
}
