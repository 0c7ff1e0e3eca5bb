//! The live recorder: a cheap [`Recorder`] handle feeding a per-session writer task.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cast::{Utf8Decoder, header_line, write_event};
use crate::disk::{Batch, Closing, Disk, Finish};
use crate::{Frame, Header, Progress, RecorderConfig, RecordingError, Seal, session_dir};

/// Serialised events are handed to the disk once this many bytes are buffered (64 KiB), or on
/// the flush tick, or when a chunk closes.
const WRITE_BATCH: usize = 64 * 1024;

/// Closed chunks allowed to wait for their fsync before the writer waits for the disk.
const MAX_UNSYNCED_CHUNKS: usize = 4;

/// State shared between the handles, the writer task and the disk side.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Chunks started so far.
    pub(crate) chunks: AtomicU32,
    /// Stream bytes handed to the OS so far.
    pub(crate) bytes: AtomicU64,
    /// Set (under the lock) when a seal request is queued; a frame is only enqueued while
    /// holding this lock and seeing `false`, so every accepted frame precedes the seal request.
    sealing: Mutex<bool>,
    /// First writer failure, as text; later `record` calls fail fast with it.
    failed: OnceLock<String>,
    /// The outcome of sealing, for repeated `seal` calls.
    seal: OnceLock<Result<Seal, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Msg {
    /// A frame and its time since the recording started.
    Frame(Duration, Frame),
    Seal(oneshot::Sender<Result<Seal, RecordingError>>),
}

/// A handle to a session's recording; cheap to clone (all clones feed the same writer task).
///
/// # Design
///
/// [`Recorder::record`] timestamps the frame and puts it on a bounded queue
/// ([`RecorderConfig::queue_frames`] frames); when the queue is full it waits, so a slow disk
/// slows the relay instead of growing memory. A writer task (one per session) drains the queue,
/// decodes bytes to text, and serialises event lines with `serde_json` into a reusable
/// in-memory buffer: no syscall and, in steady state, no allocation per frame.
///
/// **Blocking I/O.** File writes, fsyncs and hashing run on tokio's blocking pool via
/// `spawn_blocking`, one call per *batch* (64 KiB of events, a flush tick or a chunk close),
/// never per frame. The writer keeps two buffers: while one batch is being written and hashed
/// on the blocking pool, the task keeps draining the queue into the other, so serialisation and
/// disk I/O overlap and the async worker threads never block on the disk. A closed chunk's
/// fsync and manifest update run as a separate background job (one at a time, batching
/// several chunks under load) so they overlap with writing the next chunk; at most a few
/// closed chunks wait for their fsync before the writer waits too. (`tokio::fs` would
/// also use `spawn_blocking`, but per operation and with its own extra copy; `block_in_place`
/// panics on a current-thread runtime.) The writer does not hold a blocking thread while idle,
/// so thousands of mostly idle sessions cost no threads.
///
/// Every `flush_interval` the buffered events are handed to the OS, and a chunk that holds
/// events and has been open for `chunk_interval` is closed. When every handle is dropped
/// without [`Recorder::seal`], the writer still writes every accepted frame, closes the last
/// chunk and leaves the manifest in status `recording` for [`crate::seal_partial`]. If the
/// runtime shuts down under the writer, its teardown writes what it holds synchronously.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    started: Instant,
    session: Arc<str>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("session", &self.session)
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts recording session `session_id` under `config.root`: creates `root/<session_id>/`
    /// (mode 0700), writes the initial manifest (status `recording`) and the header into chunk 1,
    /// then spawns the writer task. Event times are measured from this call.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`RecordingError::InvalidSessionId`], [`RecordingError::InvalidConfig`],
    /// [`RecordingError::AlreadySealed`] if the directory holds a sealed recording,
    /// [`RecordingError::AlreadyExists`] if it holds an unsealed one, or I/O errors.
    pub async fn start(
        config: &RecorderConfig,
        session_id: &str,
        header: Header,
    ) -> Result<Recorder, RecordingError> {
        let dir = session_dir(&config.root, session_id)?;
        config.validate()?;
        let header = header_line(&header)?;
        let header_len = header.len() as u64;
        let shared = Arc::new(Shared::default());
        let disk = {
            let (shared, session) = (shared.clone(), session_id.to_string());
            tokio::task::spawn_blocking(move || Disk::create(dir, session, header, shared))
                .await
                .map_err(|e| RecordingError::WriterFailed(format!("recording setup task: {e}")))??
        };
        let started = Instant::now();
        let (tx, rx) = mpsc::channel(config.queue_frames);
        let writer = Writer {
            rx,
            closing: disk.closing(),
            closer: None,
            disk: Arc::new(Mutex::new(disk)),
            inflight: None,
            buf: Vec::with_capacity(WRITE_BATCH + 4096),
            spare: Vec::with_capacity(WRITE_BATCH + 4096),
            out: Utf8Decoder::default(),
            input: Utf8Decoder::default(),
            scratch: String::new(),
            last_micros: 0,
            chunk_open: true,
            chunk_len: header_len,
            chunk_events: 0,
            chunk_opened: started,
            chunk_bytes: config.chunk_bytes,
            chunk_interval: config.chunk_interval,
            flush_interval: config.flush_interval,
            shared: shared.clone(),
            session: session_id.to_string(),
            finished: false,
            failed: false,
        };
        tokio::spawn(writer.run());
        tracing::debug!(session = session_id, "recording started");
        Ok(Recorder {
            tx,
            shared,
            started,
            session: session_id.into(),
        })
    }

    /// Records one frame. Its timestamp (time since [`Recorder::start`], monotonic) is taken
    /// here, at submission; the writer keeps event times non-decreasing in the file even if
    /// concurrent submitters race. Waits while the queue is full (backpressure).
    ///
    /// Once this returns `Ok`, the frame will be written — before the seal if sealed, or before
    /// the writer exits if every handle is dropped.
    ///
    /// # Errors
    /// [`RecordingError::Closed`] after [`Recorder::seal`] (or if the writer is gone),
    /// [`RecordingError::WriterFailed`] after a disk error.
    pub async fn record(&self, frame: Frame) -> Result<(), RecordingError> {
        let at = self.started.elapsed();
        if let Some(e) = self.shared.failed.get() {
            return Err(RecordingError::WriterFailed(e.clone()));
        }
        let permit = self
            .tx
            .reserve()
            .await
            .map_err(|_| RecordingError::Closed)?;
        let sealing = lock(&self.shared.sealing);
        if *sealing {
            return Err(RecordingError::Closed);
        }
        permit.send(Msg::Frame(at, frame));
        Ok(())
    }

    /// Progress so far, from atomics (no waiting): chunks started (at least 1) and stream bytes
    /// handed to the OS.
    pub fn progress(&self) -> Progress {
        Progress {
            chunks: self.shared.chunks.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }

    /// Seals the recording: every frame accepted before this call is written, the last chunk is
    /// closed (fsynced, hashed), `SHA256SUMS` and the manifest (status `sealed`, with the seal:
    /// the SHA-256 of the whole stream) are written atomically. Idempotent: later calls, from
    /// any clone, return the same [`Seal`]. [`Recorder::record`] fails afterwards.
    ///
    /// # Errors
    /// I/O errors while writing or sealing ([`RecordingError::WriterFailed`] on repeated
    /// calls after such a failure).
    pub async fn seal(&self) -> Result<Seal, RecordingError> {
        if let Some(r) = self.shared.seal.get() {
            return cached(r);
        }
        let (reply, answer) = oneshot::channel();
        match self.tx.reserve().await {
            Ok(permit) => {
                let mut sealing = lock(&self.shared.sealing);
                *sealing = true;
                permit.send(Msg::Seal(reply));
            }
            Err(_) => return self.cached_or_closed(),
        }
        match answer.await {
            Ok(r) => r,
            Err(_) => self.cached_or_closed(),
        }
    }

    fn cached_or_closed(&self) -> Result<Seal, RecordingError> {
        match self.shared.seal.get() {
            Some(r) => cached(r),
            None => match self.shared.failed.get() {
                Some(e) => Err(RecordingError::WriterFailed(e.clone())),
                None => Err(RecordingError::Closed),
            },
        }
    }
}

fn cached(r: &Result<Seal, String>) -> Result<Seal, RecordingError> {
    r.clone().map_err(RecordingError::WriterFailed)
}

/// What a batch on the blocking pool yields: its cleared buffer and, when finishing, the seal.
type BatchOutcome = (Vec<u8>, Result<Option<Seal>, RecordingError>);

/// The async half of a recorder (see [`Recorder`]).
struct Writer {
    rx: mpsc::Receiver<Msg>,
    disk: Arc<Mutex<Disk>>,
    /// The batch being written on the blocking pool; yields the buffer back for reuse.
    inflight: Option<JoinHandle<BatchOutcome>>,
    /// Closed chunks awaiting fsync, and the background job syncing them (one at a time).
    closing: Arc<Closing>,
    closer: Option<JoinHandle<Result<(), RecordingError>>>,
    /// Serialised events not yet handed to the disk.
    buf: Vec<u8>,
    /// The other buffer, reused for the next batch.
    spare: Vec<u8>,
    out: Utf8Decoder,
    input: Utf8Decoder,
    scratch: String,
    last_micros: u64,
    /// Whether the stream has a chunk in progress (counting buffered bytes).
    chunk_open: bool,
    chunk_len: u64,
    chunk_events: u64,
    chunk_opened: Instant,
    chunk_bytes: u64,
    chunk_interval: Duration,
    flush_interval: Duration,
    shared: Arc<Shared>,
    session: String,
    /// Finish (seal or abandon) has been dispatched; teardown has nothing of its own to add.
    finished: bool,
    failed: bool,
}

impl Writer {
    async fn run(mut self) {
        let mut tick =
            tokio::time::interval_at(Instant::now() + self.flush_interval, self.flush_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(Msg::Frame(at, frame)) => self.on_frame(at, &frame).await,
                    Some(Msg::Seal(reply)) => {
                        let result = self.finish(Finish::Seal).await;
                        let for_cache = match &result {
                            Ok(Some(seal)) => Ok(seal.clone()),
                            Ok(None) => Err("writer returned no seal".to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        let _ = self.shared.seal.set(for_cache.clone());
                        let answer = match result {
                            Ok(Some(seal)) => Ok(seal),
                            Ok(None) => Err(RecordingError::WriterFailed("writer returned no seal".into())),
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(answer);
                        break;
                    }
                    None => {
                        if let Err(e) = self.finish(Finish::Abandon).await {
                            tracing::error!(session = %self.session, error = %e, "cannot flush abandoned recording");
                        }
                        return;
                    }
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
        // Sealed: answer late seal requests from other clones until every handle is gone.
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Msg::Seal(reply) => {
                    let answer = match self.shared.seal.get() {
                        Some(r) => cached(r),
                        None => Err(RecordingError::Closed),
                    };
                    let _ = reply.send(answer);
                }
                Msg::Frame(..) => {
                    // Unreachable: frames are only enqueued before the seal request.
                    tracing::warn!(session = %self.session, "frame after seal ignored");
                }
            }
        }
    }

    async fn on_frame(&mut self, at: Duration, frame: &Frame) {
        if self.failed || self.finished {
            return;
        }
        self.encode(at, frame);
        if self.chunk_open && self.chunk_len >= self.chunk_bytes {
            self.dispatch_or_fail(true).await;
        } else if self.buf.len() >= WRITE_BATCH {
            self.dispatch_or_fail(false).await;
        }
    }

    async fn on_tick(&mut self) {
        if self.failed || self.finished {
            return;
        }
        let expired = self.chunk_open
            && self.chunk_events > 0
            && self.chunk_opened.elapsed() >= self.chunk_interval;
        if expired || !self.buf.is_empty() {
            self.dispatch_or_fail(expired).await;
        } else {
            // Reap finished jobs so a disk error surfaces without waiting for more traffic,
            // and sync chunks closed by the last batch.
            let mut result = Ok(None);
            if self.inflight.as_ref().is_some_and(JoinHandle::is_finished) {
                result = self.reap().await;
            }
            if let Err(e) = result.and(self.pump_closer().await) {
                self.fail(&e);
            }
        }
    }

    /// Serialises one frame into `buf`.
    fn encode(&mut self, at: Duration, frame: &Frame) {
        let micros = u64::try_from(at.as_micros())
            .unwrap_or(u64::MAX)
            .max(self.last_micros);
        self.last_micros = micros;
        let n = match frame {
            Frame::Output(data) => {
                let text = self.out.decode(data);
                if text.is_empty() {
                    0
                } else {
                    write_event(&mut self.buf, micros, "o", text)
                }
            }
            Frame::Input(data) => {
                let text = self.input.decode(data);
                if text.is_empty() {
                    0
                } else {
                    write_event(&mut self.buf, micros, "i", text)
                }
            }
            Frame::Resize { cols, rows } => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{cols}x{rows}");
                write_event(&mut self.buf, micros, "r", &self.scratch)
            }
            Frame::Marker(label) => write_event(&mut self.buf, micros, "m", label),
        };
        self.account(n);
    }

    /// Records U+FFFD for incomplete UTF-8 sequences still held back at the end.
    fn encode_dangling(&mut self) {
        let micros = self.last_micros;
        let replacement = char::REPLACEMENT_CHARACTER
            .encode_utf8(&mut [0; 4])
            .to_string();
        if self.out.take_dangling() {
            let n = write_event(&mut self.buf, micros, "o", &replacement);
            self.account(n);
        }
        if self.input.take_dangling() {
            let n = write_event(&mut self.buf, micros, "i", &replacement);
            self.account(n);
        }
    }

    fn account(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if !self.chunk_open {
            self.chunk_open = true;
            self.chunk_len = 0;
            self.chunk_events = 0;
            self.chunk_opened = Instant::now();
        }
        self.chunk_len += n as u64;
        self.chunk_events += 1;
    }

    async fn dispatch_or_fail(&mut self, close_chunk: bool) {
        if let Err(e) = self.dispatch(close_chunk, None).await {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &RecordingError) {
        tracing::error!(session = %self.session, error = %e, "recording writer failed");
        self.failed = true;
        let _ = self.shared.failed.set(e.to_string());
    }

    /// Waits for the batch in flight, then hands `buf` (and what to do after it) to the
    /// blocking pool. With `finish`, also waits for it and returns its outcome.
    async fn dispatch(
        &mut self,
        close_chunk: bool,
        finish: Option<Finish>,
    ) -> Result<Option<Seal>, RecordingError> {
        self.reap().await?;
        if finish.is_none() {
            self.pump_closer().await?;
        }
        let data = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        let close_chunk = close_chunk || finish.is_some();
        lock(&self.disk).pending = Some(Batch {
            data,
            close_chunk,
            finish,
        });
        let disk = self.disk.clone();
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            lock(&disk).run_pending()
        }));
        if close_chunk {
            self.chunk_open = false;
            self.chunk_len = 0;
            self.chunk_events = 0;
        }
        if finish.is_some() {
            self.reap().await
        } else {
            Ok(None)
        }
    }

    /// Waits for the batch in flight (if any) and takes its buffer back.
    async fn reap(&mut self) -> Result<Option<Seal>, RecordingError> {
        let Some(handle) = self.inflight.take() else {
            return Ok(None);
        };
        match handle.await {
            Ok((buf, result)) => {
                if buf.capacity() > self.spare.capacity() {
                    self.spare = buf;
                }
                result
            }
            Err(e) => Err(RecordingError::WriterFailed(format!(
                "recording disk task: {e}"
            ))),
        }
    }

    /// Starts the background sync of closed chunks if any are queued and no sync is running;
    /// waits for the running one first when too many are queued (backpressure).
    async fn pump_closer(&mut self) -> Result<(), RecordingError> {
        let unsynced = self.closing.unsynced();
        if let Some(job) = &self.closer
            && (job.is_finished() || unsynced >= MAX_UNSYNCED_CHUNKS)
        {
            self.wait_closer().await?;
        }
        if self.closer.is_none() && unsynced > 0 {
            let closing = self.closing.clone();
            self.closer = Some(tokio::task::spawn_blocking(move || closing.sync_queued()));
        }
        Ok(())
    }

    async fn wait_closer(&mut self) -> Result<(), RecordingError> {
        match self.closer.take() {
            Some(job) => job
                .await
                .map_err(|e| RecordingError::WriterFailed(format!("recording sync task: {e}")))?,
            None => Ok(()),
        }
    }

    async fn finish(&mut self, kind: Finish) -> Result<Option<Seal>, RecordingError> {
        if self.failed {
            let msg = self.shared.failed.get().cloned().unwrap_or_default();
            return Err(RecordingError::WriterFailed(msg));
        }
        self.encode_dangling();
        self.finished = true;
        // Surface earlier write / sync failures before sealing; the final batch itself syncs
        // every chunk still queued.
        let mut result = self.reap().await.map(|_| None);
        if result.is_ok() {
            result = self.wait_closer().await.map(|()| None);
        }
        if result.is_ok() {
            result = self.dispatch(true, Some(kind)).await;
        }
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }
}

impl Drop for Writer {
    /// Teardown when the task is dropped before finishing (runtime shutdown): synchronously
    /// apply the batch handed over but possibly never run, then everything still queued or
    /// buffered, so accepted frames are not lost. A normal exit finds nothing to do.
    fn drop(&mut self) {
        let mut disk = lock(&self.disk);
        if disk.pending.is_some()
            && let (_, Err(e)) = disk.run_pending()
        {
            tracing::error!(session = %self.session, error = %e, "recording teardown write failed");
            return;
        }
        if self.finished || self.failed {
            return;
        }
        drop(disk);
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Frame(at, frame) = msg {
                self.encode(at, &frame);
            }
        }
        self.encode_dangling();
        let data = std::mem::take(&mut self.buf);
        let mut disk = lock(&self.disk);
        disk.pending = Some(Batch {
            data,
            close_chunk: true,
            finish: Some(Finish::Abandon),
        });
        if let (_, Err(e)) = disk.run_pending() {
            tracing::error!(session = %self.session, error = %e, "recording teardown write failed");
        }
    }
}
