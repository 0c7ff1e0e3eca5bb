//! Spawning the session's child (in a PTY or with pipes), signalling its
//! process group and terminating it.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use russh::Sig;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::Shared;

/// After SIGHUP, how long the child's process group gets before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Where OpenSSH's sftp server usually lives.
const SFTP_SERVERS: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/lib/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
];

/// What the client asked the channel to run.
#[derive(Debug)]
pub(super) enum Kind {
    /// `shell`: a login shell.
    Shell,
    /// `exec`: `$SHELL -c COMMAND`.
    Exec(Vec<u8>),
    /// `subsystem sftp`: OpenSSH's sftp-server.
    Sftp,
}

/// A `pty-req`, remembered until the shell/exec request arrives.
#[derive(Debug, Clone)]
pub(super) struct PtyRequest {
    pub(super) term: String,
    pub(super) size: pty_process::Size,
}

/// Everything needed to start a channel's child.
pub(super) struct Spec<'a> {
    pub(super) kind: &'a Kind,
    pub(super) pty: Option<&'a PtyRequest>,
    /// Variables accepted from `env` requests.
    pub(super) env: &'a [(String, String)],
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
}

/// A started child and the ends of its standard streams we hold.
pub(super) struct Started {
    pub(super) child: Child,
    /// The child's pid, which is also its process group id.
    pub(super) pgid: i32,
    pub(super) io: Io,
}

/// The parent's side of a child's standard streams.
pub(super) enum Io {
    /// stdin, stdout and stderr are all the slave side of this PTY.
    Pty(pty_process::Pty),
    /// Separate pipes; stderr is relayed as extended data 1.
    Pipes {
        stdin: ChildStdin,
        stdout: ChildStdout,
        stderr: ChildStderr,
    },
}

/// Starts the child for `spec` as the invoking user, in their home directory.
///
/// Without a PTY the child leads a new process group; with one it leads a new
/// session whose controlling terminal is the PTY. Either way its pid is its
/// process group id, which `signal` requests and termination target.
pub(super) fn spawn(shared: &Shared, spec: &Spec<'_>) -> anyhow::Result<Started> {
    let shell_name = shared
        .shell
        .file_name()
        .map_or_else(|| OsString::from("sh"), OsStr::to_os_string);
    let mut command = match spec.kind {
        Kind::Shell => {
            let mut command = Command::new(&shared.shell);
            // Like sshd: a leading '-' in argv[0] asks for a login shell.
            let mut arg0 = OsString::from("-");
            arg0.push(&shell_name);
            command.arg0(arg0);
            command
        }
        Kind::Exec(line) => {
            let mut command = Command::new(&shared.shell);
            command
                .arg0(&shell_name)
                .arg("-c")
                .arg(OsStr::from_bytes(line));
            command
        }
        Kind::Sftp => Command::new(sftp_server()?),
    };
    command
        .env_clear()
        .envs(environment(shared, spec))
        .current_dir(&shared.home)
        .kill_on_drop(false);
    reset_signals_on_exec(&mut command);

    let (child, io) = match spec.pty {
        Some(pty) => {
            let (master, slave) = pty_process::open().context("allocating a PTY")?;
            master
                .resize(pty.size)
                .context("setting the PTY's window size")?;
            let child = pty_process::Command::from(command)
                .spawn(slave)
                .with_context(|| format!("starting {} in a PTY", describe(spec.kind, shared)))?;
            (child, Io::Pty(master))
        }
        None => {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = command
                .spawn()
                .with_context(|| format!("starting {}", describe(spec.kind, shared)))?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                bail!("the child's standard streams are missing");
            };
            (
                child,
                Io::Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
            )
        }
    };
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| anyhow!("the child has no pid"))?;
    Ok(Started { child, pgid, io })
}

fn describe(kind: &Kind, shared: &Shared) -> String {
    match kind {
        Kind::Shell => format!("the shell {}", shared.shell.display()),
        Kind::Exec(_) => format!("a command with {} -c", shared.shell.display()),
        Kind::Sftp => "the sftp server".to_owned(),
    }
}

/// The first sftp-server found, or an error naming where we looked.
pub(super) fn sftp_server() -> anyhow::Result<PathBuf> {
    SFTP_SERVERS
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "no sftp-server found (looked for {}); install OpenSSH's sftp server \
                 (e.g. the openssh-sftp-server package)",
                SFTP_SERVERS.join(", ")
            )
        })
}

/// The child's environment, built from scratch like sshd does.
fn environment(shared: &Shared, spec: &Spec<'_>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("USER".into(), shared.account.clone().into()),
        ("LOGNAME".into(), shared.account.clone().into()),
        ("HOME".into(), shared.home.clone().into()),
        ("SHELL".into(), shared.shell.clone().into()),
        ("PATH".into(), shared.path.clone()),
        (
            "SSH_CLIENT".into(),
            format!(
                "{} {} {}",
                spec.peer.ip().to_canonical(),
                spec.peer.port(),
                spec.local.port()
            )
            .into(),
        ),
        (
            "SSH_CONNECTION".into(),
            format!(
                "{} {} {} {}",
                spec.peer.ip().to_canonical(),
                spec.peer.port(),
                spec.local.ip().to_canonical(),
                spec.local.port()
            )
            .into(),
        ),
    ];
    let pty_term = spec
        .pty
        .map(|pty| pty.term.as_str())
        .filter(|t| !t.is_empty());
    for (name, value) in spec.env {
        // The PTY's terminal type wins over a TERM sent with `env`.
        if name == "TERM" && pty_term.is_some() {
            continue;
        }
        env.push((name.into(), value.into()));
    }
    if let Some(term) = pty_term {
        env.push(("TERM".into(), term.into()));
    }
    env
}

/// Whether an `env` request may set `name` (sshd's `AcceptEnv LANG LC_*` plus
/// a few harmless terminal hints).
pub(super) fn env_accepted(name: &str, value: &str) -> bool {
    let allowed = matches!(
        name,
        "LANG" | "LANGUAGE" | "TERM" | "COLORTERM" | "NO_COLOR"
    ) || (name.starts_with("LC_")
        && name.len() > 3
        && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
    allowed && !value.contains('\0')
}

/// Signals a child must not inherit as ignored: a server started in the
/// background or under nohup ignores some of them, and then Ctrl-C in the
/// session's terminal would do nothing. sshd resets them too.
const RESET_SIGNALS: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Makes the child start with default signal dispositions (the signal mask is
/// already reset by the standard library).
#[allow(unsafe_code)]
fn reset_signals_on_exec(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it only calls
    // signal(2), which is async-signal-safe, and neither allocates nor locks.
    unsafe {
        command.pre_exec(|| {
            for &signal in RESET_SIGNALS {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group `pgid`; false if that failed (e.g. the
/// group is gone).
#[allow(unsafe_code)]
pub(super) fn signal_group(pgid: i32, signal: libc::c_int) -> bool {
    // 0 would mean our own process group and 1 (with -1) everything we may
    // signal: never target those.
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg takes two integers and touches no memory of ours.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// Whether any process is left in the process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    signal_group(pgid, 0)
}

/// Hangs up the child's process group, and kills it if it is still there
/// after a grace period; reaps the child. `reaped` says whether the child has
/// already been waited for.
pub(super) async fn terminate(pgid: i32, child: &mut Child, reaped: bool) {
    signal_group(pgid, libc::SIGHUP);
    signal_group(pgid, libc::SIGCONT);
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    let mut reaped = reaped;
    if !reaped {
        reaped = tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_ok();
    }
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !reaped || group_alive(pgid) {
        tracing::debug!(pgid, "demo target: killing a session's process group");
        signal_group(pgid, libc::SIGKILL);
    }
    if !reaped {
        let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    }
}

/// The signal number for a `signal` request's name (RFC 4254 §6.10).
pub(super) fn signal_number(sig: &Sig) -> Option<libc::c_int> {
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            "TSTP" => libc::SIGTSTP,
            "WINCH" => libc::SIGWINCH,
            _ => return None,
        },
    })
}

/// The `exit-signal` name for a signal number: the name without "SIG", or
/// OpenSSH's "SIG@openssh.com" for signals RFC 4254 does not name.
pub(super) fn signal_name(signal: libc::c_int) -> Sig {
    match signal {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        libc::SIGUSR2 => Sig::Custom("USR2".to_owned()),
        _ => Sig::Custom("SIG@openssh.com".to_owned()),
    }
}

/// How a child's exit is reported on its channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// `exit-status`.
    Status(u32),
    /// `exit-signal`: the signal and whether a core was dumped.
    Signal(libc::c_int, bool),
}

impl Exit {
    pub(super) fn from_status(status: ExitStatus) -> Option<Exit> {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(code) = status.code() {
            // Exit codes are 0..=255 on Unix.
            Some(Exit::Status(u32::try_from(code).unwrap_or(255)))
        } else {
            status
                .signal()
                .map(|signal| Exit::Signal(signal, status.core_dumped()))
        }
    }
}
