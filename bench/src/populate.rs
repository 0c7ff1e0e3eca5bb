//! `wg-bench populate`: fills a store with live and closed sessions.
//!
//! The store is opened with [`Store::connect`], so its own migrations create the schema. Live
//! sessions go through [`Store::insert_session`] (the control plane's own write path, one
//! transaction each). Closed sessions — a million by default — go in with multi-row `INSERT`s of
//! every `sessions` column, many batches per transaction; the values are built as
//! [`SessionRecord`]s by the same generator and bound column by column the way the store binds
//! them. A final check reads rows of both kinds back through [`Store::list_sessions`], so a row
//! the store could not decode fails the run. On PostgreSQL the table is then `ANALYZE`d, which
//! autovacuum's auto-analyze does on its own shortly after a bulk load; SQLite is left as the
//! store leaves it (no `ANALYZE`, no statistics).
//!
//! The data (deterministic for a seed): actors `userNNNN@corp`, targets `tgt-NNNN` (3 % rdp,
//! 7 % pg, the rest ssh), gateways `gw-bench-N` (never `gw-dev-1`, whose open sessions
//! `wardengate dev` closes as lost at start). Live sessions started within the last 12 hours
//! (2 % within the last 7 days): 85 % active, 7 % idle, 4 % detached, 2 % opened, 1 % closing,
//! 0.5 % requested, 0.5 % approved; 55 % had input within the last 5 minutes. Closed sessions
//! started uniformly over the last `--days` days and lasted seconds to hours; 3 % denied.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, Row};
use wg_domain::SessionId;
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::time::{UnixMillis, now_millis};
use wg_store::{SessionFilter, SessionRecord, Store};

/// Arguments of `wg-bench populate`.
#[derive(Debug, clap::Args)]
pub(crate) struct PopulateArgs {
    /// Store URL: `sqlite://PATH` (created) or `postgres://…` (the database must exist).
    #[arg(long)]
    db: String,
    /// Live sessions (every state but closed).
    #[arg(long, default_value_t = 10_000)]
    live: u32,
    /// Closed sessions.
    #[arg(long, default_value_t = 1_000_000)]
    closed: u32,
    /// Distinct actors.
    #[arg(long, default_value_t = 2_000)]
    actors: u32,
    /// Distinct targets.
    #[arg(long, default_value_t = 500)]
    targets: u32,
    /// Distinct gateways.
    #[arg(long, default_value_t = 4)]
    gateways: u32,
    /// Closed sessions start within this many days before now.
    #[arg(long, default_value_t = 180)]
    days: u32,
    /// Seed of the generator (session IDs depend on it too).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rows per INSERT statement (default: 1 on SQLite, where sqlx binds a statement's
    /// parameters in time quadratic in their number, 500 on PostgreSQL).
    #[arg(long)]
    batch: Option<usize>,
    /// Rows per transaction.
    #[arg(long, default_value_t = 50_000)]
    tx_rows: usize,
}

/// splitmix64: small, fast, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next() % (hi - lo).unsigned_abs()) as i64
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const MASK48: u64 = (1 << 48) - 1;

/// A distinct, random-looking session ID for `n` (a bijection of 48-bit values).
fn session_id(n: u64, seed: u64) -> Result<SessionId> {
    let mut x = (n ^ (seed << 32)) & MASK48;
    x = x.wrapping_mul(0x5DEE_CE66_D1A5) & MASK48; // odd: invertible mod 2^48
    x ^= x >> 24;
    x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK48;
    Ok(format!("sess_{x:012x}").parse()?)
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

struct Generator<'a> {
    args: &'a PopulateArgs,
    rng: Rng,
    now: UnixMillis,
}

impl Generator<'_> {
    /// Protocol, port and account of target `t`.
    fn target(t: u32) -> (&'static str, u16, &'static str) {
        if t.is_multiple_of(30) {
            ("rdp", 3389, "Administrator")
        } else if t.is_multiple_of(14) {
            ("pg", 5432, "postgres")
        } else {
            ("ssh", 22, "root")
        }
    }

    /// The fields every session has, for a session started at `created`.
    fn base(&mut self, n: u64, state: SessionState, created: UnixMillis) -> Result<SessionRecord> {
        let a = self.args;
        let actor = u32::try_from(self.rng.below(u64::from(a.actors)))?;
        let t = u32::try_from(self.rng.below(u64::from(a.targets)))?;
        let g = self.rng.below(u64::from(a.gateways)) + 1;
        let (protocol, port, account) = Self::target(t);
        let pty = protocol == "ssh" && self.rng.chance(700);
        let mode = match self.rng.below(10) {
            0..=6 => "full",
            7 | 8 => "metadata",
            _ => "off",
        };
        Ok(SessionRecord {
            id: session_id(n, a.seed)?,
            state,
            actor: format!("user{actor:04}@corp"),
            actor_groups: vec!["corp".into(), format!("team-{:02}", actor % 20)],
            target: format!("tgt-{t:04}"),
            target_tags: [(
                "env".to_owned(),
                ["prod", "staging", "dev"][(t % 3) as usize].to_owned(),
            )]
            .into(),
            target_address: format!("10.1.{}.{}:{port}", t / 250, t % 250 + 1),
            protocol: protocol.into(),
            account: Some(account.into()),
            vault_path: Some(format!("vault/{protocol}/tgt-{t:04}")),
            policy: Some(format!("policy-team-{:02}", actor % 20)),
            mfa: None,
            gateway: format!("gw-bench-{g}"),
            gateway_address: Some(format!("10.0.0.{g}:22")),
            client_ip: Some(format!(
                "10.20.{}.{}",
                self.rng.below(256),
                self.rng.below(254) + 1
            )),
            client_geo: None,
            client_software: Some(
                match protocol {
                    "ssh" => "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
                    "pg" => "psql",
                    _ => "mstsc",
                }
                .into(),
            ),
            pty_term: pty.then(|| "xterm-256color".into()),
            pty_cols: pty.then_some(200),
            pty_rows: pty.then_some(50),
            recording_mode: mode.into(),
            recording_chunks: 0,
            recording_bytes: 0,
            recording_status: "none".into(),
            recording_sha256: None,
            created_ms: created,
            opened_ms: Some(created + self.rng.range(150, 900)),
            last_input_ms: created,
            ended_ms: None,
            end_reason: None,
            end_detail: None,
            exit_status: None,
        })
    }

    fn live(&mut self, n: u64) -> Result<SessionRecord> {
        let now = self.now;
        let created = if self.rng.chance(20) {
            now - self.rng.range(12 * HOUR, 7 * DAY)
        } else {
            now - self.rng.range(1_000, 12 * HOUR)
        };
        let state = match self.rng.below(1000) {
            0..=849 => SessionState::Active,
            850..=919 => SessionState::Idle,
            920..=959 => SessionState::Detached,
            960..=979 => SessionState::Opened,
            980..=989 => SessionState::Closing,
            990..=994 => SessionState::Requested,
            _ => SessionState::Approved,
        };
        let mut r = self.base(n, state, created)?;
        if matches!(state, SessionState::Requested | SessionState::Approved) {
            r.opened_ms = None;
            if state == SessionState::Requested {
                r.account = None;
                r.vault_path = None;
                r.policy = None;
            }
        } else {
            let opened = r.opened_ms.unwrap_or(created);
            let recent = self.rng.chance(550) && state != SessionState::Idle;
            r.last_input_ms = if recent {
                self.rng.range((now - 5 * MINUTE).max(opened), now)
            } else {
                self.rng.range(opened, (now - 5 * MINUTE).max(opened + 1))
            };
            if r.recording_mode != "off" {
                r.recording_status = "recording".into();
                r.recording_bytes = self.rng.below(4 << 20);
                r.recording_chunks = u32::try_from(r.recording_bytes / (256 << 10) + 1)?;
            }
        }
        Ok(r)
    }

    fn closed(&mut self, n: u64) -> Result<SessionRecord> {
        let now = self.now;
        let span = i64::from(self.args.days) * DAY;
        let created = now - self.rng.range(MINUTE, span);
        let mut r = self.base(n, SessionState::Closed, created)?;
        if self.rng.chance(30) {
            r.opened_ms = None;
            r.account = None;
            r.vault_path = None;
            r.policy = None;
            r.recording_mode = "off".into();
            r.ended_ms = Some(created + self.rng.range(5, 80));
            r.end_reason = Some(EndReason::Denied);
            r.end_detail = Some(format!("no policy admits {} to {}", r.actor, r.target));
            return Ok(r);
        }
        let length = match self.rng.below(10) {
            0..=3 => self.rng.range(2_000, 2 * MINUTE),
            4..=7 => self.rng.range(2 * MINUTE, HOUR),
            _ => self.rng.range(HOUR, 8 * HOUR),
        };
        let opened = r.opened_ms.unwrap_or(created);
        let ended = (opened + length).min(now - 1_000).max(opened + 1);
        r.ended_ms = Some(ended);
        r.last_input_ms = self.rng.range(opened, ended);
        let (reason, detail) = match self.rng.below(100) {
            0..=83 => (EndReason::ClientExit, None),
            84..=89 => (EndReason::IdleTimeout, None),
            90..=93 => (
                EndReason::Terminated,
                Some("terminated by operator: maintenance".to_owned()),
            ),
            94..=95 => (EndReason::TargetError, Some("target closed".to_owned())),
            96..=97 => (EndReason::ReconnectExpired, None),
            _ => (EndReason::GatewayLost, None),
        };
        r.end_reason = Some(reason);
        r.end_detail = detail;
        r.exit_status = (reason == EndReason::ClientExit).then(|| (self.rng.below(10) / 9) as i32);
        if r.recording_mode != "off" {
            r.recording_status = "sealed".into();
            r.recording_bytes = self.rng.below(8 << 20);
            r.recording_chunks = u32::try_from(r.recording_bytes / (256 << 10) + 1)?;
            r.recording_sha256 = Some(format!(
                "{:016x}{:016x}{:016x}{:016x}",
                self.rng.next(),
                self.rng.next(),
                self.rng.next(),
                self.rng.next()
            ));
        }
        Ok(r)
    }
}

/// The `sessions` columns, in the order wg-store binds a record.
use wg_store::SESSION_COLUMNS as COLUMNS;

/// Binds one record's values in [`COLUMNS`] order, typed as wg-store binds them (text, or
/// 64-bit integers; lists as JSON text).
fn bind_record<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    r: &SessionRecord,
) -> Result<Query<'q, Any, AnyArguments<'q>>> {
    Ok(q.bind(r.id.to_string())
        .bind(r.state.as_str().to_owned())
        .bind(r.actor.clone())
        .bind(serde_json::to_string(&r.actor_groups)?)
        .bind(r.target.clone())
        .bind(serde_json::to_string(&r.target_tags)?)
        .bind(r.target_address.clone())
        .bind(r.protocol.clone())
        .bind(r.account.clone())
        .bind(r.vault_path.clone())
        .bind(r.policy.clone())
        .bind(r.mfa.clone())
        .bind(r.gateway.clone())
        .bind(r.gateway_address.clone())
        .bind(r.client_ip.clone())
        .bind(r.client_geo.clone())
        .bind(r.client_software.clone())
        .bind(r.pty_term.clone())
        .bind(r.pty_cols.map(i64::from))
        .bind(r.pty_rows.map(i64::from))
        .bind(r.recording_mode.clone())
        .bind(i64::from(r.recording_chunks))
        .bind(i64::try_from(r.recording_bytes)?)
        .bind(r.recording_status.clone())
        .bind(r.recording_sha256.clone())
        .bind(r.created_ms)
        .bind(r.opened_ms)
        .bind(r.last_input_ms)
        .bind(r.ended_ms)
        .bind(r.end_reason.map(|e| e.as_str().to_owned()))
        .bind(r.end_detail.clone())
        .bind(r.exit_status.map(i64::from)))
}

/// `INSERT INTO sessions (…) VALUES (…), (…)` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let n = COLUMNS.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO sessions ({}) VALUES {}",
        COLUMNS.join(", "),
        values.join(", ")
    )
}

pub(crate) async fn run(args: PopulateArgs) -> Result<()> {
    let started = Instant::now();
    let store = Store::connect(&args.db)
        .await
        .with_context(|| format!("opening the store {}", args.db))?;
    let engine = store.engine();
    let batch = args
        .batch
        .unwrap_or(if engine == "sqlite" { 1 } else { 500 });
    if batch == 0 || batch * COLUMNS.len() > 32_000 {
        bail!("--batch must be between 1 and {}", 32_000 / COLUMNS.len());
    }
    let mut generator = Generator {
        args: &args,
        rng: Rng(args.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)),
        now: now_millis(),
    };

    // Live sessions: through the store's own write path, a few at a time.
    let live: Vec<SessionRecord> = (0..u64::from(args.live))
        .map(|n| generator.live(n))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    let results: Vec<_> = futures::stream::iter(live.iter())
        .map(|r| {
            let store = store.clone();
            async move { store.insert_session(r, None).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r.context("inserting a live session")?;
    }
    eprintln!(
        "populate: {} live sessions via Store::insert_session in {:.1}s",
        args.live,
        t.elapsed().as_secs_f64()
    );

    // Closed sessions: batched multi-row INSERTs, many per transaction.
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&args.db)
        .await
        .with_context(|| format!("connecting to {}", args.db))?;
    let t = Instant::now();
    let full_sql = insert_sql(batch);
    let first = u64::from(args.live);
    let total = u64::from(args.closed);
    let mut done: u64 = 0;
    while done < total {
        let mut tx = pool.begin().await?;
        let mut in_tx = 0;
        while in_tx < args.tx_rows && done < total {
            let rows = usize::try_from((total - done).min(batch as u64))?;
            let records: Vec<SessionRecord> = (0..rows as u64)
                .map(|i| generator.closed(first + done + i))
                .collect::<Result<_>>()?;
            let partial;
            let sql = if rows == batch {
                full_sql.as_str()
            } else {
                partial = insert_sql(rows);
                partial.as_str()
            };
            let mut q = sqlx::query(sql);
            for r in &records {
                q = bind_record(q, r)?;
            }
            q.execute(&mut *tx)
                .await
                .context("inserting closed sessions")?;
            done += rows as u64;
            in_tx += rows;
        }
        tx.commit().await?;
        if done % 200_000 < args.tx_rows as u64 || done == total {
            eprintln!(
                "populate: {done}/{total} closed sessions ({:.0} rows/s)",
                done as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "populate: {total} closed sessions in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    if engine == "postgres" {
        let t = Instant::now();
        sqlx::query("ANALYZE sessions").execute(&pool).await?;
        eprintln!(
            "populate: ANALYZE sessions in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }

    // Read back through the store: every row kind must decode.
    let counts = sqlx::query(
        "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN state = 'closed' THEN 1 ELSE 0 END), 0) AS closed FROM sessions",
    )
    .fetch_one(&pool)
    .await?;
    let (n, closed): (i64, i64) = (counts.try_get("n")?, counts.try_get("closed")?);
    let live_page = store.list_sessions(&SessionFilter::default()).await?;
    let closed_page = store
        .list_sessions(&SessionFilter {
            states: vec![SessionState::Closed],
            ..SessionFilter::default()
        })
        .await?;
    pool.close().await;
    store.close().await;
    eprintln!(
        "populate: {engine} store holds {n} sessions ({} live, {closed} closed); read back {} live and {} closed through Store::list_sessions; {:.1}s in all",
        n - closed,
        live_page.len(),
        closed_page.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
