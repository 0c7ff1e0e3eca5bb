//! A small migration runner: per-engine DDL files embedded in the binary, applied in version
//! order, each in its own transaction, and recorded in `schema_migrations`.

use sqlx::AnyConnection;
use sqlx::{Connection, Executor, Row};

use crate::connect::Engine;
use crate::{Result, StoreError};

/// One migration: a version, a name and the DDL for one engine.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "session_slots",
        sql: include_str!("../migrations/sqlite/0002_session_slots.sql"),
    },
    Migration {
        version: 3,
        name: "handoffs",
        sql: include_str!("../migrations/sqlite/0003_handoffs.sql"),
    },
    Migration {
        version: 4,
        name: "gateways",
        sql: include_str!("../migrations/sqlite/0004_gateways.sql"),
    },
    Migration {
        version: 5,
        name: "session_list_indexes",
        sql: include_str!("../migrations/sqlite/0005_session_list_indexes.sql"),
    },
    Migration {
        version: 6,
        name: "gateway_event_journals",
        sql: include_str!("../migrations/sqlite/0006_gateway_event_journals.sql"),
    },
    Migration {
        version: 7,
        name: "control_ca",
        sql: include_str!("../migrations/sqlite/0007_control_ca.sql"),
    },
    Migration {
        version: 8,
        name: "session_history_indexes",
        sql: include_str!("../migrations/sqlite/0008_session_history_indexes.sql"),
    },
    Migration {
        version: 9,
        name: "session_target_tags",
        sql: include_str!("../migrations/sqlite/0009_session_target_tags.sql"),
    },
    Migration {
        version: 10,
        name: "join_token_revocation",
        sql: include_str!("../migrations/sqlite/0010_join_token_revocation.sql"),
    },
    Migration {
        version: 11,
        name: "gateway_certificate_renewal",
        sql: include_str!("../migrations/sqlite/0011_gateway_certificate_renewal.sql"),
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "session_slots",
        sql: include_str!("../migrations/postgres/0002_session_slots.sql"),
    },
    Migration {
        version: 3,
        name: "handoffs",
        sql: include_str!("../migrations/postgres/0003_handoffs.sql"),
    },
    Migration {
        version: 4,
        name: "gateways",
        sql: include_str!("../migrations/postgres/0004_gateways.sql"),
    },
    Migration {
        version: 5,
        name: "session_list_indexes",
        sql: include_str!("../migrations/postgres/0005_session_list_indexes.sql"),
    },
    Migration {
        version: 6,
        name: "gateway_event_journals",
        sql: include_str!("../migrations/postgres/0006_gateway_event_journals.sql"),
    },
    Migration {
        version: 7,
        name: "control_ca",
        sql: include_str!("../migrations/postgres/0007_control_ca.sql"),
    },
    Migration {
        version: 8,
        name: "session_history_indexes",
        sql: include_str!("../migrations/postgres/0008_session_history_indexes.sql"),
    },
    Migration {
        version: 9,
        name: "session_target_tags",
        sql: include_str!("../migrations/postgres/0009_session_target_tags.sql"),
    },
    Migration {
        version: 10,
        name: "join_token_revocation",
        sql: include_str!("../migrations/postgres/0010_join_token_revocation.sql"),
    },
    Migration {
        version: 11,
        name: "gateway_certificate_renewal",
        sql: include_str!("../migrations/postgres/0011_gateway_certificate_renewal.sql"),
    },
];

/// The key of the PostgreSQL advisory lock held while migrating (`WGSTORE` in ASCII).
pub(crate) const PG_MIGRATION_LOCK: i64 = 0x0057_4753_544f_5245;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, \
     name TEXT NOT NULL, \
     applied_ms BIGINT NOT NULL)";

fn migrations(engine: Engine) -> &'static [Migration] {
    match engine {
        Engine::Sqlite => SQLITE,
        Engine::Postgres => POSTGRES,
    }
}

/// The highest version this build knows for `engine`.
#[cfg(test)]
pub(crate) fn latest_version(engine: Engine) -> i64 {
    migrations(engine)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

fn failed(version: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Migration {
        version,
        message: e.to_string(),
    }
}

/// Applies every pending migration on `conn`.
///
/// Safe against concurrent runners: on PostgreSQL the caller holds an advisory lock; on SQLite
/// each migration runs under `BEGIN IMMEDIATE` (the database writer lock) and re-checks whether
/// it was applied meanwhile.
pub(crate) async fn run(conn: &mut AnyConnection, engine: Engine) -> Result<()> {
    // Plain `Executor::execute` rather than `raw_sql`: the latter makes this future `!Send` for
    // callers (a higher-ranked lifetime inference limitation).
    Executor::execute(&mut *conn, CREATE_TABLE).await?;
    let all = migrations(engine);
    for m in all {
        let mut tx = match engine {
            Engine::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => conn.begin().await?,
        };
        let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if done {
            tx.rollback().await?;
            continue;
        }
        Executor::execute(&mut *tx, m.sql)
            .await
            .map_err(|e| failed(m.version, e))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(wg_domain::time::now_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| failed(m.version, e))?;
        tx.commit().await.map_err(|e| failed(m.version, e))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied store migration"
        );
    }
    let newest: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    let known = all.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newest) = newest.filter(|v| *v > known) {
        tracing::warn!(
            database = newest,
            known,
            "the database schema is newer than this build knows"
        );
    }
    Ok(())
}
