//! The gateway's event journal: every lifecycle report and gateway-decided audit event is
//! numbered, written to disk, and delivered to the control plane in order by one sender task
//! ([`run_sender`]), which forgets events only once the control plane acknowledged them.
//!
//! So a session never waits for the control plane to hear about it, and a control plane that is
//! unreachable for a while (a restart, a failover, a network cut) loses nothing: the events are
//! replayed in order when it is back, and the control plane applies each exactly once (it keeps,
//! per gateway and journal, the highest sequence number applied; see `wg-store`'s
//! `gateway_event_journals`). The journal survives a gateway restart: unacknowledged events are
//! replayed by the next process.
//!
//! On disk (`DIR/`):
//! - `journal.state`: `{"id": "<16 hex>", "acked": N}`, rewritten (write, fsync, rename) when the
//!   log is compacted. `id` names the journal; a gateway whose directory was wiped starts a new
//!   journal numbered from 1, which the control plane tells apart from a replay.
//! - `journal.log`: records `len: u32 LE | crc32c(payload): u32 LE | payload`, the payload a
//!   protobuf `wardengate.v1.GatewayEvent`. A torn or corrupt tail (a crash mid-write, a damaged
//!   disk) is cut off at open, loudly, and numbering resumes past any number the cut bytes could
//!   have held. Records at or below `acked` were acknowledged before the log was last compacted
//!   and are skipped; acknowledged records after that are sent again (the control plane skips
//!   them as replays).
//!
//! Bounds: the journal holds at most `max_bytes` of unacknowledged events before the gateway
//! refuses new connections ([`Journal::accepting`]); events of sessions already running are
//! still journaled (their number is bounded by the live sessions), so nothing is ever dropped.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;
use wg_proto::v1::{GatewayEvent, SessionEvent, SessionReport, gateway_event};

use crate::control::ControlClient;
use crate::runtime::Runtime;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Largest record accepted when reading the log back, in bytes (a longer length field is
/// corruption).
const MAX_RECORD: u32 = 4 << 20;

/// When the acknowledged prefix of the log exceeds this many bytes, the log is rewritten with the
/// unacknowledged events only.
const COMPACT_AFTER: u64 = 1 << 20;

/// Events sent to the control plane per call, at most.
const BATCH: usize = 128;

/// The default bound on unacknowledged events, in bytes (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// An error opening the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The directory or a file could not be read or written.
    #[error("event journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `journal.state` is not what this gateway writes.
    #[error("event journal {path}: unreadable state ({message})")]
    BadState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    id: String,
    acked: u64,
}

struct Pending {
    seq: u64,
    event: GatewayEvent,
    bytes: u64,
}

struct Inner {
    log: File,
    /// Next sequence number to hand out.
    next_seq: u64,
    /// Everything up to here is acknowledged.
    acked: u64,
    pending: VecDeque<Pending>,
    pending_bytes: u64,
    /// Bytes of the log taken by acknowledged records.
    dead_bytes: u64,
    /// The last write failed: the journal keeps the events in memory, but admits no new work.
    write_failed: bool,
}

/// The event journal (see the module documentation). Cheap to share (`Arc`).
pub struct Journal {
    dir: PathBuf,
    id: String,
    max_bytes: u64,
    inner: std::sync::Mutex<Inner>,
    wake: tokio::sync::Notify,
    acked_tx: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, keeping at most `max_bytes` of unacknowledged
    /// events before new work is refused. Unacknowledged events of a previous process are
    /// loaded for replay; a torn tail is cut off.
    ///
    /// # Errors
    /// [`JournalError`] when the directory cannot be created or a file cannot be read or
    /// written, or `journal.state` is corrupt.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let state_path = dir.join("journal.state");
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<StateFile>(&bytes).map_err(|e| JournalError::BadState {
                    path: state_path.clone(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = wg_domain::ids::random_hex(8).map_err(|e| JournalError::BadState {
                    path: state_path.clone(),
                    message: e.to_string(),
                })?;
                let fresh = StateFile { id, acked: 0 };
                write_state(dir, &fresh)?;
                fresh
            }
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        let log_path = dir.join("journal.log");
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io_err(&log_path))?;
        let (records, valid) = parse_log(&bytes);
        let cut = (bytes.len() - valid) as u64;
        if cut > 0 {
            tracing::error!(
                path = %log_path.display(),
                cut,
                "event journal: cut off a torn or corrupt tail (events in it are lost)"
            );
            log.set_len(valid as u64).map_err(io_err(&log_path))?;
        }
        let mut pending = VecDeque::new();
        let mut pending_bytes = 0;
        let mut dead_bytes = 0;
        let mut last = state.acked;
        for (event, size) in records {
            if event.seq <= last {
                dead_bytes += size;
                continue;
            }
            last = event.seq;
            pending_bytes += size;
            pending.push_back(Pending {
                seq: event.seq,
                event,
                bytes: size,
            });
        }
        if !pending.is_empty() {
            tracing::info!(
                events = pending.len(),
                "event journal: replaying unacknowledged events"
            );
        }
        let (acked_tx, _) = tokio::sync::watch::channel(state.acked);
        // Numbers that the cut-off bytes may have carried are never handed out again: the
        // control plane may have applied some of them already and would take new events under
        // them for replays. Every record takes more than 8 bytes, so this skips past them all
        // (the control plane accepts gaps).
        let next_seq = last + 1 + cut / 8;
        Ok(Journal {
            dir: dir.to_owned(),
            id: state.id,
            max_bytes,
            inner: std::sync::Mutex::new(Inner {
                log,
                next_seq,
                acked: state.acked,
                pending,
                pending_bytes,
                dead_bytes,
                write_failed: false,
            }),
            wake: tokio::sync::Notify::new(),
            acked_tx,
        })
    }

    /// The journal's ID (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the gateway may take new work: the unacknowledged events fit the bound and the
    /// journal can be written. `Err` carries the line to tell a refused client.
    ///
    /// # Errors
    /// The refusal line.
    pub fn accepting(&self) -> Result<(), String> {
        let Ok(inner) = self.inner.lock() else {
            return Err("gateway event journal unavailable".into());
        };
        if inner.write_failed {
            return Err("gateway event journal cannot be written (disk full?)".into());
        }
        if inner.pending_bytes > self.max_bytes {
            return Err(format!(
                "control plane unreachable: {} events wait for delivery",
                inner.pending.len()
            ));
        }
        Ok(())
    }

    /// Unacknowledged events.
    pub fn pending(&self) -> usize {
        self.inner.lock().map(|i| i.pending.len()).unwrap_or(0)
    }

    /// Journals a lifecycle report (the gateway name is filled in by the sender's client).
    /// Returns its sequence number.
    pub fn report(&self, mut report: SessionReport) -> u64 {
        if report.time_ms == 0 {
            report.time_ms = wg_domain::time::now_millis();
        }
        self.append(gateway_event::Event::Report(report))
    }

    /// Journals a gateway-decided audit event (`details` a JSON object). Returns its sequence
    /// number.
    pub fn audit(&self, session: &str, kind: &str, details: &serde_json::Value) -> u64 {
        self.append(gateway_event::Event::Audit(SessionEvent {
            session_id: session.to_owned(),
            gateway: String::new(),
            kind: kind.to_owned(),
            details_json: details.to_string(),
        }))
    }

    /// Journals a report and waits up to `wait` for the control plane to acknowledge it (for a
    /// step whose effect the next request depends on, e.g. `detached` before a client comes
    /// back). Returns whether it was acknowledged; either way the report stays journaled.
    pub async fn report_acked(&self, report: SessionReport, wait: Duration) -> bool {
        let mut acked = self.acked_tx.subscribe();
        let seq = self.report(report);
        tokio::time::timeout(wait, acked.wait_for(|a| *a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn append(&self, event: gateway_event::Event) -> u64 {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let event = GatewayEvent {
            seq,
            event: Some(event),
        };
        let record = encode_record(&event);
        let bytes = record.len() as u64;
        if let Err(e) = inner.log.write_all(&record) {
            // Kept in memory: delivered if this process lives on; new work is refused.
            if !inner.write_failed {
                tracing::error!(error = %e, "event journal: cannot write; refusing new connections");
            }
            inner.write_failed = true;
        } else if inner.write_failed {
            inner.write_failed = false;
        }
        inner.pending_bytes += bytes;
        inner.pending.push_back(Pending { seq, event, bytes });
        drop(inner);
        self.wake.notify_one();
        seq
    }

    /// Up to `max` unacknowledged events, oldest first.
    fn batch(&self, max: usize) -> Vec<GatewayEvent> {
        self.inner
            .lock()
            .map(|i| {
                i.pending
                    .iter()
                    .take(max)
                    .map(|p| p.event.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Flushes the log to stable storage (outside the lock: appends go on meanwhile).
    fn sync(&self) {
        let file = self.inner.lock().ok().and_then(|i| i.log.try_clone().ok());
        if let Some(f) = file
            && let Err(e) = f.sync_data()
        {
            tracing::warn!(error = %e, "event journal: fsync failed");
        }
    }

    /// Forgets every event up to `through` (acknowledged by the control plane), compacting the
    /// log when it is empty or mostly acknowledged.
    fn ack(&self, through: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if through <= inner.acked {
            return;
        }
        while inner.pending.front().is_some_and(|p| p.seq <= through) {
            if let Some(p) = inner.pending.pop_front() {
                inner.pending_bytes -= p.bytes;
                inner.dead_bytes += p.bytes;
            }
        }
        inner.acked = through;
        if (inner.pending.is_empty() || inner.dead_bytes > COMPACT_AFTER)
            && let Err(e) = self.compact(&mut inner)
        {
            tracing::warn!(error = %e, "event journal: compaction failed; will retry");
        }
        drop(inner);
        self.acked_tx.send_replace(through);
    }

    /// Rewrites the log with the unacknowledged events only. The state (with the new `acked`) is
    /// written first, so that a crash in between leaves acknowledged records that are skipped.
    fn compact(&self, inner: &mut Inner) -> Result<(), JournalError> {
        write_state(
            &self.dir,
            &StateFile {
                id: self.id.clone(),
                acked: inner.acked,
            },
        )?;
        let log_path = self.dir.join("journal.log");
        if inner.pending.is_empty() {
            inner.log.set_len(0).map_err(io_err(&log_path))?;
        } else {
            let tmp = self.dir.join("journal.log.tmp");
            let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
            for p in &inner.pending {
                out.write_all(&encode_record(&p.event))
                    .map_err(io_err(&tmp))?;
            }
            out.sync_data().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &log_path).map_err(io_err(&log_path))?;
            inner.log = OpenOptions::new()
                .append(true)
                .open(&log_path)
                .map_err(io_err(&log_path))?;
        }
        inner.dead_bytes = 0;
        Ok(())
    }
}

fn write_state(dir: &Path, state: &StateFile) -> Result<(), JournalError> {
    let tmp = dir.join("journal.state.tmp");
    let path = dir.join("journal.state");
    let bytes = serde_json::to_vec(state).map_err(|e| JournalError::BadState {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    f.sync_data().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

fn encode_record(event: &GatewayEvent) -> Vec<u8> {
    let payload = event.encode_to_vec();
    let mut record = Vec::with_capacity(payload.len() + 8);
    // A journaled event is a few hundred bytes; u32 always holds it.
    record.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    record.extend_from_slice(&CRC.checksum(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

/// The complete records of `bytes` (each with its size in bytes) and the length of the valid
/// prefix; reading stops at the first torn or corrupt record.
fn parse_log(bytes: &[u8]) -> (Vec<(GatewayEvent, u64)>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            break;
        }
        let end = at + 8 + len as usize;
        let Some(payload) = bytes.get(at + 8..end) else {
            break;
        };
        if CRC.checksum(payload) != crc {
            break;
        }
        let Ok(event) = GatewayEvent::decode(payload) else {
            break;
        };
        out.push((event, (end - at) as u64));
        at = end;
    }
    (out, at)
}

/// Delivers the journal to the control plane in order, in batches, until `stop` is cancelled and
/// (then) for at most `drain` more to deliver what is left (the rest stays on disk for the next
/// process). Sessions the control plane names as closed are severed.
pub(crate) async fn run_sender(
    journal: Arc<Journal>,
    control: ControlClient,
    runtime: Arc<Runtime>,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut failing = false;
    loop {
        if deadline.is_none() && stop.is_cancelled() {
            deadline = Some(tokio::time::Instant::now() + drain);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return;
        }
        let wake = journal.wake.notified();
        let batch = journal.batch(BATCH);
        let Some(last) = batch.last().map(|e| e.seq) else {
            if deadline.is_some() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = wake => {}
            }
            continue;
        };
        journal.sync();
        match control.report_events(journal.id(), batch).await {
            Ok(ack) => {
                if failing {
                    tracing::info!("control plane reachable again; journaled events delivered");
                    failing = false;
                }
                journal.ack(ack.applied_through);
                for id in &ack.sever {
                    runtime.sever_closed(id);
                }
                if ack.applied_through >= last {
                    backoff = Duration::from_millis(50);
                    continue;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, pending = journal.pending(), "cannot deliver journaled events; retrying");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled(), if deadline.is_none() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn report(id: &str, state: &str) -> SessionReport {
        SessionReport {
            session_id: id.into(),
            state: state.into(),
            time_ms: 1,
            ..Default::default()
        }
    }

    fn seqs(j: &Journal) -> Vec<u64> {
        j.batch(100).iter().map(|e| e.seq).collect()
    }

    #[test]
    fn events_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let id = j.id().to_owned();
        assert_eq!(j.report(report("sess_000000000001", "opened")), 1);
        assert_eq!(j.report(report("sess_000000000001", "active")), 2);
        assert_eq!(
            j.audit(
                "sess_000000000001",
                "session.forward.denied",
                &serde_json::json!({})
            ),
            3
        );
        j.ack(1);
        drop(j);
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(j.id(), id, "the same journal");
        // 1 was acknowledged, but the log is compacted (and the position saved) only when it
        // empties or its acknowledged part grows large: 1 is sent again, and the control plane
        // skips it as a replay.
        assert_eq!(seqs(&j), vec![1, 2, 3]);
        assert_eq!(j.report(report("sess_000000000001", "closed")), 4);
        j.ack(4);
        assert_eq!(j.pending(), 0);
        assert_eq!(
            std::fs::metadata(dir.path().join("journal.log"))
                .unwrap()
                .len(),
            0,
            "an empty journal truncates its log"
        );
        drop(j);
        // Numbering goes on after a truncated log (the state keeps the position).
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(j.report(report("sess_000000000002", "opened")), 5);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        j.report(report("sess_000000000001", "opened"));
        j.report(report("sess_000000000001", "active"));
        drop(j);
        let path = dir.path().join("journal.log");
        let len = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the second record's write.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(seqs(&j), vec![1]);
        // The next event does not take a number the lost bytes may have carried (the control
        // plane might have applied it and would skip the new event as a replay).
        let next = j.report(report("sess_000000000001", "closed"));
        assert!(next > 2, "{next}");
        drop(j);
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(seqs(&j), vec![1, next]);
        // A flipped bit is corruption: reading stops there.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        drop(j);
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(seqs(&j), vec![1]);
    }

    #[test]
    fn compaction_keeps_only_unacknowledged_events() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let detail = "x".repeat(2000);
        for _ in 0..1000 {
            let mut r = report("sess_000000000001", "active");
            r.end_detail = detail.clone();
            j.report(r);
        }
        j.ack(990);
        assert!(
            std::fs::metadata(dir.path().join("journal.log"))
                .unwrap()
                .len()
                < 50_000,
            "the acknowledged prefix was dropped"
        );
        drop(j);
        let j = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(seqs(&j), (991..=1000).collect::<Vec<_>>());
    }

    #[test]
    fn over_the_bound_new_work_is_refused_but_nothing_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1000).unwrap();
        assert!(j.accepting().is_ok());
        for _ in 0..50 {
            j.report(report("sess_000000000001", "active"));
        }
        let refusal = j.accepting().unwrap_err();
        assert!(refusal.contains("control plane unreachable"), "{refusal}");
        assert_eq!(j.pending(), 50);
        j.ack(50);
        assert!(j.accepting().is_ok());
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_new_journal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal.state"), b"{not json").unwrap();
        let e = Journal::open(dir.path(), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(e.to_string().contains("unreadable state"), "{e}");
    }
}
