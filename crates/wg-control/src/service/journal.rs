//! Gateway event journals: lifecycle reports and gateway-decided audit events arrive numbered
//! per (gateway, journal) and are applied in order, each exactly once.
//!
//! Exactly once: an audit event is appended in the same transaction that moves the journal's
//! position past it (a replay finds the position there and appends nothing); a lifecycle report
//! is a compare-and-set walk of the state machine, so applying it again changes nothing, and the
//! position moves after it. Of two replicas handed the same batch, each event still takes effect
//! once.

use wg_domain::lifecycle::SessionState;
use wg_domain::{ErrorCode, SessionId};

use super::*;
use crate::ControlError;

/// One journaled event, as the gateway sent it.
#[derive(Debug, Clone)]
pub enum JournalEvent {
    /// A lifecycle report.
    Report(Report),
    /// An audit event the gateway decided (`session`, `kind`, `details_json`).
    Audit {
        /// Session ID.
        session: String,
        /// Event kind.
        kind: String,
        /// Details: a JSON object.
        details_json: String,
    },
    /// An event that could not be read (the line says why); skipped.
    Malformed(String),
}

/// How far a batch was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalAck {
    /// Every event of the journal up to this sequence number is applied.
    pub applied_through: u64,
    /// Sessions of the batch the control plane has closed (reports about them were refused):
    /// the gateway severs them.
    pub sever: Vec<String>,
}

/// Longest journal ID accepted, in characters.
const MAX_JOURNAL_ID: usize = 64;

impl ControlPlane {
    /// Applies a batch of `gateway`'s journal `journal` in order (`events`: ascending sequence
    /// numbers). Events at or below the journal's position are replays and skipped. An event
    /// that can never be applied (an illegal transition, a session of another gateway, a
    /// malformed event) is logged and counts as applied; a failure that may pass (the store is
    /// unavailable) stops the batch there, and the gateway sends the rest again.
    ///
    /// # Errors
    /// `bad_request` for an empty or overlong journal ID; store failures before anything was
    /// applied.
    pub async fn apply_journal(
        &self,
        gateway: &str,
        journal: &str,
        events: Vec<(u64, JournalEvent)>,
    ) -> Result<JournalAck, ControlError> {
        if journal.is_empty() || journal.len() > MAX_JOURNAL_ID {
            return Err(ControlError::bad_request(format!(
                "journal ID must be 1 to {MAX_JOURNAL_ID} characters"
            )));
        }
        let store = &self.inner.store;
        let start = store.journal_position(gateway, journal).await?;
        let mut done = start;
        let mut sever = Vec::new();
        let mut events = events
            .into_iter()
            .filter(|(seq, _)| *seq > start)
            .peekable();
        'batch: while let Some((seq, event)) = events.next() {
            // A run of consecutive reports is applied together (one transaction); each keeps
            // its own outcome, handled in journal order below.
            let mut run: Vec<(u64, Report)> = Vec::new();
            let single = match event {
                JournalEvent::Report(report) => {
                    run.push((seq, report));
                    while let Some((_, JournalEvent::Report(_))) = events.peek() {
                        if let Some((seq, JournalEvent::Report(report))) = events.next() {
                            run.push((seq, report));
                        }
                    }
                    None
                }
                other => Some((seq, other)),
            };
            let outcomes: Vec<(u64, Option<String>, Result<(), ControlError>)> = match single {
                None => {
                    let reports: Vec<Report> = run.iter().map(|(_, r)| r.clone()).collect();
                    let results = self.reports(gateway, &reports).await;
                    run.into_iter()
                        .zip(results)
                        .map(|((seq, r), res)| (seq, Some(r.session), res))
                        .collect()
                }
                Some((seq, event)) => {
                    let res = match event {
                        JournalEvent::Report(_) => Ok(()), // never: reports go in runs
                        JournalEvent::Audit {
                            session,
                            kind,
                            details_json,
                        } => match self
                            .gateway_audit_event(gateway, &session, &kind, &details_json)
                            .await
                        {
                            Ok(ev) => store
                                .append_journal_audit(gateway, journal, seq, &ev)
                                .await
                                .map(|_| ())
                                .map_err(ControlError::from),
                            Err(e) => Err(e),
                        },
                        JournalEvent::Malformed(why) => Err(ControlError::bad_request(why)),
                    };
                    vec![(seq, None, res)]
                }
            };
            for (seq, session, outcome) in outcomes {
                if seq != done + 1 {
                    tracing::warn!(
                        gateway,
                        journal,
                        expected = done + 1,
                        got = seq,
                        "journal events missing"
                    );
                }
                match outcome {
                    Ok(()) => {}
                    // Only an unavailable store may pass; anything else would block the
                    // journal for good behind one event.
                    Err(e) if e.code() == ErrorCode::Unavailable => {
                        tracing::warn!(gateway, journal, seq, error = %e, "cannot apply a journaled event now");
                        break 'batch;
                    }
                    Err(e) => {
                        if e.code() == ErrorCode::Conflict
                            && let Some(session) = &session
                            && self.is_closed(session).await
                        {
                            sever.push(session.clone());
                        }
                        tracing::warn!(gateway, journal, seq, error = %e, "journaled event rejected");
                    }
                }
                done = seq;
            }
        }
        if done > start {
            store.advance_journal(gateway, journal, done).await?;
        }
        Ok(JournalAck {
            applied_through: done,
            sever,
        })
    }

    async fn is_closed(&self, session: &str) -> bool {
        let Ok(id) = session.parse::<SessionId>() else {
            return false;
        };
        matches!(
            self.inner.store.get_session(id).await,
            Ok(Some(r)) if r.state == SessionState::Closed
        )
    }
}
