//! The store suite: every test runs once against SQLite (a file in a temporary directory) and once
//! against PostgreSQL (a fresh database per test, dropped afterwards even when the test fails).
//!
//! PostgreSQL: `WG_TEST_PG_URL` is the admin URL (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it is unreachable the PostgreSQL variants fail, unless `WG_TEST_SKIP_PG=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use sqlx::{AnyConnection, Connection, Row};
use wg_domain::SessionId;
use wg_domain::audit::{ChainVerifier, GENESIS, NewAuditEvent, kinds};
use wg_domain::handoff::HandoffState;
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::resources::{Kind, Limits, Resource, Target, User};
use wg_store::{
    AuditFilter, HandoffAcceptOutcome, HandoffAcceptance, HandoffFilter, HandoffRequestOutcome,
    JoinOutcome, JoinTokenRecord, NewHandoff, SealedSecret, SessionFilter, SessionPatch,
    SessionRecord, SlotClaim, SlotsFull, Store, StoreError, TokenRecord,
};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database for one test; dropped (PostgreSQL) or deleted (SQLite) when this goes away.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

/// A PostgreSQL database created for one test and force-dropped on drop, also on panic.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside the test's runtime: use a thread with a runtime of its own.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = AnyConnection::connect(&admin_url).await?;
                sqlx::Executor::execute(
                    &mut admin,
                    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                )
                .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(joined, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {joined:?}", self.name);
        }
    }
}

fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        // A subdirectory-free path: the store must create the file itself.
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        TestDb {
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    /// A fresh database, or `None` when PostgreSQL is unreachable and `WG_TEST_SKIP_PG=1`.
    async fn postgres() -> Option<TestDb> {
        install_drivers();
        let admin_url =
            std::env::var("WG_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned());
        let mut admin = match AnyConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("WG_TEST_SKIP_PG").as_deref() == Ok("1") {
                    eprintln!("skipping the PostgreSQL variant: {admin_url} unreachable: {e}");
                    return None;
                }
                panic!(
                    "PostgreSQL at {admin_url} is unreachable ({e}); set WG_TEST_SKIP_PG=1 to skip"
                );
            }
        };
        let name = format!("wgtest_{}", wg_domain::ids::random_hex(8).unwrap());
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        Some(TestDb {
            url: with_database(&admin_url, &name),
            _dir: None,
            _pg: Some(PgDatabase { admin_url, name }),
        })
    }

    async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }
}

/// Runs `$test(db: &TestDb)` once per engine.
macro_rules! both_engines {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let db = super::TestDb::sqlite();
                    super::$test(&db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if let Some(db) = super::TestDb::postgres().await {
                        super::$test(&db).await;
                    }
                }
            }
        )*
    };
}

both_engines!(
    migrations_are_idempotent,
    concurrent_connects_migrate_once,
    apply_reports_created_configured_unchanged,
    failing_apply_leaves_nothing,
    resources_get_list_delete,
    vault_put_get_list,
    tokens_put_get,
    tokens_issued_with_an_audit_event,
    sessions_insert_get_and_filters,
    insert_session_with_failing_audit_is_atomic,
    transition_is_compare_and_set,
    update_session_never_touches_closed_sessions,
    update_sessions_applies_a_batch_in_one_go,
    audit_append_list_head_and_verify,
    concurrent_appends_form_one_gap_free_chain,
    two_handles_extend_one_chain,
    concurrent_transitions_from_one_state_have_one_winner,
    slots_are_taken_atomically_and_released_once,
    racing_approvals_never_exceed_a_limit,
    handoff_accept_moves_owner_policy_and_slots,
    handoff_accept_after_expiry_is_refused_and_expires_once,
    handoff_accept_refused_when_a_scope_of_the_new_owner_is_full,
    concurrent_handoff_accepts_have_one_winner,
    handoffs_need_a_live_session_and_end_with_it,
    join_tokens_are_single_use_and_expire,
    an_unused_join_token_can_be_revoked,
    a_gateway_renews_with_its_current_or_previous_certificate,
    a_join_that_cannot_be_certified_spends_nothing,
    replicas_share_the_first_stored_ca,
    racing_joins_with_one_token_have_one_winner,
    a_gateway_is_lost_once_and_comes_back,
    journal_events_apply_once_and_positions_only_advance,
    a_late_seal_is_recorded_once_and_only_for_a_closed_session,
    many_transitions_commit_together_each_a_compare_and_set,
    a_batch_of_ending_sessions_frees_each_slot_once,
);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn user(name: &str, groups: &[&str]) -> Resource {
    Resource::User(User {
        name: name.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ssh_keys: Vec::new(),
        mfa: None,
        max_sessions_per_user: None,
        role: None,
    })
}

fn target(name: &str, address: &str) -> Resource {
    Resource::Target(Target {
        name: name.to_owned(),
        address: address.to_owned(),
        protocol: wg_domain::resources::Protocol::Ssh,
        tags: [("env".to_owned(), "prod".to_owned())]
            .into_iter()
            .collect(),
        accounts: Vec::new(),
        host_key: None,
        max_sessions_per_target: Some(3),
    })
}

fn session(created_ms: i64, actor: &str, target: &str) -> SessionRecord {
    SessionRecord {
        id: SessionId::generate().unwrap(),
        state: SessionState::Requested,
        actor: actor.to_owned(),
        actor_groups: vec!["ops".to_owned(), "dba".to_owned()],
        target: target.to_owned(),
        target_tags: [("env".to_owned(), "prod".to_owned())].into(),
        target_address: "10.0.0.1:22".to_owned(),
        protocol: "ssh".to_owned(),
        account: None,
        vault_path: None,
        policy: None,
        mfa: Some("totp".to_owned()),
        gateway: "gw-1".to_owned(),
        gateway_address: Some("10.0.0.9:7443".to_owned()),
        client_ip: Some("192.0.2.7".to_owned()),
        client_geo: None,
        client_software: Some("SSH-2.0-OpenSSH_9.6".to_owned()),
        pty_term: None,
        pty_cols: None,
        pty_rows: None,
        recording_mode: "full".to_owned(),
        recording_chunks: 0,
        recording_bytes: 0,
        recording_status: "none".to_owned(),
        recording_sha256: None,
        created_ms,
        opened_ms: None,
        last_input_ms: created_ms,
        ended_ms: None,
        end_reason: None,
        end_detail: None,
        exit_status: None,
    }
}

async fn all_audit(store: &Store) -> Vec<wg_domain::audit::AuditEvent> {
    store.list_audit(&AuditFilter::default()).await.unwrap()
}

/// How many audit events of `kind` the store holds.
async fn count_audit(store: &Store, kind: &str) -> usize {
    all_audit(store)
        .await
        .into_iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// Verifies the whole chain against the head; returns the number of events.
async fn verify_chain(store: &Store) -> i64 {
    let events = all_audit(store).await;
    let (head_seq, head_hash) = store.audit_head().await.unwrap();
    let mut v = ChainVerifier::default();
    for e in &events {
        v.push(e).unwrap();
    }
    v.finish(head_seq, &head_hash).unwrap()
}

async fn raw(url: &str) -> AnyConnection {
    install_drivers();
    let url = if url.starts_with("sqlite:") {
        format!("{url}?mode=rw")
    } else {
        url.to_owned()
    };
    AnyConnection::connect(&url).await.unwrap()
}

async fn exec(conn: &mut AnyConnection, sql: &str) {
    sqlx::Executor::execute(&mut *conn, sql).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn migrations_are_idempotent(db: &TestDb) {
    let first = db.store().await;
    assert_eq!(first.audit_head().await.unwrap(), (0, GENESIS.to_owned()));
    first
        .apply_resources(&[user("alice@corp", &["ops"])], "admin@local")
        .await
        .unwrap();
    let engine = first.engine();
    assert!(engine == "sqlite" || engine == "postgres");
    assert_eq!(db.url.starts_with("sqlite:"), engine == "sqlite");
    first.close().await;

    let second = db.store().await;
    assert!(
        second
            .get_resource(Kind::User, "alice@corp")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(verify_chain(&second).await, 1);

    let mut conn = raw(&db.url).await;
    let rows =
        sqlx::query("SELECT version, name, applied_ms FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    // Versions run 1, 2, 3, … without gaps; the first ones are these.
    assert!(rows.len() >= 3, "{} migrations", rows.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<i64, _>("version"), i64::try_from(i).unwrap() + 1);
    }
    for (row, name) in rows.iter().zip(["initial", "session_slots", "handoffs"]) {
        assert_eq!(row.get::<String, _>("name"), name);
    }
    assert!(rows[0].get::<i64, _>("applied_ms") > 0);
    if engine == "sqlite" {
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode.to_ascii_lowercase(), "wal");
    }
    conn.close().await.unwrap();
}

async fn concurrent_connects_migrate_once(db: &TestDb) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().unwrap());
    }
    let mut conn = raw(&db.url).await;
    let row = sqlx::query("SELECT COUNT(*) AS n, MAX(version) AS v FROM schema_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (n, newest): (i64, i64) = (row.get("n"), row.get("v"));
    assert!(n >= 3, "{n} migrations");
    assert_eq!(n, newest, "every migration applied exactly once");
    conn.close().await.unwrap();
    for s in &stores {
        assert_eq!(s.audit_head().await.unwrap(), (0, GENESIS.to_owned()));
    }
}

async fn apply_reports_created_configured_unchanged(db: &TestDb) {
    let store = db.store().await;
    let actions = |applied: Vec<wg_domain::api::AppliedResource>| {
        applied
            .into_iter()
            .map(|a| format!("{} {} {}", a.kind, a.name, a.action))
            .collect::<Vec<_>>()
    };

    let first = store
        .apply_resources(
            &[
                user("alice@corp", &["ops"]),
                target("web-01", "10.0.0.1:22"),
            ],
            "admin@local",
        )
        .await
        .unwrap();
    assert_eq!(
        actions(first),
        vec!["user alice@corp created", "target web-01 created"]
    );

    let second = store
        .apply_resources(
            &[
                user("alice@corp", &["ops", "dba"]),
                target("web-01", "10.0.0.1:22"),
                Resource::Limits(Limits {
                    name: "default".to_owned(),
                    max_sessions_per_user: Some(2),
                    max_sessions_per_target: None,
                }),
            ],
            "bob@corp",
        )
        .await
        .unwrap();
    assert_eq!(
        actions(second),
        vec![
            "user alice@corp configured",
            "target web-01 unchanged",
            "limits default created"
        ]
    );
    assert_eq!(
        store.get_resource(Kind::User, "alice@corp").await.unwrap(),
        Some(user("alice@corp", &["ops", "dba"]))
    );

    let events = store
        .list_audit(&AuditFilter {
            kind: Some(kinds::POLICY_APPLIED.to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].actor.as_deref(), Some("bob@corp"));
    let details: serde_json::Value = serde_json::from_str(&events[1].details_json).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"resources": [
            {"kind": "user", "name": "alice@corp", "action": "configured"},
            {"kind": "target", "name": "web-01", "action": "unchanged"},
            {"kind": "limits", "name": "default", "action": "created"},
        ]})
    );
    assert_eq!(verify_chain(&store).await, 2);
}

/// Makes inserts and updates of resources named `boom` fail inside the database.
async fn install_failing_trigger(db: &TestDb) {
    let mut conn = raw(&db.url).await;
    if db.url.starts_with("sqlite:") {
        for event in ["INSERT", "UPDATE"] {
            exec(
                &mut conn,
                &format!(
                    "CREATE TRIGGER boom_{event} BEFORE {event} ON resources WHEN NEW.name = 'boom' \
                     BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
                ),
            )
            .await;
        }
    } else {
        exec(
            &mut conn,
            "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN \
             IF NEW.name = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        )
        .await;
        exec(
            &mut conn,
            "CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON resources FOR EACH ROW EXECUTE FUNCTION boom()",
        )
        .await;
    }
    conn.close().await.unwrap();
}

async fn failing_apply_leaves_nothing(db: &TestDb) {
    let store = db.store().await;
    store
        .apply_resources(&[user("alice@corp", &["ops"])], "admin@local")
        .await
        .unwrap();
    install_failing_trigger(db).await;
    let head_before = store.audit_head().await.unwrap();

    // A change, a creation, then a row the database refuses: none of it may stay.
    let err = store
        .apply_resources(
            &[
                user("alice@corp", &["ops", "dba"]),
                target("web-01", "10.0.0.1:22"),
                user("boom", &[]),
            ],
            "admin@local",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    assert!(err.to_string().contains("boom refused"), "{err}");

    assert_eq!(
        store.get_resource(Kind::User, "alice@corp").await.unwrap(),
        Some(user("alice@corp", &["ops"]))
    );
    assert_eq!(
        store.get_resource(Kind::Target, "web-01").await.unwrap(),
        None
    );
    assert_eq!(store.audit_head().await.unwrap(), head_before);
    assert_eq!(all_audit(&store).await.len(), 1);

    // The store is usable afterwards and the chain continues without a gap.
    store
        .apply_resources(&[target("web-01", "10.0.0.1:22")], "admin@local")
        .await
        .unwrap();
    assert_eq!(verify_chain(&store).await, 2);
}

async fn resources_get_list_delete(db: &TestDb) {
    let store = db.store().await;
    store
        .apply_resources(
            &[
                user("zed@corp", &[]),
                user("Alice@corp", &[]),
                user("bob@corp", &[]),
                target("web-01", "10.0.0.1:22"),
            ],
            "admin@local",
        )
        .await
        .unwrap();
    let names = |rs: Vec<Resource>| rs.iter().map(|r| r.name().to_owned()).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_resources(Kind::User).await.unwrap()),
        vec!["Alice@corp", "bob@corp", "zed@corp"]
    );
    assert_eq!(
        names(store.list_resources(Kind::Target).await.unwrap()),
        vec!["web-01"]
    );
    assert!(store.list_resources(Kind::Policy).await.unwrap().is_empty());
    assert_eq!(
        store.get_resource(Kind::Target, "web-01").await.unwrap(),
        Some(target("web-01", "10.0.0.1:22"))
    );
    // Kind is part of the key.
    assert_eq!(
        store
            .get_resource(Kind::ServicePrincipal, "bob@corp")
            .await
            .unwrap(),
        None
    );

    assert!(
        store
            .delete_resource(Kind::User, "bob@corp", "admin@local")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_resource(Kind::User, "bob@corp", "admin@local")
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_resource(Kind::User, "bob@corp").await.unwrap(),
        None
    );
    assert_eq!(
        names(store.list_resources(Kind::User).await.unwrap()),
        vec!["Alice@corp", "zed@corp"]
    );

    let deleted = store
        .list_audit(&AuditFilter {
            kind: Some(kinds::RESOURCE_DELETED.to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        deleted.len(),
        1,
        "a delete of a missing resource appends nothing"
    );
    assert_eq!(deleted[0].actor.as_deref(), Some("admin@local"));
    let details: serde_json::Value = serde_json::from_str(&deleted[0].details_json).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"resources": [{"kind": "user", "name": "bob@corp"}]})
    );
    assert_eq!(verify_chain(&store).await, 2);
}

async fn vault_put_get_list(db: &TestDb) {
    let store = db.store().await;
    let secret = |path: &str, kind: &str, byte: u8, t: i64| SealedSecret {
        path: path.to_owned(),
        kind: kind.to_owned(),
        nonce: vec![byte; 12],
        ciphertext: vec![byte, 0, 255, 1, 2, 3],
        updated_ms: t,
    };
    assert_eq!(store.get_secret("vault/ssh/deploy").await.unwrap(), None);
    assert!(store.list_secrets().await.unwrap().is_empty());

    store
        .put_secret(
            &secret("vault/ssh/deploy", "private_key", 1, 10),
            "admin@local",
        )
        .await
        .unwrap();
    store
        .put_secret(&secret("vault/pg/app", "password", 2, 20), "admin@local")
        .await
        .unwrap();
    store
        .put_secret(&secret("vault/ssh/deploy", "password", 3, 30), "ops@corp")
        .await
        .unwrap();

    assert_eq!(
        store.get_secret("vault/ssh/deploy").await.unwrap(),
        Some(secret("vault/ssh/deploy", "password", 3, 30))
    );
    assert_eq!(
        store.list_secrets().await.unwrap(),
        vec![
            secret("vault/pg/app", "password", 2, 20),
            secret("vault/ssh/deploy", "password", 3, 30)
        ]
    );

    let events = all_audit(&store).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.kind == kinds::VAULT_WRITTEN));
    assert_eq!(events[2].actor.as_deref(), Some("ops@corp"));
    let details: serde_json::Value = serde_json::from_str(&events[2].details_json).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"path": "vault/ssh/deploy", "kind": "password"})
    );
    assert_eq!(verify_chain(&store).await, 3);
}

async fn tokens_put_get(db: &TestDb) {
    let store = db.store().await;
    let token = TokenRecord {
        token_sha256: "ab".repeat(32),
        principal: "admin@local".to_owned(),
        created_ms: 1_000,
    };
    assert_eq!(store.get_token(&token.token_sha256).await.unwrap(), None);
    store.put_token(&token).await.unwrap();
    assert_eq!(
        store.get_token(&token.token_sha256).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.get_token(&"cd".repeat(32)).await.unwrap(), None);
    let replaced = TokenRecord {
        principal: "ops@corp".to_owned(),
        created_ms: 2_000,
        ..token.clone()
    };
    store.put_token(&replaced).await.unwrap();
    assert_eq!(
        store.get_token(&token.token_sha256).await.unwrap(),
        Some(replaced)
    );
}

async fn tokens_issued_with_an_audit_event(db: &TestDb) {
    let store = db.store().await;
    let token = TokenRecord {
        token_sha256: "ef".repeat(32),
        principal: "dan@corp".to_owned(),
        created_ms: 1_000,
    };
    store.issue_token(&token, "admin@local").await.unwrap();
    assert_eq!(
        store.get_token(&token.token_sha256).await.unwrap(),
        Some(token.clone())
    );
    let events = all_audit(&store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, kinds::TOKEN_CREATED);
    assert_eq!(events[0].actor.as_deref(), Some("admin@local"));
    assert!(!events[0].details_json.contains(&token.token_sha256));
    // A hash is issued once: a collision is an error, and appends nothing.
    assert!(store.issue_token(&token, "admin@local").await.is_err());
    assert_eq!(verify_chain(&store).await, 1);
}

async fn sessions_insert_get_and_filters(db: &TestDb) {
    let store = db.store().await;
    let mut full = session(1_000, "alice@corp", "web-01");
    full.account = Some("deploy".to_owned());
    full.vault_path = Some("vault/ssh/deploy".to_owned());
    full.policy = Some("prod-ssh".to_owned());
    full.client_geo = Some("Berlin, DE".to_owned());
    full.pty_term = Some("xterm-256color".to_owned());
    full.pty_cols = Some(u32::MAX);
    full.pty_rows = Some(50);
    full.recording_chunks = 7;
    full.recording_bytes = u64::from(u32::MAX) * 4;
    full.recording_sha256 = Some("ef".repeat(32));
    full.opened_ms = Some(1_100);
    full.exit_status = Some(-1);
    full.state = SessionState::Active;
    let event = NewAuditEvent::new(kinds::SESSION_REQUESTED)
        .actor("alice@corp")
        .session(full.id)
        .details(serde_json::json!({"target": "web-01"}));
    store.insert_session(&full, Some(&event)).await.unwrap();
    assert_eq!(
        store.get_session(full.id).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        store
            .get_session(SessionId::generate().unwrap())
            .await
            .unwrap(),
        None
    );
    let events = all_audit(&store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].session.as_deref(),
        Some(full.id.to_string().as_str())
    );

    let mut b = session(2_000, "bob@corp", "db-01");
    b.protocol = "pg".to_owned();
    b.gateway = "gw-2".to_owned();
    b.last_input_ms = 500;
    let mut closed = session(3_000, "alice@corp", "web-01");
    closed.state = SessionState::Closed;
    closed.ended_ms = Some(3_500);
    closed.end_reason = Some(EndReason::Terminated);
    closed.end_detail = Some("incident 42".to_owned());
    let c = session(4_000, "alice@corp", "db-01");
    for r in [&b, &closed, &c] {
        store.insert_session(r, None).await.unwrap();
    }
    assert_eq!(
        store.get_session(closed.id).await.unwrap(),
        Some(closed.clone())
    );
    assert_eq!(
        all_audit(&store).await.len(),
        1,
        "no event when none is given"
    );

    // A duplicate ID is refused.
    assert!(store.insert_session(&c, None).await.is_err());

    let ids = |f: SessionFilter| {
        let store = store.clone();
        async move {
            store
                .list_sessions(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    // Default: every state but closed, newest first.
    assert_eq!(
        ids(SessionFilter::default()).await,
        vec![c.id, b.id, full.id]
    );
    // Keyset pages: after (created_ms, id) of the previous page's last row; a session created in
    // the same millisecond with a smaller ID is still listed.
    assert_eq!(
        ids(SessionFilter {
            limit: Some(1),
            after: Some((c.created_ms, c.id.to_string())),
            ..SessionFilter::default()
        })
        .await,
        vec![b.id]
    );
    assert_eq!(
        ids(SessionFilter {
            after: Some((b.created_ms, b.id.to_string())),
            ..SessionFilter::default()
        })
        .await,
        vec![full.id]
    );

    assert_eq!(
        ids(SessionFilter {
            states: vec![SessionState::Closed],
            ..SessionFilter::default()
        })
        .await,
        vec![closed.id]
    );
    assert_eq!(
        ids(SessionFilter {
            states: vec![SessionState::Closed, SessionState::Active],
            ..SessionFilter::default()
        })
        .await,
        vec![closed.id, full.id]
    );
    // Live states only (the query then also states `state <> 'closed'` for the live indexes).
    assert_eq!(
        ids(SessionFilter {
            states: vec![SessionState::Active],
            ..SessionFilter::default()
        })
        .await,
        vec![full.id]
    );
    assert_eq!(
        ids(SessionFilter {
            states: vec![SessionState::Requested, SessionState::Active],
            ..SessionFilter::default()
        })
        .await,
        vec![c.id, b.id, full.id]
    );
    assert_eq!(
        ids(SessionFilter {
            actor: Some("alice@corp".to_owned()),
            ..SessionFilter::default()
        })
        .await,
        vec![c.id, full.id]
    );
    assert_eq!(
        ids(SessionFilter {
            target: Some("db-01".to_owned()),
            ..SessionFilter::default()
        })
        .await,
        vec![c.id, b.id]
    );
    assert_eq!(
        ids(SessionFilter {
            protocol: Some("pg".to_owned()),
            ..SessionFilter::default()
        })
        .await,
        vec![b.id]
    );
    assert_eq!(
        ids(SessionFilter {
            gateway: Some("gw-1".to_owned()),
            ..SessionFilter::default()
        })
        .await,
        vec![c.id, full.id]
    );
    assert_eq!(
        ids(SessionFilter {
            last_input_before_ms: Some(1_000),
            ..SessionFilter::default()
        })
        .await,
        vec![b.id]
    );
    assert_eq!(
        ids(SessionFilter {
            last_input_before_ms: Some(1_001),
            ..SessionFilter::default()
        })
        .await,
        vec![b.id, full.id]
    );
    assert_eq!(
        ids(SessionFilter {
            limit: Some(2),
            ..SessionFilter::default()
        })
        .await,
        vec![c.id, b.id]
    );
    assert_eq!(
        ids(SessionFilter {
            actor: Some("alice@corp".to_owned()),
            target: Some("db-01".to_owned()),
            states: vec![SessionState::Requested],
            ..SessionFilter::default()
        })
        .await,
        vec![c.id]
    );
    assert!(
        ids(SessionFilter {
            actor: Some("nobody".to_owned()),
            ..SessionFilter::default()
        })
        .await
        .is_empty()
    );
    let mut twin = session(b.created_ms, "bob@corp", "db-01");
    twin.id = "sess_000000000000".parse().unwrap();
    store.insert_session(&twin, None).await.unwrap();
    assert_eq!(
        ids(SessionFilter {
            after: Some((b.created_ms, b.id.to_string())),
            ..SessionFilter::default()
        })
        .await,
        vec![twin.id, full.id]
    );
}

async fn insert_session_with_failing_audit_is_atomic(db: &TestDb) {
    let store = db.store().await;
    let mut conn = raw(&db.url).await;
    // Occupy the next chain position so that the audit insert fails after the session insert.
    exec(
        &mut conn,
        "INSERT INTO audit_events (seq, time_ms, kind, details_json, prev, hash) VALUES (1, 0, 'x', '{}', 'p', 'h')",
    )
    .await;
    let s = session(1_000, "alice@corp", "web-01");
    let event = NewAuditEvent::new(kinds::SESSION_REQUESTED).session(s.id);
    assert!(store.insert_session(&s, Some(&event)).await.is_err());
    assert_eq!(store.get_session(s.id).await.unwrap(), None);
    assert_eq!(store.audit_head().await.unwrap(), (0, GENESIS.to_owned()));

    // Same for a transition with audit events.
    exec(&mut conn, "DELETE FROM audit_events").await;
    store.insert_session(&s, None).await.unwrap();
    exec(
        &mut conn,
        "INSERT INTO audit_events (seq, time_ms, kind, details_json, prev, hash) VALUES (2, 0, 'x', '{}', 'p', 'h')",
    )
    .await;
    let events = [
        NewAuditEvent::new(kinds::SESSION_APPROVED).session(s.id),
        NewAuditEvent::new(kinds::SESSION_CLOSED).session(s.id),
    ];
    let patch = SessionPatch {
        policy: Some("p".to_owned()),
        ..SessionPatch::default()
    };
    assert!(
        store
            .transition_session(
                s.id,
                SessionState::Requested,
                SessionState::Approved,
                &patch,
                &events
            )
            .await
            .is_err()
    );
    assert_eq!(store.get_session(s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(store.audit_head().await.unwrap(), (0, GENESIS.to_owned()));
    exec(&mut conn, "DELETE FROM audit_events").await;
    conn.close().await.unwrap();

    assert!(
        store
            .transition_session(
                s.id,
                SessionState::Requested,
                SessionState::Approved,
                &patch,
                &events
            )
            .await
            .unwrap()
    );
    assert_eq!(verify_chain(&store).await, 2);
}

async fn transition_is_compare_and_set(db: &TestDb) {
    let store = db.store().await;
    let s = session(1_000, "alice@corp", "web-01");
    store.insert_session(&s, None).await.unwrap();

    // Wrong `from`: nothing changes, nothing is appended.
    let approve = [NewAuditEvent::new(kinds::SESSION_APPROVED).session(s.id)];
    let changed = store
        .transition_session(
            s.id,
            SessionState::Approved,
            SessionState::Opened,
            &SessionPatch {
                account: Some("deploy".to_owned()),
                ..SessionPatch::default()
            },
            &approve,
        )
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(store.get_session(s.id).await.unwrap(), Some(s.clone()));
    assert!(all_audit(&store).await.is_empty());

    // Illegal edge: an error, before the database is touched.
    let err = store
        .transition_session(
            s.id,
            SessionState::Requested,
            SessionState::Active,
            &SessionPatch::default(),
            &approve,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition(_)), "{err}");
    let err = store
        .transition_session(
            s.id,
            SessionState::Closed,
            SessionState::Requested,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition(_)), "{err}");
    assert_eq!(store.get_session(s.id).await.unwrap(), Some(s.clone()));

    // Unknown session.
    assert!(
        !store
            .transition_session(
                SessionId::generate().unwrap(),
                SessionState::Requested,
                SessionState::Approved,
                &SessionPatch::default(),
                &approve
            )
            .await
            .unwrap()
    );
    assert!(all_audit(&store).await.is_empty());

    // The right `from`: state, patch and events together, events in order.
    let patch = SessionPatch {
        account: Some("deploy".to_owned()),
        vault_path: Some("vault/ssh/deploy".to_owned()),
        policy: Some("prod-ssh".to_owned()),
        ..SessionPatch::default()
    };
    let events = [
        NewAuditEvent::new(kinds::SESSION_APPROVED)
            .session(s.id)
            .details(serde_json::json!({"n": 1})),
        NewAuditEvent::new(kinds::RECORDING_ACCESSED)
            .session(s.id)
            .details(serde_json::json!({"n": 2})),
    ];
    assert!(
        store
            .transition_session(
                s.id,
                SessionState::Requested,
                SessionState::Approved,
                &patch,
                &events
            )
            .await
            .unwrap()
    );
    let got = store.get_session(s.id).await.unwrap().unwrap();
    let expected = SessionRecord {
        state: SessionState::Approved,
        account: Some("deploy".to_owned()),
        vault_path: Some("vault/ssh/deploy".to_owned()),
        policy: Some("prod-ssh".to_owned()),
        ..s.clone()
    };
    assert_eq!(got, expected);
    let stored = all_audit(&store).await;
    assert_eq!(
        stored.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec![kinds::SESSION_APPROVED, kinds::RECORDING_ACCESSED]
    );
    assert_eq!(stored[0].details_json, r#"{"n":1}"#);

    // Repeating the same transition now fails the compare.
    assert!(
        !store
            .transition_session(
                s.id,
                SessionState::Requested,
                SessionState::Approved,
                &patch,
                &events
            )
            .await
            .unwrap()
    );

    // Walk to closed with a full patch.
    for (from, to) in [
        (SessionState::Approved, SessionState::Opened),
        (SessionState::Opened, SessionState::Active),
        (SessionState::Active, SessionState::Idle),
        (SessionState::Idle, SessionState::Active),
        (SessionState::Active, SessionState::Closing),
    ] {
        assert!(
            store
                .transition_session(s.id, from, to, &SessionPatch::default(), &[])
                .await
                .unwrap()
        );
    }
    let close = SessionPatch {
        recording_mode: Some("metadata".to_owned()),
        pty_term: Some("vt100".to_owned()),
        pty_cols: Some(132),
        pty_rows: Some(43),
        recording_chunks: Some(3),
        recording_bytes: Some(4096),
        recording_status: Some("sealed".to_owned()),
        recording_sha256: Some("aa".repeat(32)),
        opened_ms: Some(1_200),
        last_input_ms: Some(1_900),
        ended_ms: Some(2_000),
        end_reason: Some(EndReason::IdleTimeout),
        end_detail: Some("idle 15m".to_owned()),
        exit_status: Some(130),
        ..SessionPatch::default()
    };
    assert!(
        store
            .transition_session(
                s.id,
                SessionState::Closing,
                SessionState::Closed,
                &close,
                &[NewAuditEvent::new(kinds::SESSION_CLOSED).session(s.id)]
            )
            .await
            .unwrap()
    );
    let got = store.get_session(s.id).await.unwrap().unwrap();
    assert_eq!(
        got,
        SessionRecord {
            state: SessionState::Closed,
            recording_mode: "metadata".to_owned(),
            pty_term: Some("vt100".to_owned()),
            pty_cols: Some(132),
            pty_rows: Some(43),
            recording_chunks: 3,
            recording_bytes: 4096,
            recording_status: "sealed".to_owned(),
            recording_sha256: Some("aa".repeat(32)),
            opened_ms: Some(1_200),
            last_input_ms: 1_900,
            ended_ms: Some(2_000),
            end_reason: Some(EndReason::IdleTimeout),
            end_detail: Some("idle 15m".to_owned()),
            exit_status: Some(130),
            ..expected
        }
    );
    assert_eq!(verify_chain(&store).await, 3);
}

async fn update_session_never_touches_closed_sessions(db: &TestDb) {
    let store = db.store().await;
    let live = session(1_000, "alice@corp", "web-01");
    let mut closed = session(2_000, "alice@corp", "web-01");
    closed.state = SessionState::Closed;
    store.insert_session(&live, None).await.unwrap();
    store.insert_session(&closed, None).await.unwrap();

    let patch = SessionPatch {
        last_input_ms: Some(5_000),
        pty_cols: Some(100),
        pty_rows: Some(30),
        recording_chunks: Some(2),
        recording_bytes: Some(1234),
        ..SessionPatch::default()
    };
    assert!(store.update_session(live.id, &patch).await.unwrap());
    let got = store.get_session(live.id).await.unwrap().unwrap();
    assert_eq!(
        got,
        SessionRecord {
            last_input_ms: 5_000,
            pty_cols: Some(100),
            pty_rows: Some(30),
            recording_chunks: 2,
            recording_bytes: 1234,
            ..live.clone()
        }
    );

    assert!(!store.update_session(closed.id, &patch).await.unwrap());
    assert_eq!(
        store.get_session(closed.id).await.unwrap(),
        Some(closed.clone())
    );
    assert!(
        !store
            .update_session(SessionId::generate().unwrap(), &patch)
            .await
            .unwrap()
    );

    // An empty patch only reports whether the session is live.
    assert!(
        store
            .update_session(live.id, &SessionPatch::default())
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_session(closed.id, &SessionPatch::default())
            .await
            .unwrap()
    );
    assert!(all_audit(&store).await.is_empty());
}

async fn update_sessions_applies_a_batch_in_one_go(db: &TestDb) {
    let store = db.store().await;
    let a = session(1_000, "alice@corp", "web-01");
    let b = session(1_500, "bob@corp", "web-02");
    let mut closed = session(2_000, "alice@corp", "web-01");
    closed.state = SessionState::Closed;
    for s in [&a, &b, &closed] {
        store.insert_session(s, None).await.unwrap();
    }
    let input = |ms| SessionPatch {
        last_input_ms: Some(ms),
        ..SessionPatch::default()
    };
    let rec = SessionPatch {
        recording_chunks: Some(3),
        recording_bytes: Some(4096),
        ..SessionPatch::default()
    };
    let got = store
        .update_sessions(&[
            (a.id, input(7_000)),
            (closed.id, input(7_000)),
            (b.id, rec.clone()),
            (SessionId::generate().unwrap(), input(7_000)),
            (a.id, SessionPatch::default()),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![true, false, true, false, false]);
    assert_eq!(
        store.get_session(a.id).await.unwrap().unwrap(),
        SessionRecord {
            last_input_ms: 7_000,
            ..a.clone()
        }
    );
    assert_eq!(
        store.get_session(b.id).await.unwrap().unwrap(),
        SessionRecord {
            recording_chunks: 3,
            recording_bytes: 4096,
            ..b.clone()
        }
    );
    assert_eq!(store.get_session(closed.id).await.unwrap(), Some(closed));
    // Nothing to write: no transaction, every item false.
    assert_eq!(
        store
            .update_sessions(&[(a.id, SessionPatch::default())])
            .await
            .unwrap(),
        vec![false]
    );
    assert!(store.update_sessions(&[]).await.unwrap().is_empty());
    assert!(all_audit(&store).await.is_empty());
}

async fn audit_append_list_head_and_verify(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(store.audit_head().await.unwrap(), (0, GENESIS.to_owned()));
    assert_eq!(verify_chain(&store).await, 0);

    let s1 = SessionId::generate().unwrap();
    let s2 = SessionId::generate().unwrap();
    let mut appended = Vec::new();
    for i in 0..10 {
        let session = if i % 2 == 0 { s1 } else { s2 };
        let kind = if i % 3 == 0 {
            kinds::SESSION_OPENED
        } else {
            kinds::SESSION_IDLE_WARNING
        };
        let event = NewAuditEvent::new(kind)
            .actor("gateway:gw-1")
            .session(session)
            .reason(format!("r{i}"))
            // Key order and unicode must survive: the stored text is what was hashed.
            .details(
                serde_json::json!({"z": i, "a": "ünïcödé \"quoted\"", "nested": {"k": [1, 2, 3]}}),
            );
        let stored = store.append_audit(&event).await.unwrap();
        assert_eq!(stored.seq, i + 1);
        assert_eq!(stored.kind, kind);
        assert_eq!(stored.hash, stored.expected_hash());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stored.details_json).unwrap(),
            event.details
        );
        if let Some(prev) = appended.last() {
            let prev: &wg_domain::audit::AuditEvent = prev;
            assert_eq!(stored.prev, prev.hash);
        } else {
            assert_eq!(stored.prev, GENESIS);
        }
        appended.push(stored);
    }
    let last = appended.last().unwrap().clone();
    assert_eq!(store.audit_head().await.unwrap(), (10, last.hash.clone()));
    assert_eq!(all_audit(&store).await, appended);
    assert_eq!(verify_chain(&store).await, 10);

    let by_session = store
        .list_audit(&AuditFilter {
            session: Some(s1.to_string()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_session.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 3, 5, 7, 9]
    );
    let by_kind = store
        .list_audit(&AuditFilter {
            kind: Some(kinds::SESSION_OPENED.to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_kind.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 4, 7, 10]
    );
    let both = store
        .list_audit(&AuditFilter {
            session: Some(s2.to_string()),
            kind: Some(kinds::SESSION_OPENED.to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(both.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 10]);

    // Paging with after_seq and limit walks the whole chain.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_audit(&AuditFilter {
                after_seq: after,
                limit: Some(3),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|e| e.seq);
        paged.extend(page);
    }
    assert_eq!(paged, appended);

    // Tampering with a stored event is detected.
    let mut conn = raw(&db.url).await;
    exec(
        &mut conn,
        "UPDATE audit_events SET reason = 'edited' WHERE seq = 4",
    )
    .await;
    conn.close().await.unwrap();
    let mut v = ChainVerifier::default();
    let err = all_audit(&store)
        .await
        .iter()
        .try_for_each(|e| v.push(e))
        .unwrap_err();
    assert_eq!(err, wg_domain::audit::ChainError::Edited { seq: 4 });
}

async fn concurrent_appends_form_one_gap_free_chain(db: &TestDb) {
    let store = db.store().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for j in 0..5 {
                    let event = NewAuditEvent::new(kinds::GATEWAY_JOINED)
                        .actor(format!("gateway:gw-{i}"))
                        .details(serde_json::json!({"task": i, "n": j}));
                    seqs.push(store.append_audit(&event).await.unwrap().seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = HashSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(seqs.insert(seq), "seq {seq} handed out twice");
        }
    }
    assert_eq!(seqs, (1..=100).collect::<HashSet<i64>>());
    assert_eq!(verify_chain(&store).await, 100);
}

async fn two_handles_extend_one_chain(db: &TestDb) {
    // Two handles stand for two replicas: the chain is serialised in the database.
    let a = db.store().await;
    let b = db.store().await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for _ in 0..4 {
                    store
                        .append_audit(
                            &NewAuditEvent::new(kinds::GATEWAY_LOST).actor(format!("r{i}")),
                        )
                        .await
                        .unwrap();
                }
                store
                    .apply_resources(
                        &[user(&format!("u{i}@corp"), &[]), user("shared@corp", &[])],
                        "admin@local",
                    )
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(verify_chain(&a).await, 50);
    assert_eq!(verify_chain(&b).await, 50);
    assert_eq!(a.list_resources(Kind::User).await.unwrap().len(), 11);
}

async fn concurrent_transitions_from_one_state_have_one_winner(db: &TestDb) {
    let store = db.store().await;
    for round in 0..3 {
        let s = session(1_000 + round, "alice@corp", "web-01");
        store.insert_session(&s, None).await.unwrap();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let patch = SessionPatch {
                        policy: Some(format!("p{i}")),
                        ..SessionPatch::default()
                    };
                    let won = store
                        .transition_session(
                            s.id,
                            SessionState::Requested,
                            SessionState::Approved,
                            &patch,
                            &[NewAuditEvent::new(kinds::SESSION_APPROVED)
                                .session(s.id)
                                .reason(format!("p{i}"))],
                        )
                        .await
                        .unwrap();
                    (i, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, won) = t.await.unwrap();
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let got = store.get_session(s.id).await.unwrap().unwrap();
        assert_eq!(got.state, SessionState::Approved);
        assert_eq!(got.policy, Some(format!("p{}", winners[0])));
        let events = store
            .list_audit(&AuditFilter {
                session: Some(s.id.to_string()),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, Some(format!("p{}", winners[0])));
    }
    assert_eq!(verify_chain(&store).await, 3);
}

fn claims(actor: &str, target: &str, actor_limit: u32) -> Vec<SlotClaim> {
    vec![
        SlotClaim {
            scope: "actor".into(),
            key: actor.into(),
            limit: Some(actor_limit),
        },
        SlotClaim {
            scope: "target".into(),
            key: target.into(),
            limit: None,
        },
    ]
}

async fn usage(store: &Store, scope: &str, key: &str) -> i64 {
    store
        .slot_usage(Some(scope), Some(key))
        .await
        .unwrap()
        .first()
        .map_or(0, |u| u.used)
}

/// A new session of `actor` to `target`, approved with an actor slot (limit `actor_limit`)
/// and a target slot.
async fn admitted(
    store: &Store,
    created_ms: i64,
    actor: &str,
    target: &str,
    actor_limit: u32,
) -> SessionId {
    let s = session(created_ms, actor, target);
    store.insert_session(&s, None).await.unwrap();
    let ok = store
        .approve_session(
            s.id,
            &SessionPatch::default(),
            &[],
            &claims(actor, target, actor_limit),
        )
        .await
        .unwrap();
    assert_eq!(ok, Ok(true));
    s.id
}

async fn state_of(store: &Store, id: SessionId) -> SessionState {
    store.get_session(id).await.unwrap().unwrap().state
}

async fn slots_are_taken_atomically_and_released_once(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(admitted(&store, 1_000 + i, "alice@corp", "web-01", 2).await);
    }
    assert_eq!(usage(&store, "actor", "alice@corp").await, 2);
    assert_eq!(usage(&store, "target", "web-01").await, 2);
    // A third is refused on the actor scope, and nothing of it is applied: not its state, not
    // the target slot taken before the actor slot failed (claims here are target-last, so
    // reverse them to check the rollback of an earlier claim).
    let third = session(2_000, "alice@corp", "web-01");
    store.insert_session(&third, None).await.unwrap();
    let mut reversed = claims("alice@corp", "web-01", 2);
    reversed.reverse();
    let full = store
        .approve_session(
            third.id,
            &SessionPatch::default(),
            &[NewAuditEvent::new(kinds::SESSION_APPROVED)],
            &reversed,
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(full.scope, "actor");
    assert_eq!(full.limit, 2);
    assert_eq!(
        usage(&store, "target", "web-01").await,
        2,
        "target slot rolled back"
    );
    let got = store.get_session(third.id).await.unwrap().unwrap();
    assert_eq!(got.state, SessionState::Requested);
    // Releasing happens on the way to closing, once.
    store
        .transition_session(
            ids[0],
            SessionState::Approved,
            SessionState::Closing,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap();
    store
        .transition_session(
            ids[0],
            SessionState::Closing,
            SessionState::Closed,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(usage(&store, "actor", "alice@corp").await, 1);
    assert_eq!(usage(&store, "target", "web-01").await, 1);
    // Now the third fits.
    let ok = store
        .approve_session(
            third.id,
            &SessionPatch::default(),
            &[],
            &claims("alice@corp", "web-01", 2),
        )
        .await
        .unwrap();
    assert_eq!(ok, Ok(true));
    assert_eq!(usage(&store, "actor", "alice@corp").await, 2);
    // A session that is no longer requested is not approved twice.
    let again = store
        .approve_session(
            third.id,
            &SessionPatch::default(),
            &[],
            &claims("alice@corp", "web-01", 9),
        )
        .await
        .unwrap();
    assert_eq!(again, Ok(false));
    assert_eq!(usage(&store, "actor", "alice@corp").await, 2);
}

/// Approvals racing for the last slots through two store handles (two control-plane replicas,
/// each deciding for its own gateway) never exceed the limit: the slot is taken in the database.
async fn racing_approvals_never_exceed_a_limit(db: &TestDb) {
    let store = db.store().await;
    let replicas = [store.clone(), db.store().await];
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = replicas[usize::try_from(i).unwrap() % 2].clone();
        tasks.push(tokio::spawn(async move {
            let s = session(3_000 + i, "bob@corp", "db-01");
            store.insert_session(&s, None).await.unwrap();
            store
                .approve_session(
                    s.id,
                    &SessionPatch::default(),
                    &[],
                    &claims("bob@corp", "db-01", 3),
                )
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() == Ok(true) {
            won += 1;
        }
    }
    assert_eq!(won, 3);
    assert_eq!(usage(&store, "actor", "bob@corp").await, 3);
    assert_eq!(usage(&store, "target", "db-01").await, 3);
}

// ---------------------------------------------------------------------------------------------
// Handoff
// ---------------------------------------------------------------------------------------------

fn actor_claim(actor: &str, limit: Option<u32>) -> SlotClaim {
    SlotClaim {
        scope: "actor".into(),
        key: actor.into(),
        limit,
    }
}

fn policy_claim(policy: &str, limit: Option<u32>) -> SlotClaim {
    SlotClaim {
        scope: "policy".into(),
        key: policy.into(),
        limit,
    }
}

/// A session of `actor` admitted by `policy` and walked to `active`, holding actor, target and
/// policy slots.
async fn live_session(store: &Store, created_ms: i64, actor: &str, policy: &str) -> SessionRecord {
    let s = session(created_ms, actor, "web-01");
    store.insert_session(&s, None).await.unwrap();
    let patch = SessionPatch {
        account: Some("deploy".into()),
        policy: Some(policy.into()),
        ..SessionPatch::default()
    };
    let claims = [
        actor_claim(actor, None),
        SlotClaim {
            scope: "target".into(),
            key: "web-01".into(),
            limit: None,
        },
        policy_claim(policy, None),
    ];
    assert_eq!(
        store
            .approve_session(s.id, &patch, &[], &claims)
            .await
            .unwrap(),
        Ok(true)
    );
    for (from, to) in [
        (SessionState::Approved, SessionState::Opened),
        (SessionState::Opened, SessionState::Active),
    ] {
        assert!(
            store
                .transition_session(s.id, from, to, &SessionPatch::default(), &[])
                .await
                .unwrap()
        );
    }
    store.get_session(s.id).await.unwrap().unwrap()
}

fn offer(s: &SessionRecord, to: &str, requested_ms: i64, ttl_ms: i64) -> NewHandoff {
    NewHandoff {
        session: s.id,
        from_actor: s.actor.clone(),
        to_principal: to.into(),
        requested_by: s.actor.clone(),
        reason: "shift change, incident INC-4412".into(),
        requested_ms,
        expires_ms: requested_ms + ttl_ms,
    }
}

async fn request(store: &Store, new: &NewHandoff) -> HandoffRequestOutcome {
    let ev = NewAuditEvent::new(kinds::SESSION_HANDOFF_REQUESTED)
        .actor(new.requested_by.clone())
        .session(new.session)
        .reason(new.reason.clone());
    store.request_handoff(new, &[ev]).await.unwrap()
}

fn acceptance(
    offer_id: &str,
    s: &SessionRecord,
    to: &str,
    policy: &str,
    claims: Vec<SlotClaim>,
    now: i64,
) -> HandoffAcceptance {
    HandoffAcceptance {
        handoff_id: offer_id.into(),
        session: s.id,
        to_principal: to.into(),
        to_groups: vec!["oncall".into()],
        policy: policy.into(),
        claims,
        now,
        audit: vec![
            NewAuditEvent::new(kinds::SESSION_HANDOFF_ACCEPTED)
                .actor(to)
                .session(s.id),
        ],
    }
}

async fn events_of(
    store: &Store,
    s: &SessionRecord,
    kind: &str,
) -> Vec<wg_domain::audit::AuditEvent> {
    store
        .list_audit(&AuditFilter {
            session: Some(s.id.to_string()),
            kind: Some(kind.into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

fn requested(outcome: HandoffRequestOutcome) -> wg_store::HandoffRecord {
    match outcome {
        HandoffRequestOutcome::Requested(h) => h,
        other => panic!("expected a recorded offer, got {other:?}"),
    }
}

async fn handoff_accept_moves_owner_policy_and_slots(db: &TestDb) {
    let store = db.store().await;
    let s = live_session(&store, 1_000, "alice@corp", "prod-alice").await;
    let h = requested(request(&store, &offer(&s, "dan@corp", 10_000, 300_000)).await);
    assert_eq!(h.state, HandoffState::Pending);
    assert!(h.id.starts_with("hof_"));
    let pending = store
        .list_handoffs(&HandoffFilter {
            session: Some(s.id),
            state: Some(HandoffState::Pending),
            ..HandoffFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending, vec![h.clone()]);

    // One pending offer per session; an offer is made against the owner the caller saw.
    match request(&store, &offer(&s, "erin@corp", 11_000, 300_000)).await {
        HandoffRequestOutcome::AlreadyPending(p) => assert_eq!(p.id, h.id),
        other => panic!("{other:?}"),
    }
    let mut stale = offer(&s, "erin@corp", 11_000, 300_000);
    stale.from_actor = "mallory@corp".into();
    assert_eq!(
        request(&store, &stale).await,
        HandoffRequestOutcome::OwnerChanged("alice@corp".into())
    );

    // Only the addressee accepts, and only the pending offer.
    let claims = vec![
        actor_claim("dan@corp", Some(3)),
        policy_claim("prod-dan", None),
    ];
    let wrong = acceptance(&h.id, &s, "erin@corp", "prod-dan", claims.clone(), 20_000);
    assert_eq!(
        store.accept_handoff(&wrong).await.unwrap(),
        HandoffAcceptOutcome::NotPending
    );
    let other_id = acceptance(
        "hof_0000000000000000",
        &s,
        "dan@corp",
        "prod-dan",
        claims.clone(),
        20_000,
    );
    assert_eq!(
        store.accept_handoff(&other_id).await.unwrap(),
        HandoffAcceptOutcome::NotPending
    );

    let ok = acceptance(&h.id, &s, "dan@corp", "prod-dan", claims.clone(), 20_000);
    let HandoffAcceptOutcome::Accepted(done) = store.accept_handoff(&ok).await.unwrap() else {
        panic!("not accepted");
    };
    assert_eq!(done.state, HandoffState::Accepted);
    assert_eq!(done.decided_ms, Some(20_000));
    assert_eq!(done.accepted_policy.as_deref(), Some("prod-dan"));
    let got = store.get_session(s.id).await.unwrap().unwrap();
    assert_eq!(got.actor, "dan@corp");
    assert_eq!(got.actor_groups, vec!["oncall".to_owned()]);
    assert_eq!(got.policy.as_deref(), Some("prod-dan"));
    assert_eq!(got.state, SessionState::Active, "the state is not touched");
    assert_eq!(got.account, s.account);
    assert_eq!(usage(&store, "actor", "alice@corp").await, 0);
    assert_eq!(usage(&store, "actor", "dan@corp").await, 1);
    assert_eq!(usage(&store, "policy", "prod-alice").await, 0);
    assert_eq!(usage(&store, "policy", "prod-dan").await, 1);
    assert_eq!(usage(&store, "target", "web-01").await, 1);
    assert_eq!(
        events_of(&store, &s, kinds::SESSION_HANDOFF_ACCEPTED)
            .await
            .len(),
        1
    );

    // Accepting again changes nothing.
    assert_eq!(
        store.accept_handoff(&ok).await.unwrap(),
        HandoffAcceptOutcome::NotPending
    );
    assert_eq!(usage(&store, "actor", "dan@corp").await, 1);

    // The moved slots are the ones released when the session ends.
    store
        .transition_session(
            s.id,
            SessionState::Active,
            SessionState::Closing,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(usage(&store, "actor", "dan@corp").await, 0);
    assert_eq!(usage(&store, "policy", "prod-dan").await, 0);
    assert_eq!(usage(&store, "target", "web-01").await, 0);
    assert_eq!(usage(&store, "actor", "alice@corp").await, 0);

    // A handoff back and forth under the same policy moves only the actor slot.
    let t = live_session(&store, 2_000, "alice@corp", "shared").await;
    let h = requested(request(&store, &offer(&t, "dan@corp", 30_000, 300_000)).await);
    let same = acceptance(
        &h.id,
        &t,
        "dan@corp",
        "shared",
        vec![actor_claim("dan@corp", None)],
        31_000,
    );
    assert!(matches!(
        store.accept_handoff(&same).await.unwrap(),
        HandoffAcceptOutcome::Accepted(_)
    ));
    assert_eq!(usage(&store, "policy", "shared").await, 1);
    assert_eq!(usage(&store, "actor", "dan@corp").await, 1);
    assert_eq!(usage(&store, "actor", "alice@corp").await, 0);
    assert_eq!(verify_chain(&store).await, 4);
}

async fn handoff_accept_after_expiry_is_refused_and_expires_once(db: &TestDb) {
    let store = db.store().await;
    let s = live_session(&store, 1_000, "alice@corp", "prod-alice").await;
    let h = requested(request(&store, &offer(&s, "dan@corp", 10_000, 60_000)).await);
    // The window is half-open: at `expires_ms` the offer has expired.
    let claims = vec![
        actor_claim("dan@corp", None),
        policy_claim("prod-dan", None),
    ];
    let late = acceptance(&h.id, &s, "dan@corp", "prod-dan", claims.clone(), 70_000);
    let HandoffAcceptOutcome::Expired(expired) = store.accept_handoff(&late).await.unwrap() else {
        panic!("an accept at the end of the window must be refused as expired");
    };
    assert_eq!(expired.state, HandoffState::Expired);
    assert_eq!(expired.decided_ms, Some(70_000));
    let got = store.get_session(s.id).await.unwrap().unwrap();
    assert_eq!(got.actor, "alice@corp", "the owner is unchanged");
    assert_eq!(got.policy.as_deref(), Some("prod-alice"));
    assert_eq!(usage(&store, "actor", "alice@corp").await, 1);
    assert_eq!(usage(&store, "actor", "dan@corp").await, 0);
    let ev = events_of(&store, &s, kinds::SESSION_HANDOFF_EXPIRED).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].actor.as_deref(), Some("dan@corp"));
    assert!(
        events_of(&store, &s, kinds::SESSION_HANDOFF_ACCEPTED)
            .await
            .is_empty()
    );

    // Trying again, or sweeping, expires nothing twice.
    assert_eq!(
        store.accept_handoff(&late).await.unwrap(),
        HandoffAcceptOutcome::NotPending
    );
    assert!(
        store
            .expire_handoffs(None, 99_000, "system")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        events_of(&store, &s, kinds::SESSION_HANDOFF_EXPIRED)
            .await
            .len(),
        1
    );

    // A pending offer past its window is expired by the sweep, once, even when sweeps race...
    let h2 = requested(request(&store, &offer(&s, "dan@corp", 100_000, 1_000)).await);
    let sweeps: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .expire_handoffs(None, 200_000, "system")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut swept = Vec::new();
    for t in sweeps {
        swept.extend(t.await.unwrap());
    }
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].id, h2.id);
    assert_eq!(
        events_of(&store, &s, kinds::SESSION_HANDOFF_EXPIRED)
            .await
            .len(),
        2
    );

    // ... or by a new request, which then takes its place.
    let h3 = requested(request(&store, &offer(&s, "dan@corp", 300_000, 1_000)).await);
    let h4 = requested(request(&store, &offer(&s, "erin@corp", 302_000, 60_000)).await);
    let all = store
        .list_handoffs(&HandoffFilter {
            session: Some(s.id),
            ..HandoffFilter::default()
        })
        .await
        .unwrap();
    let states: Vec<_> = all.iter().map(|h| (h.id.clone(), h.state)).collect();
    assert_eq!(
        states,
        vec![
            (h.id.clone(), HandoffState::Expired),
            (h2.id.clone(), HandoffState::Expired),
            (h3.id.clone(), HandoffState::Expired),
            (h4.id.clone(), HandoffState::Pending),
        ]
    );
    let ev = events_of(&store, &s, kinds::SESSION_HANDOFF_EXPIRED).await;
    assert_eq!(ev.len(), 3);
    assert_eq!(
        ev[2].actor.as_deref(),
        Some("alice@corp"),
        "noticed by the new request"
    );
    assert_eq!(verify_chain(&store).await, 7);
}

async fn handoff_accept_refused_when_a_scope_of_the_new_owner_is_full(db: &TestDb) {
    let store = db.store().await;
    let _dans = live_session(&store, 500, "dan@corp", "prod-dan").await;
    let s = live_session(&store, 1_000, "alice@corp", "prod-alice").await;
    let h = requested(request(&store, &offer(&s, "dan@corp", 10_000, 300_000)).await);

    // dan's maxSessionsPerUser is 1 and he holds one session already.
    let full = acceptance(
        &h.id,
        &s,
        "dan@corp",
        "prod-dan",
        vec![
            actor_claim("dan@corp", Some(1)),
            policy_claim("prod-dan", None),
        ],
        20_000,
    );
    assert_eq!(
        store.accept_handoff(&full).await.unwrap(),
        HandoffAcceptOutcome::SlotsFull(SlotsFull {
            scope: "actor".into(),
            key: "dan@corp".into(),
            limit: 1
        })
    );
    // The policy admits one session at once: the actor slot moved first is rolled back too.
    let policy_full = acceptance(
        &h.id,
        &s,
        "dan@corp",
        "prod-dan",
        vec![
            actor_claim("dan@corp", Some(5)),
            policy_claim("prod-dan", Some(1)),
        ],
        20_000,
    );
    assert_eq!(
        store.accept_handoff(&policy_full).await.unwrap(),
        HandoffAcceptOutcome::SlotsFull(SlotsFull {
            scope: "policy".into(),
            key: "prod-dan".into(),
            limit: 1
        })
    );
    let got = store.get_session(s.id).await.unwrap().unwrap();
    assert_eq!(got.actor, "alice@corp");
    assert_eq!(got.policy.as_deref(), Some("prod-alice"));
    assert_eq!(usage(&store, "actor", "alice@corp").await, 1);
    assert_eq!(usage(&store, "actor", "dan@corp").await, 1);
    assert_eq!(usage(&store, "policy", "prod-alice").await, 1);
    assert_eq!(usage(&store, "policy", "prod-dan").await, 1);
    assert!(
        events_of(&store, &s, kinds::SESSION_HANDOFF_ACCEPTED)
            .await
            .is_empty()
    );
    // The offer is still pending: with room, the same accept goes through.
    let roomy = acceptance(
        &h.id,
        &s,
        "dan@corp",
        "prod-dan",
        vec![
            actor_claim("dan@corp", Some(2)),
            policy_claim("prod-dan", Some(2)),
        ],
        20_000,
    );
    assert!(matches!(
        store.accept_handoff(&roomy).await.unwrap(),
        HandoffAcceptOutcome::Accepted(_)
    ));
    assert_eq!(usage(&store, "actor", "dan@corp").await, 2);
    assert_eq!(usage(&store, "actor", "alice@corp").await, 0);
}

async fn concurrent_handoff_accepts_have_one_winner(db: &TestDb) {
    let store = db.store().await;
    for round in 0..3 {
        let s = live_session(&store, 1_000 + round, "alice@corp", "prod-alice").await;
        let h = requested(request(&store, &offer(&s, "dan@corp", 10_000, 300_000)).await);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let a = acceptance(
                    &h.id,
                    &s,
                    "dan@corp",
                    "prod-dan",
                    vec![
                        actor_claim("dan@corp", None),
                        policy_claim("prod-dan", None),
                    ],
                    20_000,
                );
                tokio::spawn(async move { store.accept_handoff(&a).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                HandoffAcceptOutcome::Accepted(_) => won += 1,
                HandoffAcceptOutcome::NotPending => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(
            events_of(&store, &s, kinds::SESSION_HANDOFF_ACCEPTED)
                .await
                .len(),
            1
        );
    }
    assert_eq!(usage(&store, "actor", "dan@corp").await, 3);
    assert_eq!(usage(&store, "actor", "alice@corp").await, 0);
    assert_eq!(usage(&store, "policy", "prod-dan").await, 3);
    assert_eq!(usage(&store, "policy", "prod-alice").await, 0);
    verify_chain(&store).await;
}

async fn handoffs_need_a_live_session_and_end_with_it(db: &TestDb) {
    let store = db.store().await;
    // Not yet live: requested.
    let early = session(1_000, "alice@corp", "web-01");
    store.insert_session(&early, None).await.unwrap();
    assert_eq!(
        request(&store, &offer(&early, "dan@corp", 10_000, 300_000)).await,
        HandoffRequestOutcome::NotLive
    );
    let mut unknown = offer(&early, "dan@corp", 10_000, 300_000);
    unknown.session = SessionId::generate().unwrap();
    assert_eq!(
        request(&store, &unknown).await,
        HandoffRequestOutcome::NotLive
    );

    // Detached sessions are live.
    let s = live_session(&store, 2_000, "alice@corp", "prod-alice").await;
    store
        .transition_session(
            s.id,
            SessionState::Active,
            SessionState::Detached,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap();
    let h = requested(request(&store, &offer(&s, "dan@corp", 10_000, 300_000)).await);

    // Ending the session voids the pending offer, with an event after the ending move's own,
    // attributed to whoever ended it; a late accept finds no live session.
    store
        .transition_session(
            s.id,
            SessionState::Detached,
            SessionState::Closing,
            &SessionPatch::default(),
            &[NewAuditEvent::new(kinds::SESSION_TERMINATED)
                .actor("admin@local")
                .session(s.id)
                .reason("shift over")],
        )
        .await
        .unwrap();
    let trail: Vec<String> = all_audit(&store)
        .await
        .into_iter()
        .filter(|e| e.session.as_deref() == Some(s.id.to_string().as_str()))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        trail[trail.len() - 2..],
        [kinds::SESSION_TERMINATED, kinds::SESSION_HANDOFF_CANCELLED]
    );
    let cancelled = events_of(&store, &s, kinds::SESSION_HANDOFF_CANCELLED).await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].actor.as_deref(), Some("admin@local"));
    assert!(
        cancelled[0].details_json.contains("\"to\":\"dan@corp\""),
        "{}",
        cancelled[0].details_json
    );
    // A session that ends on its own (no event on the ending move): the owner is the actor.
    let own = live_session(&store, 3_000, "alice@corp", "prod-alice").await;
    requested(request(&store, &offer(&own, "erin@corp", 10_000, 300_000)).await);
    store
        .transition_session(
            own.id,
            SessionState::Active,
            SessionState::Closing,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap();
    let cancelled = events_of(&store, &own, kinds::SESSION_HANDOFF_CANCELLED).await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].actor.as_deref(), Some("alice@corp"));
    let got = store
        .list_handoffs(&HandoffFilter {
            to_principal: Some("dan@corp".into()),
            ..HandoffFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, h.id);
    assert_eq!(got[0].state, HandoffState::Cancelled);
    let a = acceptance(
        &h.id,
        &s,
        "dan@corp",
        "prod-dan",
        vec![actor_claim("dan@corp", None)],
        20_000,
    );
    assert_eq!(
        store.accept_handoff(&a).await.unwrap(),
        HandoffAcceptOutcome::NotLive
    );
    assert_eq!(
        store.get_session(s.id).await.unwrap().unwrap().actor,
        "alice@corp"
    );
    assert_eq!(usage(&store, "actor", "dan@corp").await, 0);
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}

/// Every future of the public API is `Send`, so that callers can spawn them and use them in
/// axum handlers (compile-time check; never run).
#[allow(dead_code)]
fn public_futures_are_send(store: &Store, id: SessionId, r: &SessionRecord, e: &NewAuditEvent) {
    fn send<T: Send>(_: T) {}
    let patch = SessionPatch::default();
    send(Store::connect("sqlite://x"));
    send(store.close());
    send(store.apply_resources(&[], "a"));
    send(store.get_resource(Kind::User, "a"));
    send(store.list_resources(Kind::User));
    send(store.delete_resource(Kind::User, "a", "a"));
    send(store.put_secret(
        &SealedSecret {
            path: String::new(),
            kind: String::new(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
            updated_ms: 0,
        },
        "a",
    ));
    send(store.get_secret("a"));
    send(store.list_secrets());
    send(store.put_token(&TokenRecord {
        token_sha256: String::new(),
        principal: String::new(),
        created_ms: 0,
    }));
    send(store.get_token("a"));
    send(store.insert_session(r, Some(e)));
    send(store.get_session(id));
    send(store.list_sessions(&SessionFilter::default()));
    send(store.transition_session(
        id,
        SessionState::Requested,
        SessionState::Approved,
        &patch,
        &[],
    ));
    send(store.update_session(id, &patch));
    send(store.append_audit(e));
    send(store.list_audit(&AuditFilter::default()));
    send(store.audit_head());
    send(store.issue_token(
        &TokenRecord {
            token_sha256: String::new(),
            principal: String::new(),
            created_ms: 0,
        },
        "a",
    ));
    send(store.request_handoff(
        &NewHandoff {
            session: id,
            from_actor: String::new(),
            to_principal: String::new(),
            requested_by: String::new(),
            reason: String::new(),
            requested_ms: 0,
            expires_ms: 0,
        },
        &[],
    ));
    send(store.accept_handoff(&HandoffAcceptance {
        handoff_id: String::new(),
        session: id,
        to_principal: String::new(),
        to_groups: Vec::new(),
        policy: String::new(),
        claims: Vec::new(),
        now: 0,
        audit: Vec::new(),
    }));
    send(store.expire_handoffs(Some(id), 0, "a"));
    send(store.list_handoffs(&HandoffFilter::default()));
}

// ---------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------

fn join_token(sha: &str, expires_ms: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_sha256: sha.to_owned(),
        pool: "us".into(),
        created_by: "admin@local".into(),
        created_ms: 1_000,
        expires_ms,
        used_ms: None,
        used_by: None,
        revoked_ms: None,
    }
}

/// A `certify` callback issuing a "certificate" whose SHA-256 is `sha`.
fn cert(
    sha: &str,
) -> impl FnOnce(&str) -> Result<wg_store::GatewayCertificate, String> + Send + use<> {
    let sha = sha.to_owned();
    move |_name| {
        Ok(wg_store::GatewayCertificate {
            sha256: sha,
            expires_ms: 99_000,
        })
    }
}

fn joined_event(g: &wg_store::GatewayRecord) -> NewAuditEvent {
    NewAuditEvent::new(kinds::GATEWAY_JOINED).actor(format!("gateway:{}", g.name))
}

async fn join_tokens_are_single_use_and_expire(db: &TestDb) {
    let store = db.store().await;
    let created = NewAuditEvent::new(kinds::GATEWAY_TOKEN_CREATED).actor("admin@local");
    store
        .create_join_token(&join_token("t1", 10_000), &created)
        .await
        .unwrap();
    store
        .create_join_token(&join_token("t2", 10_000), &created)
        .await
        .unwrap();
    let first = store
        .join_gateway(
            "t1",
            "10.0.0.1:2222",
            "0.1.0",
            5_000,
            cert("c1"),
            joined_event,
        )
        .await
        .unwrap();
    let JoinOutcome::Joined(g) = first else {
        panic!("{first:?}")
    };
    assert_eq!((g.name.as_str(), g.state.as_str()), ("gw-us-1", "live"));
    // Reuse, unknown token, expiry: refused, nothing created.
    let again = store
        .join_gateway("t1", "x", "0.1.0", 5_000, cert("c9"), joined_event)
        .await
        .unwrap();
    assert_eq!(again, JoinOutcome::Used);
    let unknown = store
        .join_gateway("nope", "x", "0.1.0", 5_000, cert("c9"), joined_event)
        .await
        .unwrap();
    assert_eq!(unknown, JoinOutcome::Unknown);
    let late = store
        .join_gateway("t2", "x", "0.1.0", 10_000, cert("c9"), joined_event)
        .await
        .unwrap();
    assert_eq!(late, JoinOutcome::Expired);
    assert_eq!(store.list_gateways().await.unwrap().len(), 1);
    let by_cert = store.gateway_by_certificate("c1").await.unwrap().unwrap();
    assert_eq!(by_cert.name, "gw-us-1");
    assert_eq!(by_cert.cert_expires_ms, Some(99_000));
    assert!(store.gateway_by_certificate("c9").await.unwrap().is_none());
    let tokens = store.list_join_tokens().await.unwrap();
    assert_eq!(
        tokens
            .iter()
            .find(|t| t.token_sha256 == "t1")
            .unwrap()
            .used_by
            .as_deref(),
        Some("gw-us-1")
    );
}

fn revoked_event(t: &JoinTokenRecord) -> NewAuditEvent {
    NewAuditEvent::new(kinds::GATEWAY_TOKEN_REVOKED)
        .actor("admin@local")
        .details(serde_json::json!({"pool": t.pool}))
}

async fn an_unused_join_token_can_be_revoked(db: &TestDb) {
    use wg_store::RevokeTokenOutcome;
    let store = db.store().await;
    let created = NewAuditEvent::new(kinds::GATEWAY_TOKEN_CREATED).actor("admin@local");
    for sha in ["aaaa0001ffff", "aaaa0002ffff", "bbbb0003ffff"] {
        store
            .create_join_token(&join_token(sha, 10_000), &created)
            .await
            .unwrap();
    }
    let revoke =
        |id: &'static str| store.revoke_join_token(id, "admin@local", 2_000, revoked_event);
    // Unknown, ambiguous and malformed IDs change nothing.
    assert_eq!(revoke("cccc").await.unwrap(), RevokeTokenOutcome::Unknown);
    assert_eq!(revoke("aaaa").await.unwrap(), RevokeTokenOutcome::Ambiguous);
    assert_eq!(revoke("a%").await.unwrap(), RevokeTokenOutcome::Unknown);
    assert_eq!(revoke("").await.unwrap(), RevokeTokenOutcome::Unknown);
    let events = |s: &Store| {
        let s = s.clone();
        async move {
            all_audit(&s)
                .await
                .into_iter()
                .filter(|e| e.kind == kinds::GATEWAY_TOKEN_REVOKED)
                .count()
        }
    };
    assert_eq!(events(&store).await, 0);
    // Revoked once (with its event), refused at join, listed as revoked; again: a no-op.
    let RevokeTokenOutcome::Revoked(t) = revoke("aaaa0001").await.unwrap() else {
        panic!("not revoked")
    };
    assert_eq!(t.token_sha256, "aaaa0001ffff");
    assert!(matches!(
        revoke("AAAA0001FFFF").await.unwrap(),
        RevokeTokenOutcome::AlreadyRevoked(_)
    ));
    assert_eq!(events(&store).await, 1);
    let join = store
        .join_gateway(
            "aaaa0001ffff",
            "x",
            "0.1.0",
            3_000,
            cert("c1"),
            joined_event,
        )
        .await
        .unwrap();
    assert_eq!(join, JoinOutcome::Revoked);
    assert!(store.list_gateways().await.unwrap().is_empty());
    let listed = store.list_join_tokens().await.unwrap();
    let get = |sha: &str| {
        listed
            .iter()
            .find(|t| t.token_sha256 == sha)
            .unwrap()
            .clone()
    };
    assert_eq!(get("aaaa0001ffff").revoked_ms, Some(2_000));
    assert_eq!(get("aaaa0002ffff").revoked_ms, None);
    // A used token is not revoked: the gateway it made is removed instead.
    let joined = store
        .join_gateway(
            "bbbb0003ffff",
            "x",
            "0.1.0",
            3_000,
            cert("c3"),
            joined_event,
        )
        .await
        .unwrap();
    assert!(matches!(joined, JoinOutcome::Joined(_)), "{joined:?}");
    assert!(matches!(
        revoke("bbbb0003ffff").await.unwrap(),
        RevokeTokenOutcome::Used(_)
    ));
    assert_eq!(events(&store).await, 1);
}

async fn a_join_that_cannot_be_certified_spends_nothing(db: &TestDb) {
    let store = db.store().await;
    let created = NewAuditEvent::new(kinds::GATEWAY_TOKEN_CREATED).actor("admin@local");
    store
        .create_join_token(&join_token("t1", 10_000), &created)
        .await
        .unwrap();
    let failed = store
        .join_gateway(
            "t1",
            "a",
            "v",
            5_000,
            |name: &str| Err(format!("cannot certify {name}")),
            joined_event,
        )
        .await
        .unwrap();
    assert_eq!(
        failed,
        JoinOutcome::NotCertified("cannot certify gw-us-1".into())
    );
    assert!(store.list_gateways().await.unwrap().is_empty());
    // The token is still unused: the next attempt joins.
    let again = store
        .join_gateway("t1", "a", "v", 5_000, cert("c1"), joined_event)
        .await
        .unwrap();
    assert!(matches!(again, JoinOutcome::Joined(_)), "{again:?}");
}

async fn replicas_share_the_first_stored_ca(db: &TestDb) {
    let (a, b) = (db.store().await, db.store().await);
    assert!(a.control_ca().await.unwrap().is_none());
    let ca = |n: u8| wg_store::StoredCa {
        cert_pem: format!("cert {n}"),
        key_nonce: vec![n; 12],
        key_sealed: vec![n; 40],
        created_ms: i64::from(n),
    };
    let (one, two) = (ca(1), ca(2));
    let (x, y) = tokio::join!(a.init_control_ca(&one), b.init_control_ca(&two));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y);
    assert!(x == ca(1) || x == ca(2));
    // Later starts keep it.
    assert_eq!(a.init_control_ca(&ca(3)).await.unwrap(), x);
    assert_eq!(b.control_ca().await.unwrap(), Some(x));
}

async fn racing_joins_with_one_token_have_one_winner(db: &TestDb) {
    let store = db.store().await;
    let replicas = [store.clone(), db.store().await];
    store
        .create_join_token(
            &join_token("race", i64::MAX),
            &NewAuditEvent::new(kinds::GATEWAY_TOKEN_CREATED).actor("admin@local"),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .join_gateway(
                    "race",
                    "a",
                    "v",
                    5_000,
                    cert(&format!("cred{i}")),
                    joined_event,
                )
                .await
        }));
    }
    let mut joined = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(JoinOutcome::Joined(_)) => joined += 1,
            Ok(JoinOutcome::Used) => {}
            // A loser may also see the winner's row lock end in a conflict.
            Ok(other) => panic!("{other:?}"),
            Err(e) => assert!(matches!(e, StoreError::Database(_)), "unexpected error {e}"),
        }
    }
    assert_eq!(joined, 1);
    assert_eq!(store.list_gateways().await.unwrap().len(), 1);
}

/// Joins gw-us-1 (token "t", at 5 s) with a certificate whose SHA-256 is `cert_sha`.
async fn join_one_gateway(store: &Store, cert_sha: &str) {
    store
        .create_join_token(
            &join_token("t", i64::MAX),
            &NewAuditEvent::new(kinds::GATEWAY_TOKEN_CREATED).actor("admin@local"),
        )
        .await
        .unwrap();
    let joined = store
        .join_gateway("t", "a", "v", 5_000, cert(cert_sha), joined_event)
        .await
        .unwrap();
    assert!(matches!(joined, JoinOutcome::Joined(_)), "{joined:?}");
}

async fn a_gateway_renews_with_its_current_or_previous_certificate(db: &TestDb) {
    let store = db.store().await;
    join_one_gateway(&store, "c0").await;
    let renew = |presented: &'static str, new: &'static str| {
        let store = store.clone();
        async move {
            store
                .renew_gateway_certificate(
                    "gw-us-1",
                    presented,
                    &wg_store::GatewayCertificate {
                        sha256: new.to_owned(),
                        expires_ms: 200_000,
                    },
                    &NewAuditEvent::new(kinds::GATEWAY_CERTIFICATE_RENEWED)
                        .actor("gateway:gw-us-1"),
                )
                .await
                .unwrap()
        }
    };
    let owner = |sha: &'static str| {
        let store = store.clone();
        async move {
            store
                .gateway_by_certificate(sha)
                .await
                .unwrap()
                .map(|g| g.name)
        }
    };
    // c0 -> c1: both accepted; c1 has the new expiry.
    assert!(renew("c0", "c1").await);
    assert_eq!(owner("c0").await.as_deref(), Some("gw-us-1"));
    assert_eq!(owner("c1").await.as_deref(), Some("gw-us-1"));
    let g = store.get_gateway("gw-us-1").await.unwrap().unwrap();
    assert_eq!(g.cert_expires_ms, Some(200_000));
    // The answer was lost: c0 (now the previous one) renews again, to c2; c1 is dropped.
    assert!(renew("c0", "c2").await);
    assert_eq!(owner("c1").await, None);
    // c2 -> c3: c0 is two renewals old now, refused for login and for renewal.
    assert!(renew("c2", "c3").await);
    assert_eq!(owner("c0").await, None);
    assert!(!renew("c0", "c4").await);
    assert!(!renew("unknown", "c5").await);
    assert_eq!(owner("c4").await, None);
    // Once the gateway shows c3, c2 is forgotten: it neither logs in nor renews any more.
    assert_eq!(owner("c2").await.as_deref(), Some("gw-us-1"));
    assert!(
        !store
            .forget_previous_certificate("gw-us-1", "c2")
            .await
            .unwrap(),
        "only the current certificate retires the previous one"
    );
    assert!(
        store
            .forget_previous_certificate("gw-us-1", "c3")
            .await
            .unwrap()
    );
    assert_eq!(owner("c2").await, None);
    assert!(!renew("c2", "c6").await);
    assert_eq!(owner("c3").await.as_deref(), Some("gw-us-1"));
    assert!(
        !store
            .forget_previous_certificate("gw-us-1", "c3")
            .await
            .unwrap()
    );
    let events = count_audit(&store, kinds::GATEWAY_CERTIFICATE_RENEWED).await;
    assert_eq!(events, 3);
}

async fn a_gateway_is_lost_once_and_comes_back(db: &TestDb) {
    let store = db.store().await;
    join_one_gateway(&store, "c").await;
    let lost = || NewAuditEvent::new(kinds::GATEWAY_LOST).actor("system:lease");
    // A sweeper that read an older heartbeat loses; the one that read the current one wins,
    // once.
    assert!(
        !store
            .mark_gateway_lost("gw-us-1", 4_000, &lost())
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_gateway_lost("gw-us-1", 5_000, &lost())
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_gateway_lost("gw-us-1", 5_000, &lost())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_gateway("gw-us-1").await.unwrap().unwrap().state,
        "lost"
    );
    // Its next heartbeat makes it live again and says it was lost.
    let prev = store
        .touch_gateway("gw-us-1", Some("b"), None, 9_000)
        .await
        .unwrap();
    assert_eq!(prev.as_deref(), Some("lost"));
    let g = store.get_gateway("gw-us-1").await.unwrap().unwrap();
    assert_eq!(
        (g.state.as_str(), g.address.as_str(), g.last_seen_ms),
        ("live", "b", 9_000)
    );
    // Removed: refused from then on.
    let removed = NewAuditEvent::new(kinds::GATEWAY_REMOVED).actor("admin@local");
    assert!(store.remove_gateway("gw-us-1", &removed).await.unwrap());
    assert!(!store.remove_gateway("gw-us-1", &removed).await.unwrap());
    assert_eq!(
        store
            .touch_gateway("gw-us-1", None, None, 10_000)
            .await
            .unwrap(),
        None
    );
}

async fn journal_events_apply_once_and_positions_only_advance(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(store.journal_position("gw-us-1", "j1").await.unwrap(), 0);
    let forward = || NewAuditEvent::new(kinds::SESSION_FORWARD_DENIED).actor("alice@corp");
    // Event 1 of journal j1 is appended once, however often it is replayed, and by however many
    // replicas at once.
    let (a, b) = (store.clone(), db.store().await);
    let (ea, eb) = (forward(), forward());
    let (x, y) = tokio::join!(
        a.append_journal_audit("gw-us-1", "j1", 1, &ea),
        b.append_journal_audit("gw-us-1", "j1", 1, &eb),
    );
    assert_eq!(
        u8::from(x.unwrap()) + u8::from(y.unwrap()),
        1,
        "exactly one replica appends"
    );
    assert!(
        !store
            .append_journal_audit("gw-us-1", "j1", 1, &forward())
            .await
            .unwrap()
    );
    assert_eq!(store.journal_position("gw-us-1", "j1").await.unwrap(), 1);
    // Positions only move forward.
    store.advance_journal("gw-us-1", "j1", 5).await.unwrap();
    store.advance_journal("gw-us-1", "j1", 3).await.unwrap();
    assert_eq!(store.journal_position("gw-us-1", "j1").await.unwrap(), 5);
    assert!(
        !store
            .append_journal_audit("gw-us-1", "j1", 4, &forward())
            .await
            .unwrap()
    );
    // A new journal of the same gateway (its data dir was wiped) numbers from 1 again.
    assert!(
        store
            .append_journal_audit("gw-us-1", "j2", 1, &forward())
            .await
            .unwrap()
    );
    let appended = count_audit(&store, kinds::SESSION_FORWARD_DENIED).await;
    assert_eq!(appended, 2);
    verify_chain(&store).await;
    // Sequence numbers beyond what the database holds are refused, not wrapped.
    assert!(
        store
            .advance_journal("gw-us-1", "j1", u64::MAX)
            .await
            .is_err()
    );
}

async fn a_late_seal_is_recorded_once_and_only_for_a_closed_session(db: &TestDb) {
    let store = db.store().await;
    let mut r = session(1_000, "alice@corp", "web-01");
    r.gateway = "gw-us-1".to_owned();
    r.recording_mode = "full".to_owned();
    store.insert_session(&r, None).await.unwrap();
    let seal = |sha: &str| SessionPatch {
        recording_status: Some("sealed".to_owned()),
        recording_chunks: Some(2),
        recording_bytes: Some(10),
        recording_sha256: Some(sha.to_owned()),
        ..SessionPatch::default()
    };
    let event = || NewAuditEvent::new(kinds::RECORDING_SEALED).actor("alice@corp");
    // A live session's recording is its gateway's to seal, through the close.
    assert!(
        !store
            .seal_closed_recording(r.id, &seal("aa"), &[event()])
            .await
            .unwrap()
    );
    assert!(
        store
            .unsealed_closed_recordings("gw-us-1")
            .await
            .unwrap()
            .is_empty()
    );
    store
        .transition_session(
            r.id,
            SessionState::Requested,
            SessionState::Closed,
            &SessionPatch::default(),
            &[],
        )
        .await
        .unwrap();
    let unsealed = store.unsealed_closed_recordings("gw-us-1").await.unwrap();
    assert_eq!(
        unsealed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![r.id]
    );
    assert!(
        store
            .seal_closed_recording(r.id, &seal("aa"), &[event()])
            .await
            .unwrap()
    );
    // A recorded seal is never replaced.
    assert!(
        !store
            .seal_closed_recording(r.id, &seal("bb"), &[event()])
            .await
            .unwrap()
    );
    let got = store.get_session(r.id).await.unwrap().unwrap();
    assert_eq!(got.recording_sha256.as_deref(), Some("aa"));
    assert!(
        store
            .unsealed_closed_recordings("gw-us-1")
            .await
            .unwrap()
            .is_empty()
    );
    let events = all_audit(&store).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == kinds::RECORDING_SEALED)
            .count(),
        1
    );
}

async fn many_transitions_commit_together_each_a_compare_and_set(db: &TestDb) {
    let store = db.store().await;
    let mut a = session(1_000, "alice@corp", "web-01");
    a.state = SessionState::Active;
    let mut b = session(2_000, "alice@corp", "web-01");
    b.state = SessionState::Idle;
    for r in [&a, &b] {
        store.insert_session(r, None).await.unwrap();
    }
    let ev = |id| {
        NewAuditEvent::new(kinds::SESSION_TERMINATED)
            .actor("olga@corp")
            .session(id)
    };
    let to_closing = |id, from| wg_store::Transition {
        id,
        from,
        to: SessionState::Closing,
        patch: SessionPatch {
            end_reason: Some(EndReason::Terminated),
            ..SessionPatch::default()
        },
        audit: vec![ev(id)],
    };
    // b is no longer active: its move changes nothing, a's goes through.
    let moved = store
        .transition_sessions(&[
            to_closing(a.id, SessionState::Active),
            to_closing(b.id, SessionState::Active),
        ])
        .await
        .unwrap();
    assert_eq!(moved, vec![true, false]);
    assert_eq!(state_of(&store, a.id).await, SessionState::Closing);
    assert_eq!(state_of(&store, b.id).await, SessionState::Idle);
    assert_eq!(
        all_audit(&store)
            .await
            .iter()
            .filter(|e| e.kind == kinds::SESSION_TERMINATED)
            .count(),
        1
    );
    // Moves of one session are a chain: after its first move fails, its later ones are not
    // attempted, even one whose `from` the session happens to be in (it was planned from the
    // state the failed move would have left).
    let chained = store
        .transition_sessions(&[
            to_closing(a.id, SessionState::Active),
            wg_store::Transition {
                id: a.id,
                from: SessionState::Closing,
                to: SessionState::Closed,
                patch: SessionPatch::default(),
                audit: vec![ev(a.id)],
            },
        ])
        .await
        .unwrap();
    assert_eq!(chained, vec![false, false]);
    assert_eq!(state_of(&store, a.id).await, SessionState::Closing);
    // An illegal edge anywhere refuses the whole batch, before anything is written.
    let mut bad = to_closing(b.id, SessionState::Idle);
    bad.to = SessionState::Active;
    bad.from = SessionState::Closed;
    assert!(
        store
            .transition_sessions(&[to_closing(b.id, SessionState::Idle), bad])
            .await
            .is_err()
    );
    assert_eq!(state_of(&store, b.id).await, SessionState::Idle);
    verify_chain(&store).await;
}

/// A mass termination's batch: more sessions than one `IN (…)` list holds, two actors and two
/// targets. Every slot is freed exactly once (on the way to `closing`, not again on `closed`),
/// the audit events of the moves that happened are chained in the order given, and a move that
/// does not happen contributes none.
async fn a_batch_of_ending_sessions_frees_each_slot_once(db: &TestDb) {
    let store = db.store().await;
    const N: usize = 520;
    let mut ids = Vec::new();
    for i in 0..N {
        let (actor, target) = if i % 2 == 0 {
            ("alice@corp", "web-01")
        } else {
            ("bob@corp", "web-02")
        };
        ids.push(admitted(&store, 1_000 + i as i64, actor, target, 10_000).await);
    }
    assert_eq!(usage(&store, "actor", "alice@corp").await, (N / 2) as i64);
    assert_eq!(usage(&store, "target", "web-02").await, (N / 2) as i64);
    let before = verify_chain(&store).await;
    let ev = |id, kind: &str| NewAuditEvent::new(kind).actor("olga@corp").session(id);
    // One stale move (the first session is not `active`) in front of the others.
    let mut moves = vec![wg_store::Transition {
        id: ids[0],
        from: SessionState::Active,
        to: SessionState::Closing,
        patch: SessionPatch::default(),
        audit: vec![ev(ids[0], kinds::SESSION_TERMINATED)],
    }];
    moves.extend(ids[1..].iter().map(|&id| wg_store::Transition {
        id,
        from: SessionState::Approved,
        to: SessionState::Closing,
        patch: SessionPatch {
            end_reason: Some(EndReason::Terminated),
            ..SessionPatch::default()
        },
        audit: vec![ev(id, kinds::SESSION_TERMINATED)],
    }));
    let moved = store.transition_sessions(&moves).await.unwrap();
    assert!(!moved[0]);
    assert!(moved[1..].iter().all(|m| *m));
    // The first session still holds its two slots; every other one was freed.
    assert_eq!(usage(&store, "actor", "alice@corp").await, 1);
    assert_eq!(usage(&store, "target", "web-01").await, 1);
    assert_eq!(usage(&store, "actor", "bob@corp").await, 0);
    assert_eq!(usage(&store, "target", "web-02").await, 0);
    let events = all_audit(&store).await;
    let terminated: Vec<String> = events
        .iter()
        .filter(|e| e.kind == kinds::SESSION_TERMINATED)
        .filter_map(|e| e.session.clone())
        .collect();
    let expected: Vec<String> = ids[1..].iter().map(|id| id.to_string()).collect();
    assert_eq!(
        terminated, expected,
        "one event per move, in the order given"
    );
    assert_eq!(verify_chain(&store).await, before + (N as i64 - 1));
    // Closing them adds two events each and frees nothing twice.
    let closes: Vec<_> = ids[1..]
        .iter()
        .map(|&id| wg_store::Transition {
            id,
            from: SessionState::Closing,
            to: SessionState::Closed,
            patch: SessionPatch::default(),
            audit: vec![
                ev(id, kinds::RECORDING_SEALED),
                ev(id, kinds::SESSION_CLOSED),
            ],
        })
        .collect();
    let moved = store.transition_sessions(&closes).await.unwrap();
    assert!(moved.iter().all(|m| *m));
    assert_eq!(usage(&store, "actor", "alice@corp").await, 1);
    assert_eq!(usage(&store, "target", "web-01").await, 1);
    assert_eq!(
        verify_chain(&store).await,
        before + 3 * (N as i64 - 1),
        "the chain verifies across multi-row inserts"
    );
    // A batch in which nothing moves writes nothing.
    let again = store.transition_sessions(&closes[..3]).await.unwrap();
    assert_eq!(again, vec![false; 3]);
    assert_eq!(verify_chain(&store).await, before + 3 * (N as i64 - 1));
}
