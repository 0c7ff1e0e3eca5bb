//! Mass termination through the REST API: refusals change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use serde_json::json;

use crate::test_rig::Rig;

/// A selector that is present but blank is refused (400), never dropped: dropping it would
/// widen the termination to what the other selectors match.
#[tokio::test]
async fn a_blank_selector_is_refused_and_nothing_is_terminated() {
    let rig = Rig::new().await;
    let id = rig.live_session("alice@corp").await;
    for body in [
        json!({"reason": "r", "actor": "alice@corp", "target": " "}),
        json!({"reason": "r", "actor": "", "target": "web-01.prod"}),
        json!({"reason": "r", "actor": "alice@corp", "target_tag": "   "}),
        json!({"reason": "r", "actor": "alice@corp", "protocol": ""}),
        json!({"reason": "r", "target_tag": "env="}),
        json!({"reason": "r", "target_tag": " = prod"}),
        json!({"reason": "r"}),
        json!({"reason": " ", "actor": "alice@corp"}),
    ] {
        let (status, resp) = rig
            .call(
                "admin",
                "POST",
                "/api/v1/sessions/terminate",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body} -> {resp}");
        assert_eq!(resp["error"], "bad_request", "{resp}");
    }
    let (_, s) = rig
        .call("admin", "GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(s["state"], "active", "{s}");
    // Spaces around a value are dropped: " alice@corp " is alice.
    let (status, resp) = rig
        .call(
            "admin",
            "POST",
            "/api/v1/sessions/terminate",
            Some(json!({"reason": "r", "actor": " alice@corp ", "target_tag": " env = prod "})),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    // Matched (the rig has no gateway to sever it: it fails there, or ends as terminated).
    let n = resp["terminated"].as_array().unwrap().len() + resp["failed"].as_array().unwrap().len();
    assert_eq!(n, 1, "{resp}");
}
