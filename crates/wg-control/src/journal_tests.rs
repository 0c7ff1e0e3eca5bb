//! A gateway's journal applied in batches ([`ControlPlane::apply_journal`]): a run of lifecycle
//! reports goes in one transaction, yet each report keeps the outcome and the effects it has when
//! applied alone, in journal order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wg_domain::SessionState;
use wg_domain::api::SealInfo;
use wg_domain::lifecycle::EndReason;

use crate::test_rig::Rig;
use crate::{JournalEvent, Report};

fn report(session: &str, state: &str) -> Report {
    Report {
        session: session.to_owned(),
        state: state.to_owned(),
        time_ms: wg_domain::time::now_millis(),
        ..Report::default()
    }
}

fn closed(session: &str, exit_status: i32, sealed: bool) -> Report {
    Report {
        end_reason: Some(EndReason::ClientExit),
        exit_status: Some(exit_status),
        recording: sealed.then(|| SealInfo {
            chunks: 1,
            bytes: 42,
            sha256: "ab".repeat(32),
            status: "sealed".into(),
        }),
        ..report(session, "closed")
    }
}

fn numbered(reports: Vec<Report>) -> Vec<(u64, JournalEvent)> {
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, JournalEvent::Report(r)))
        .collect()
}

#[tokio::test]
async fn a_run_of_reports_has_each_reports_own_outcome_and_effects() {
    let rig = Rig::new().await;
    let a = rig.live_session("alice@corp").await;
    let b = rig.live_session("dan@corp").await;
    let c = rig.live_session("alice@corp").await;
    assert_eq!(rig.used("actor", "alice@corp").await, 2);
    let batch = numbered(vec![
        // a: two reports of one session in one run, the second planned from the first.
        report(&a, "closing"),
        closed(&a, 0, true),
        // b: a state the lifecycle cannot reach from `active`: rejected, b untouched.
        report(&b, "opened"),
        // A malformed session ID: rejected.
        report("sess_nope", "closed"),
        // c: `closed` straight from `active` walks through `closing` in the same batch.
        closed(&c, 3, false),
    ]);
    let ack = rig
        .control
        .apply_journal("gw-1", "journal-1", batch.clone())
        .await
        .unwrap();
    assert_eq!(ack.applied_through, 5, "rejected reports count as applied");
    assert_eq!(rig.record(&b).await.state, SessionState::Active);
    let a_rec = rig.record(&a).await;
    assert_eq!(a_rec.state, SessionState::Closed);
    assert_eq!(a_rec.end_reason, Some(EndReason::ClientExit));
    assert_eq!(a_rec.recording_status, "sealed");
    assert_eq!(a_rec.exit_status, Some(0));
    let c_rec = rig.record(&c).await;
    assert_eq!(c_rec.state, SessionState::Closed);
    assert_eq!(c_rec.exit_status, Some(3));
    assert_eq!(rig.used("actor", "alice@corp").await, 0, "slots freed once");
    assert_eq!(rig.used("actor", "dan@corp").await, 1);
    for id in [&a, &c] {
        assert_eq!(rig.events(id, "session.closed").await.len(), 1);
    }
    assert_eq!(rig.events(&a, "recording.sealed").await.len(), 1);
    assert!(rig.events(&c, "recording.sealed").await.is_empty());
    // The same batch again (a replica handed it twice, or a replay): nothing applies twice.
    let again = rig
        .control
        .apply_journal("gw-1", "journal-1", batch)
        .await
        .unwrap();
    assert_eq!(again.applied_through, 5);
    for id in [&a, &c] {
        assert_eq!(rig.events(id, "session.closed").await.len(), 1);
    }
    let verify = rig.control.audit_verify().await.unwrap();
    assert!(verify.ok, "{:?}", verify.error);
}

#[tokio::test]
async fn reports_about_another_gateways_sessions_change_nothing() {
    let rig = Rig::new().await;
    let a = rig.live_session("alice@corp").await;
    let results = rig
        .control
        .reports("gw-2", &[report(&a, "closing"), closed(&a, 0, false)])
        .await;
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(
            r.as_ref().unwrap_err().code(),
            wg_domain::ErrorCode::Forbidden
        );
    }
    assert_eq!(rig.record(&a).await.state, SessionState::Active);
    assert_eq!(rig.used("actor", "alice@corp").await, 1);
}

/// Moves session `id` to `closing` as an operator's termination does (end reason
/// `terminated`, the operator's reason as the detail).
async fn terminated_by_operator(rig: &Rig, id: &str) {
    assert!(
        rig.control
            .store()
            .transition_session(
                id.parse().unwrap(),
                SessionState::Active,
                SessionState::Closing,
                &wg_store::SessionPatch {
                    end_reason: Some(EndReason::Terminated),
                    end_detail: Some("operator said so".into()),
                    ..Default::default()
                },
                &[],
            )
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn reports_overtaken_by_a_termination_keep_its_detail() {
    let rig = Rig::new().await;
    let a = rig.live_session("alice@corp").await;
    // A termination moves the session to `closing` while the gateway's own reports are on
    // their way: its `closing` is then already applied, its `closed` (which names the
    // termination as the end) closes the session.
    terminated_by_operator(&rig, &a).await;
    let results = rig
        .control
        .reports(
            "gw-1",
            &[
                report(&a, "closing"),
                Report {
                    end_reason: Some(EndReason::Terminated),
                    end_detail: Some("operator said so".into()),
                    ..report(&a, "closed")
                },
            ],
        )
        .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let rec = rig.record(&a).await;
    assert_eq!(rec.state, SessionState::Closed);
    assert_eq!(rec.end_reason, Some(EndReason::Terminated));
    assert_eq!(rec.end_detail.as_deref(), Some("operator said so"));
    assert_eq!(rig.events(&a, "session.closed").await.len(), 1);
}

/// S8 with a race: the operator's termination moved the session to `closing`, but its command
/// exited on its own before the gateway's close took effect. The record tells the real end (the
/// exit status, no operator detail), not a termination that never reached the session.
#[tokio::test]
async fn a_session_that_ended_on_its_own_before_its_termination_keeps_its_real_end() {
    let rig = Rig::new().await;
    let a = rig.live_session("alice@corp").await;
    terminated_by_operator(&rig, &a).await;
    let results = rig.control.reports("gw-1", &[closed(&a, 5, false)]).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let rec = rig.record(&a).await;
    assert_eq!(rec.state, SessionState::Closed);
    assert_eq!(rec.end_reason, Some(EndReason::ClientExit));
    assert_eq!(rec.exit_status, Some(5));
    assert_eq!(
        rec.end_detail.as_deref(),
        Some(""),
        "the operator's detail is gone"
    );
    let (status, view) = rig
        .call("admin", "GET", &format!("/api/v1/sessions/{a}"), None)
        .await;
    assert_eq!(status, 200);
    assert!(view["end_detail"].is_null(), "{view}");
    let closed = rig.events(&a, "session.closed").await;
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0]["details"]["end_reason"], "client_exit",
        "{closed:?}"
    );
}
