//! The control-plane test rig: the real REST router, control plane and a SQLite store in a
//! temporary directory, with a few users, a target and policies applied; sessions are admitted
//! by `request_session` and walked to `active` as the gateway reports would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use wg_domain::SessionState;
use wg_store::{SessionPatch, Store};

use crate::service::SessionAsk;
use crate::vault::Vault;
use crate::{ControlConfig, ControlPlane};

const RESOURCES: &str = r#"
kind: user
name: alice@corp
groups: [sre]
---
kind: user
name: dan@corp
groups: [oncall]
---
kind: user
name: erin@corp
---
kind: user
name: olga@corp
role: operator
---
kind: servicePrincipal
name: svc_deploy
---
kind: target
name: web-01.prod
address: 127.0.0.1:22
protocol: ssh
tags: {env: prod}
accounts: [{name: deploy, credential: vault/ssh/deploy}]
---
kind: policy
name: prod-sre
subjects: [group:sre]
targets: {tags: {env: prod}}
protocols: [ssh]
accounts: [deploy]
---
kind: policy
name: prod-oncall
subjects: [group:oncall]
targets: {names: [web-01.prod]}
protocols: [ssh]
accounts: [deploy]
concurrency: {max: 5}
"#;

pub(crate) struct Rig {
    pub(crate) control: ControlPlane,
    pub(crate) router: Router,
    pub(crate) tokens: HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub(crate) async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = Store::connect(&url).await.unwrap();
        let control = ControlPlane::new(
            store,
            Vault::from_key(&[7u8; 32]).unwrap(),
            ControlConfig::new(dir.path().join("recordings")),
        );
        let admin = control.bootstrap_admin(Vec::new()).await.unwrap().unwrap();
        control.apply(RESOURCES, "admin@local").await.unwrap();
        control
            .vault_put("vault/ssh/deploy", "password", "hunter2", "admin@local")
            .await
            .unwrap();
        let mut tokens = HashMap::from([("admin", admin)]);
        for (who, name) in [
            ("alice", "alice@corp"),
            ("dan", "dan@corp"),
            ("erin", "erin@corp"),
            ("olga", "olga@corp"),
        ] {
            let t = control.create_token(name, "admin@local").await.unwrap();
            tokens.insert(who, t.token);
        }
        Rig {
            router: crate::api::router(control.clone()),
            control,
            tokens,
            _dir: dir,
        }
    }

    /// `METHOD path` as `who` (a key of `tokens`, or `""` for no token) → (status, JSON body).
    pub(crate) async fn call(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = self.tokens.get(who) {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    /// A session of `actor` admitted by policy and reported active.
    pub(crate) async fn live_session(&self, actor: &str) -> String {
        let admitted = self
            .control
            .request_session(SessionAsk {
                gateway: "gw-1".into(),
                gateway_address: None,
                actor: actor.into(),
                target: "web-01.prod".into(),
                account: None,
                protocol: "ssh".into(),
                client_ip: None,
                client_software: None,
                gateway_max_active: None,
                interactive: false,
            })
            .await
            .unwrap();
        for (from, to) in [
            (SessionState::Approved, SessionState::Opened),
            (SessionState::Opened, SessionState::Active),
        ] {
            assert!(
                self.control
                    .store()
                    .transition_session(
                        admitted.session,
                        from,
                        to,
                        // An interactive shell: only a session with a terminal can be handed off.
                        &SessionPatch {
                            pty_term: Some("xterm".into()),
                            pty_cols: Some(80),
                            pty_rows: Some(24),
                            ..Default::default()
                        },
                        &[],
                    )
                    .await
                    .unwrap()
            );
        }
        admitted.session.to_string()
    }

    pub(crate) async fn owner(&self, id: &str) -> (String, Option<String>) {
        let o = self
            .control
            .session_owner(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        (o.actor, o.policy)
    }

    /// The stored record of session `id`.
    pub(crate) async fn record(&self, id: &str) -> wg_store::SessionRecord {
        self.control
            .store()
            .get_session(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    pub(crate) async fn events(&self, id: &str, kind: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                "admin",
                "GET",
                &format!("/api/v1/audit?session={id}&kind={kind}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        body["events"].as_array().unwrap().clone()
    }

    pub(crate) async fn used(&self, scope: &str, key: &str) -> i64 {
        let (_, body) = self
            .call(
                "admin",
                "GET",
                &format!("/api/v1/limits/usage?{scope}={key}"),
                None,
            )
            .await;
        body["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["scope"] == scope && u["key"] == key)
            .map_or(0, |u| u["used"].as_i64().unwrap())
    }
}
