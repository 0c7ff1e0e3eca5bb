//! Ownership handoff and tokens through the REST API (the real router, control plane and a
//! SQLite store: [`crate::test_rig::Rig`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

use wg_domain::SessionState;

use crate::test_rig::Rig;

fn handoff_body(to: &str) -> Option<Value> {
    Some(json!({"to": to, "reason": "shift change, incident INC-4412"}))
}

#[tokio::test]
async fn the_owner_hands_off_and_the_new_owner_accepts() {
    let rig = Rig::new().await;
    let id = rig.live_session("alice@corp").await;
    let path = format!("/api/v1/sessions/{id}/handoff");
    let (status, h) = rig
        .call("alice", "POST", &path, handoff_body("dan@corp"))
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["state"], "pending");
    assert_eq!(h["from"], "alice@corp");
    assert_eq!(h["to"], "dan@corp");
    assert_eq!(h["requested_by"], "alice@corp");
    assert_eq!(h["ttl_seconds"], 300);

    // The session views show the pending offer.
    let (_, view) = rig
        .call("admin", "GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(view["handoff"]["to"], "dan@corp");
    assert_eq!(view["handoff"]["state"], "pending");
    let (_, list) = rig.call("admin", "GET", "/api/v1/sessions", None).await;
    assert_eq!(list["sessions"][0]["handoff"]["to"], "dan@corp");

    let (status, done) = rig
        .call(
            "dan",
            "POST",
            &format!("/api/v1/sessions/{id}/accept"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "accepted");
    assert_eq!(done["policy"], "prod-oncall");
    assert_eq!(
        rig.owner(&id).await,
        ("dan@corp".into(), Some("prod-oncall".into()))
    );
    let (_, view) = rig
        .call("admin", "GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(view["actor"], "dan@corp");
    assert_eq!(view["actor_groups"], json!(["oncall"]));
    assert_eq!(view["handoff"], Value::Null);

    // Slots moved with the owner.
    assert_eq!(rig.used("actor", "alice@corp").await, 0);
    assert_eq!(rig.used("actor", "dan@corp").await, 1);
    assert_eq!(rig.used("policy", "prod-sre").await, 0);
    assert_eq!(rig.used("policy", "prod-oncall").await, 1);

    // Both identities, the reason and the new policy are on the record.
    let requested = rig.events(&id, "session.handoff.requested").await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["actor"], "alice@corp");
    assert_eq!(requested[0]["reason"], "shift change, incident INC-4412");
    assert_eq!(requested[0]["details"]["from"], "alice@corp");
    assert_eq!(requested[0]["details"]["to"], "dan@corp");
    assert_eq!(requested[0]["details"]["by"], "alice@corp");
    assert!(requested[0]["details"]["expires_at"].is_string());
    let accepted = rig.events(&id, "session.handoff.accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["actor"], "dan@corp");
    assert_eq!(accepted[0]["reason"], "shift change, incident INC-4412");
    assert_eq!(accepted[0]["details"]["from"], "alice@corp");
    assert_eq!(accepted[0]["details"]["to"], "dan@corp");
    assert_eq!(accepted[0]["details"]["policy"], "prod-oncall");
    assert_eq!(accepted[0]["details"]["previous_policy"], "prod-sre");

    // Accepting twice changes nothing; the new owner may hand it on (here back to alice).
    let (status, again) = rig
        .call(
            "dan",
            "POST",
            &format!("/api/v1/sessions/{id}/accept"),
            None,
        )
        .await;
    assert_eq!((status, again["error"].as_str()), (409, Some("conflict")));
    let (status, _) = rig
        .call("dan", "POST", &path, handoff_body("alice@corp"))
        .await;
    assert_eq!(status, 200);
    let (status, _) = rig
        .call(
            "alice",
            "POST",
            &format!("/api/v1/sessions/{id}/accept"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        rig.owner(&id).await,
        ("alice@corp".into(), Some("prod-sre".into()))
    );
    let (_, verify) = rig.call("admin", "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(verify["ok"], true);
}

#[tokio::test]
async fn refused_handoffs_leave_the_owner_unchanged() {
    let rig = Rig::new().await;
    let id = rig.live_session("alice@corp").await;
    let path = format!("/api/v1/sessions/{id}/handoff");
    let accept = format!("/api/v1/sessions/{id}/accept");
    let error = |v: &Value| v["error"].as_str().unwrap_or_default().to_owned();

    // The incoming owner must hold a permitting policy, exist, and differ from the owner.
    let (status, e) = rig
        .call("alice", "POST", &path, handoff_body("erin@corp"))
        .await;
    assert_eq!((status, error(&e)), (403, "policy_denied".into()), "{e}");
    let (status, e) = rig
        .call("alice", "POST", &path, handoff_body("nobody@corp"))
        .await;
    assert_eq!((status, error(&e)), (404, "not_found".into()));
    let (status, _) = rig
        .call("alice", "POST", &path, handoff_body("alice@corp"))
        .await;
    assert_eq!(status, 400);
    // A reason, a sane TTL, known fields.
    for body in [
        json!({"to": "dan@corp", "reason": "  "}),
        json!({"to": "dan@corp", "reason": "r", "ttl_seconds": 0}),
        json!({"to": "dan@corp", "reason": "r", "ttl_seconds": 3601}),
        json!({"to": "dan@corp", "reason": "r", "ttl": "5m"}),
        json!({"reason": "r"}),
    ] {
        let (status, e) = rig.call("alice", "POST", &path, Some(body.clone())).await;
        assert_eq!(
            (status, error(&e)),
            (400, "bad_request".into()),
            "{body}: {e}"
        );
    }
    // Only the owner or an operator may offer it: not another plain user, not anonymously.
    let (status, e) = rig
        .call("dan", "POST", &path, handoff_body("dan@corp"))
        .await;
    assert_eq!((status, error(&e)), (403, "forbidden".into()));
    let (status, _) = rig.call("", "POST", &path, handoff_body("dan@corp")).await;
    assert_eq!(status, 401);
    let (status, h) = rig
        .call("olga", "POST", &path, handoff_body("dan@corp"))
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["requested_by"], "olga@corp");
    assert_eq!(h["from"], "alice@corp");
    // One pending offer per session.
    let (status, e) = rig
        .call("alice", "POST", &path, handoff_body("dan@corp"))
        .await;
    assert_eq!((status, error(&e)), (409, "conflict".into()));
    // Only the addressee accepts.
    let (status, _) = rig.call("erin", "POST", &accept, None).await;
    assert_eq!(status, 404);
    let (status, _) = rig.call("olga", "POST", &accept, None).await;
    assert_eq!(status, 404);
    // dan loses his policy before accepting: refused, alice keeps the session.
    rig.control
        .delete_resource(
            wg_domain::resources::Kind::Policy,
            "prod-oncall",
            "admin@local",
        )
        .await
        .unwrap();
    let (status, e) = rig.call("dan", "POST", &accept, None).await;
    assert_eq!((status, error(&e)), (403, "policy_denied".into()), "{e}");
    assert_eq!(
        rig.owner(&id).await,
        ("alice@corp".into(), Some("prod-sre".into()))
    );
    assert_eq!(rig.used("actor", "alice@corp").await, 1);
    assert_eq!(rig.used("actor", "dan@corp").await, 0);
    assert!(rig.events(&id, "session.handoff.accepted").await.is_empty());

    // A session that is not live cannot be handed off.
    rig.control.terminate(&id, "done", "admin@local").await.ok();
    let closing = rig.record(&id).await;
    assert!(matches!(
        closing.state,
        SessionState::Closing | SessionState::Closed
    ));
    let (status, e) = rig
        .call("alice", "POST", &path, handoff_body("svc_deploy"))
        .await;
    assert_eq!((status, error(&e)), (409, "conflict".into()), "{e}");
}

#[tokio::test]
async fn an_accept_after_the_window_is_refused_as_expired_once() {
    let rig = Rig::new().await;
    let id = rig.live_session("alice@corp").await;
    let body = json!({"to": "dan@corp", "reason": "shift change", "ttl_seconds": 1});
    let (status, h) = rig
        .call(
            "alice",
            "POST",
            &format!("/api/v1/sessions/{id}/handoff"),
            Some(body),
        )
        .await;
    assert_eq!((status, h["ttl_seconds"].as_u64()), (200, Some(1)));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let accept = format!("/api/v1/sessions/{id}/accept");
    for _ in 0..2 {
        let (status, e) = rig.call("dan", "POST", &accept, None).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (410, Some("handoff_expired")),
            "{e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("alice@corp keeps the session")
        );
    }
    assert_eq!(
        rig.owner(&id).await,
        ("alice@corp".into(), Some("prod-sre".into()))
    );
    let expired = rig.events(&id, "session.handoff.expired").await;
    assert_eq!(expired.len(), 1, "expired once");
    assert_eq!(expired[0]["actor"], "dan@corp");
    assert_eq!(rig.control.expire_handoffs().await.unwrap(), 0);
    // The view no longer shows it; a new offer can be made.
    let (_, view) = rig
        .call("admin", "GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(view["handoff"], Value::Null);
    let (status, _) = rig
        .call(
            "alice",
            "POST",
            &format!("/api/v1/sessions/{id}/handoff"),
            handoff_body("dan@corp"),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_sweeper_expires_unanswered_offers() {
    let rig = Rig::new().await;
    let id = rig.live_session("alice@corp").await;
    let body = json!({"to": "dan@corp", "reason": "shift change", "ttl_seconds": 1});
    let (status, _) = rig
        .call(
            "alice",
            "POST",
            &format!("/api/v1/sessions/{id}/handoff"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        rig.control.expire_handoffs().await.unwrap(),
        0,
        "not yet due"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(rig.control.expire_handoffs().await.unwrap(), 1);
    let expired = rig.events(&id, "session.handoff.expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["actor"], "system");
    let (status, e) = rig
        .call(
            "dan",
            "POST",
            &format!("/api/v1/sessions/{id}/accept"),
            None,
        )
        .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (410, Some("handoff_expired"))
    );
    assert_eq!(rig.events(&id, "session.handoff.expired").await.len(), 1);
}

#[tokio::test]
async fn an_accept_over_the_new_owners_limit_is_refused() {
    let rig = Rig::new().await;
    rig.control
        .apply(
            "kind: user\nname: dan@corp\ngroups: [oncall]\nmaxSessionsPerUser: 1\n",
            "admin@local",
        )
        .await
        .unwrap();
    let _dans = rig.live_session("dan@corp").await;
    let id = rig.live_session("alice@corp").await;
    let (status, _) = rig
        .call(
            "alice",
            "POST",
            &format!("/api/v1/sessions/{id}/handoff"),
            handoff_body("dan@corp"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, e) = rig
        .call(
            "dan",
            "POST",
            &format!("/api/v1/sessions/{id}/accept"),
            None,
        )
        .await;
    assert_eq!(status, 429, "{e}");
    assert_eq!(e["error"], "concurrency_limit");
    assert_eq!(e["scope"], "actor");
    assert_eq!(e["limit"], 1);
    assert_eq!(e["target"], "web-01.prod");
    assert_eq!(rig.owner(&id).await.0, "alice@corp");
    assert_eq!(rig.used("actor", "alice@corp").await, 1);
    assert_eq!(rig.used("actor", "dan@corp").await, 1);
}

#[tokio::test]
async fn tokens_for_principals_and_whoami() {
    let rig = Rig::new().await;
    let (status, me) = rig.call("dan", "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 200);
    assert_eq!(me, json!({"principal": "dan@corp", "role": null}));
    let (_, me) = rig.call("olga", "GET", "/api/v1/whoami", None).await;
    assert_eq!(me["role"], "operator");
    let (status, _) = rig.call("", "GET", "/api/v1/whoami", None).await;
    assert_eq!(status, 401);

    // Admins issue tokens for existing users and service principals; a token is shown once.
    let (status, t) = rig
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"principal": "svc_deploy"})),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["principal"], "svc_deploy");
    let token = t["token"].as_str().unwrap();
    assert!(token.starts_with("wgt_") && token.len() == 52, "{token}");
    let (principal, role) = rig
        .control
        .principal_for_token(token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((principal.as_str(), role), ("svc_deploy", None));
    let (status, e) = rig
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"principal": "ghost@corp"})),
        )
        .await;
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")));
    let (status, _) = rig
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"principal": "x", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 400);
    for who in ["dan", "olga"] {
        let (status, _) = rig
            .call(
                who,
                "POST",
                "/api/v1/tokens",
                Some(json!({"principal": "dan@corp"})),
            )
            .await;
        assert_eq!(status, 403, "{who}");
    }
    // Plain users are not auditors (they list their own sessions only, see
    // `plain_users_see_their_own_sessions_only`).
    let (status, _) = rig.call("dan", "GET", "/api/v1/audit", None).await;
    assert_eq!(status, 403);
    let (_, audit) = rig
        .call("admin", "GET", "/api/v1/audit?kind=token.created", None)
        .await;
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert!(!audit.to_string().contains(token));
}

#[test]
fn the_openapi_document_describes_the_new_routes() {
    let doc = serde_json::to_value(crate::api::spec()).unwrap();
    for path in [
        "/api/v1/sessions/{id}/handoff",
        "/api/v1/sessions/{id}/accept",
        "/api/v1/tokens",
        "/api/v1/whoami",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "HandoffRequest",
        "HandoffView",
        "TokenCreateRequest",
        "TokenCreated",
        "WhoAmI",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}

/// `GET /api/v1/sessions` pages with `limit` and `cursor`: every live session exactly once, in
/// order, however the pages fall; bad page parameters are refused.
#[tokio::test]
async fn the_session_list_pages_with_a_cursor() {
    let rig = Rig::new().await;
    let mut ids = Vec::new();
    for actor in [
        "alice@corp",
        "dan@corp",
        "alice@corp",
        "dan@corp",
        "alice@corp",
    ] {
        ids.push(rig.live_session(actor).await);
    }
    let (_, all) = rig.call("admin", "GET", "/api/v1/sessions", None).await;
    let newest_first: Vec<String> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let mut listed = newest_first.clone();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    assert!(all.get("next_cursor").is_none(), "{all}");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..4 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/sessions?limit=2&cursor={c}"),
            None => "/api/v1/sessions?limit=2".to_owned(),
        };
        let (status, page) = rig.call("admin", "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for s in page["sessions"].as_array().unwrap() {
            paged.push(s["id"].as_str().unwrap().to_owned());
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(paged, newest_first);
    // Filters hold across pages.
    let (_, dan) = rig
        .call(
            "admin",
            "GET",
            "/api/v1/sessions?actor=dan@corp&limit=1",
            None,
        )
        .await;
    let c = dan["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = rig
        .call(
            "admin",
            "GET",
            &format!("/api/v1/sessions?actor=dan@corp&limit=1&cursor={c}"),
            None,
        )
        .await;
    assert_eq!(rest["sessions"][0]["actor"], "dan@corp");
    // A page that ends exactly with the last session says there is no more.
    let (_, five) = rig
        .call("admin", "GET", "/api/v1/sessions?limit=5", None)
        .await;
    assert!(five.get("next_cursor").is_none(), "{five}");
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "cursor=nonsense",
        "cursor=12.sess_zz",
    ] {
        let (status, e) = rig
            .call("admin", "GET", &format!("/api/v1/sessions?{bad}"), None)
            .await;
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e["error"].is_string(), "{bad}: JSON error shape: {e}");
    }
}

/// Plain users see the sessions they own, and only those (PRODUCT.md §9); an auditor or an
/// operator sees every session.
#[tokio::test]
async fn plain_users_see_their_own_sessions_only() {
    let rig = Rig::new().await;
    let mine = rig.live_session("alice@corp").await;
    let theirs = rig.live_session("dan@corp").await;
    let ids = |v: &Value| -> Vec<String> {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, list) = rig.call("alice", "GET", "/api/v1/sessions", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), vec![mine.clone()]);
    let (status, _) = rig
        .call("alice", "GET", "/api/v1/sessions?actor=dan@corp", None)
        .await;
    assert_eq!(status, 403);
    let (status, own) = rig
        .call("alice", "GET", &format!("/api/v1/sessions/{mine}"), None)
        .await;
    assert_eq!(status, 200, "{own}");
    // Another's session is not disclosed, not even its existence.
    let (status, e) = rig
        .call("alice", "GET", &format!("/api/v1/sessions/{theirs}"), None)
        .await;
    assert_eq!(status, 404, "{e}");
    let (_, all) = rig.call("olga", "GET", "/api/v1/sessions", None).await;
    let mut all = ids(&all);
    all.sort();
    let mut both = vec![mine, theirs];
    both.sort();
    assert_eq!(all, both);
}
