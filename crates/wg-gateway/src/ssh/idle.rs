//! Idle disconnect of SSH sessions.

use std::sync::Arc;
use std::time::Duration;

use wg_domain::lifecycle::EndReason;
use wg_domain::time::now_millis;
use wg_proto::v1::SessionReport;

use super::{Shared, SshSession};
use crate::runtime::KillInfo;

/// Idle disconnect (seed: "Idle disconnect mechanics"): idle is the time since the last
/// meaningful user input — channel data from the client; SSH keepalives, window adjustments and
/// target output never count. When `idle.timeout` elapses the session is warned (state `idle`,
/// a `session.idle_warning` event, a `wardengate:` line on the user's terminal); input within
/// `idle.grace` returns it to `active`, otherwise it is severed with reason `idle_timeout`.
/// One re-armed deadline per session (tokio's timer wheel), no task per timer.
#[derive(Default)]
pub(super) struct IdleClock {
    /// When the pending warning was given (ms since the epoch).
    warned_at: Option<i64>,
}

impl IdleClock {
    /// Sleeps until the session's next idle deadline, or until input arrives while warned.
    pub(super) fn next_wake(
        &self,
        session: Option<&Arc<SshSession>>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let plan = session.map(|s| {
            let live = s.live().clone();
            let deadline = match self.warned_at {
                None => live.last_input_ms() + ms(s.idle_timeout()),
                Some(w) => w + ms(s.idle_grace()),
            };
            (live, deadline, self.warned_at.is_some())
        });
        async move {
            let Some((live, deadline, warned)) = plan else {
                // Not admitted yet: look again shortly.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            };
            let wait = u64::try_from(deadline - now_millis()).unwrap_or(0);
            let sleep = tokio::time::sleep(Duration::from_millis(wait));
            if warned {
                tokio::select! {
                    _ = sleep => {}
                    _ = live.input_after_warning() => {}
                }
            } else {
                sleep.await;
            }
        }
    }

    pub(super) async fn check(
        &mut self,
        shared: &Shared,
        s: &Arc<SshSession>,
        server: &russh::server::Handle,
    ) {
        let live = s.live();
        let now = now_millis();
        match self.warned_at {
            None => {
                if now - live.last_input_ms() < ms(s.idle_timeout()) {
                    return;
                }
                self.warned_at = Some(now);
                live.set_idle_warned(true);
                let line = format!(
                    "\r\nwardengate: this session has been idle for {}; it will be closed in {} unless you type something\r\n",
                    wg_domain::time::format_duration(s.idle_timeout()),
                    wg_domain::time::format_duration(s.idle_grace()),
                );
                if let Some(rec) = live.started_recorder() {
                    let _ = rec
                        .record(wg_recording::Frame::Marker(line.trim().to_owned()))
                        .await;
                }
                notify_client(s, server, &line).await;
                shared.journal.report(SessionReport {
                    session_id: live.id.to_string(),
                    state: "idle".into(),
                    ..Default::default()
                });
            }
            Some(warned_at) => {
                if live.last_input_ms() > warned_at {
                    self.warned_at = None;
                    live.set_idle_warned(false);
                    shared.journal.report(SessionReport {
                        session_id: live.id.to_string(),
                        state: "active".into(),
                        ..Default::default()
                    });
                } else if now - warned_at >= ms(s.idle_grace()) {
                    live.kill(KillInfo {
                        reason: EndReason::IdleTimeout,
                        by: None,
                        detail: format!(
                            "idle for {} with no input during the {} grace",
                            wg_domain::time::format_duration(s.idle_timeout()),
                            wg_domain::time::format_duration(s.idle_grace()),
                        ),
                    });
                }
            }
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Writes a gateway line to the stderr of every client session channel (at most 500 ms each).
pub(super) async fn notify_client(
    session: &SshSession,
    server: &russh::server::Handle,
    line: &str,
) {
    for ch in super::close::snapshot(&session.client_channels) {
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            server.extended_data(ch, 1, line.as_bytes().to_vec()),
        )
        .await;
    }
}
