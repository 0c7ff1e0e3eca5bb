//! Connection set-up per engine: URL handling, pool options, SQLite pragmas, and running the
//! migrations (under an advisory lock on PostgreSQL).

use std::future::Future;
use std::pin::Pin;
use std::sync::Once;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::{Result, StoreError, migrate};

/// The database engine behind a [`crate::Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Engine {
    /// The engine a URL names.
    pub(crate) fn from_url(url: &str) -> Result<Engine> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// `sqlite` or `postgres`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Per-connection SQLite settings (the journal mode is set once, it persists in the file).
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";

/// Connections per pool.
const SQLITE_POOL_SIZE: u32 = 8;
const POSTGRES_POOL_SIZE: u32 = 10;

static INSTALL_DRIVERS: Once = Once::new();

/// The pools of a store: `reader` for statements that only read, `writer` for every write.
pub(crate) struct Pools {
    pub(crate) reader: AnyPool,
    pub(crate) writer: AnyPool,
}

/// Installs the sqlx drivers (once), connects, and applies pending migrations.
pub(crate) async fn open(url: &str) -> Result<(Pools, Engine)> {
    INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
    let engine = Engine::from_url(url)?;
    let pools = match engine {
        Engine::Sqlite => open_sqlite(url).await?,
        Engine::Postgres => {
            let pool = open_postgres(url).await?;
            // Row locks order PostgreSQL's writers; they share the pool with the readers.
            Pools {
                reader: pool.clone(),
                writer: pool,
            }
        }
    };
    Ok((pools, engine))
}

/// Rewrites a SQLite URL so that the database file is created when missing (`mode=rwc`), and tells
/// whether it names an in-memory database.
fn sqlite_url(url: &str) -> (String, bool) {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory || url.contains("mode=") {
        return (url.to_owned(), in_memory);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}mode=rwc"), false)
}

/// Applies [`SQLITE_PRAGMAS`] to a new pool connection.
fn sqlite_after_connect(
    conn: &mut AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = std::result::Result<(), sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, SQLITE_PRAGMAS).await?;
        Ok(())
    })
}

/// Opens the pools (WAL, pragmas on every connection) and migrates on the first connection.
///
/// SQLite has one writer at a time. Writers of this process go through a pool of one
/// connection, so they queue in order on the pool (an async wait) instead of on the database
/// lock, whose busy handler retries after sleeps of up to 100 ms: with a thousand sessions
/// closing at once, a write waited there for over a second. Readers use their own pool and,
/// under WAL, never wait for the writer. (An in-memory database has one connection for both.)
async fn open_sqlite(url: &str) -> Result<Pools> {
    let (url, in_memory) = sqlite_url(url);
    let mut options = AnyPoolOptions::new().after_connect(sqlite_after_connect);
    options = if in_memory {
        // Every connection of an in-memory database must stay open, or the data is gone.
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options.max_connections(SQLITE_POOL_SIZE)
    };
    let pool = options.connect(&url).await?;
    let mut conn = pool.acquire().await?;
    if !in_memory {
        enable_wal(&mut conn).await?;
    }
    migrate::run(&mut conn, Engine::Sqlite).await?;
    drop(conn);
    if in_memory {
        return Ok(Pools {
            reader: pool.clone(),
            writer: pool,
        });
    }
    let writer = AnyPoolOptions::new()
        .after_connect(sqlite_after_connect)
        .max_connections(1)
        .connect(&url)
        .await?;
    Ok(Pools {
        reader: pool,
        writer,
    })
}

/// How often [`enable_wal`] waits for another connection before giving up.
const WAL_ATTEMPTS: u32 = 50;

/// Switches the database file to WAL (a persistent setting of the file).
///
/// The switch needs an exclusive lock that SQLite's busy timeout does not wait for, so when
/// another process holds the database (typically switching it too, or migrating), this waits for
/// that lock by taking the writer lock with `BEGIN IMMEDIATE` (which does honour the busy
/// timeout), releases it, and tries again.
async fn enable_wal(conn: &mut AnyConnection) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match sqlx::query("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(row) => Ok(row.try_get::<String, _>(0)?),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) if attempt >= WAL_ATTEMPTS => {
                return Err(StoreError::Database(sqlx::Error::Configuration(
                    format!("could not switch the SQLite database to WAL: it stays in {mode} mode")
                        .into(),
                )));
            }
            Err(e) if attempt >= WAL_ATTEMPTS => return Err(e.into()),
            Ok(_) | Err(_) => {
                let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                tx.rollback().await?;
            }
        }
    }
}

/// Migrates on a dedicated connection under the advisory lock, then opens the pool.
async fn open_postgres(url: &str) -> Result<AnyPool> {
    // A dedicated connection holds the advisory lock: closing it releases the lock whatever
    // happened during the migration.
    let mut conn = AnyConnection::connect(url).await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(migrate::PG_MIGRATION_LOCK)
        .execute(&mut conn)
        .await?;
    let migrated = migrate::run(&mut conn, Engine::Postgres).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(migrate::PG_MIGRATION_LOCK)
        .execute(&mut conn)
        .await;
    let closed = conn.close().await;
    migrated?;
    unlocked?;
    closed?;
    Ok(AnyPoolOptions::new()
        .max_connections(POSTGRES_POOL_SIZE)
        .connect(url)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_engines() {
        assert_eq!(
            Engine::from_url("sqlite:///tmp/x.db").unwrap(),
            Engine::Sqlite
        );
        assert_eq!(Engine::from_url("sqlite::memory:").unwrap(), Engine::Sqlite);
        assert_eq!(
            Engine::from_url("postgres://u@h/db").unwrap(),
            Engine::Postgres
        );
        assert_eq!(
            Engine::from_url("postgresql://u@h/db").unwrap(),
            Engine::Postgres
        );
        assert!(matches!(
            Engine::from_url("mysql://u@h/db"),
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn sqlite_urls_create_missing_files() {
        assert_eq!(
            sqlite_url("sqlite:///tmp/x.db"),
            ("sqlite:///tmp/x.db?mode=rwc".to_owned(), false)
        );
        assert_eq!(
            sqlite_url("sqlite:///tmp/x.db?cache=shared"),
            ("sqlite:///tmp/x.db?cache=shared&mode=rwc".to_owned(), false)
        );
        assert_eq!(
            sqlite_url("sqlite:///tmp/x.db?mode=ro"),
            ("sqlite:///tmp/x.db?mode=ro".to_owned(), false)
        );
        assert!(sqlite_url("sqlite::memory:").1);
    }
}
