//! Session recordings (PRODUCT spec §6): a chunked [asciicast v2] writer, the sealing manifest,
//! verification and playback.
//!
//! # Format and layout
//!
//! A recording is one asciicast v2 *stream*: a JSON header line followed by one JSON event line
//! per frame, `[time_seconds, "o"|"i"|"r"|"m", "data"]`. The stream is split into chunk files
//! on disk; chunk 1 starts with the header, so concatenating the chunks in order
//! (`cat chunk-*.cast`) yields a valid `.cast` file. An event line is never split across chunks.
//!
//! ```text
//! ROOT/<session_id>/chunk-000001.cast
//! ROOT/<session_id>/chunk-000002.cast
//! ROOT/<session_id>/manifest.json     {"session", "format", "status", "chunks": [...], "bytes", "sha256", "sealed_at"}
//! ROOT/<session_id>/SHA256SUMS        `sha256sum -c` compatible, one line per chunk (written when sealed)
//! ```
//!
//! A chunk is *closed* (fsynced, hashed and entered in the manifest) once it holds at least
//! [`RecorderConfig::chunk_bytes`] bytes, or once it has been open for
//! [`RecorderConfig::chunk_interval`] with at least one event in it; the next event then starts a
//! new chunk. Buffered frames are handed to the operating system at least every
//! [`RecorderConfig::flush_interval`]. Sealing closes the last chunk and records the seal: the
//! SHA-256 of the whole stream (the concatenated chunks, in order). A recording left in status
//! `recording` by a crashed process is sealed later with [`seal_partial`] as `partial`.
//!
//! # Bytes to text
//!
//! asciicast event data is text, terminal traffic is bytes. The recorder decodes each direction
//! (`"o"` output and `"i"` input, independently) as UTF-8 *across frame boundaries*: an incomplete
//! multi-byte sequence at the end of a frame (at most 3 bytes) is held back and prepended to the
//! next frame of the same direction, so a character split by the relay is recorded intact. Only
//! truly invalid bytes become U+FFFD (one replacement character per maximal invalid sequence, as
//! [`String::from_utf8_lossy`] does; an incomplete sequence still pending when the recording is
//! sealed becomes one U+FFFD). Consequently the concatenated `"o"` data ([`output_text`]) is
//! byte-identical to the relayed output whenever that output is valid UTF-8, which is what
//! terminals carry.
//!
//! # Threads and blocking
//!
//! [`Recorder`] is an async handle; the files are owned by a per-session writer task. See
//! [`Recorder`] for how disk I/O is kept off the async worker threads. The inspection functions
//! ([`verify`], [`seal_partial`], [`read_stream`]) are synchronous and do blocking file I/O: call
//! them from `tokio::task::spawn_blocking` when inside async code.
//!
//! [asciicast v2]: https://docs.asciinema.org/manual/asciicast/v2/

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

mod cast;
mod disk;
mod store;
mod writer;

pub use cast::{Event, output_text, parse_stream, play};
pub use store::{VerifyReport, read_stream, seal_partial, verify};
pub use writer::Recorder;

/// Default size at which a chunk is closed: 256 KiB (in bytes).
pub const DEFAULT_CHUNK_BYTES: u64 = 256 * 1024;
/// Default maximum time a chunk with activity stays open: 10 s.
pub const DEFAULT_CHUNK_INTERVAL: Duration = Duration::from_secs(10);
/// Default flush period for buffered frames: 1 s.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default capacity of the per-session frame queue: 1024 frames.
pub const DEFAULT_QUEUE_FRAMES: usize = 1024;

/// The `format` value written into every manifest.
pub const FORMAT: &str = "asciicast-v2";

/// Where and how recordings are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderConfig {
    /// Recordings root directory; each session records into `root/<session_id>/`.
    pub root: PathBuf,
    /// A chunk is closed once it holds at least this many bytes (default 256 KiB). A chunk may
    /// exceed it by at most one event line, since lines are never split. Must be > 0.
    pub chunk_bytes: u64,
    /// A chunk that holds at least one event is closed once it has been open this long
    /// (default 10 s). Checked every `flush_interval`, so the actual close may lag by up to that.
    pub chunk_interval: Duration,
    /// Buffered frames are handed to the OS at least this often (default 1 s). Must be > 0.
    pub flush_interval: Duration,
    /// Capacity of the bounded frame queue, in frames (default 1024). When it is full,
    /// [`Recorder::record`] waits (backpressure). Must be > 0.
    pub queue_frames: usize,
}

impl RecorderConfig {
    /// A configuration recording under `root` with the defaults: 256 KiB chunks, 10 s chunk
    /// interval, 1 s flush interval, 1024-frame queue.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            chunk_interval: DEFAULT_CHUNK_INTERVAL,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            queue_frames: DEFAULT_QUEUE_FRAMES,
        }
    }

    fn validate(&self) -> Result<(), RecordingError> {
        if self.chunk_bytes == 0 {
            return Err(RecordingError::InvalidConfig(
                "chunk_bytes must be > 0".into(),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(RecordingError::InvalidConfig(
                "flush_interval must be > 0".into(),
            ));
        }
        if self.queue_frames == 0 {
            return Err(RecordingError::InvalidConfig(
                "queue_frames must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// The asciicast v2 header of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Terminal width in columns.
    pub width: u32,
    /// Terminal height in rows.
    pub height: u32,
    /// Recording start, in unix seconds.
    pub timestamp: i64,
    /// The client's `TERM`, written as `env.TERM` when present.
    pub term: Option<String>,
    /// A human-readable title, written as `title` when present.
    pub title: Option<String>,
}

/// One unit of terminal traffic submitted to a [`Recorder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes sent to the user's terminal (`"o"` event), as relayed.
    Output(Vec<u8>),
    /// Bytes typed by the user (`"i"` event), as relayed.
    Input(Vec<u8>),
    /// The terminal was resized (`"r"` event, data `"COLSxROWS"`), in columns and rows.
    Resize {
        /// New width, in columns.
        cols: u32,
        /// New height, in rows.
        rows: u32,
    },
    /// A marker / label (`"m"` event).
    Marker(String),
}

/// How a recording was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SealStatus {
    /// Sealed by the recorder when the session closed: the recording is complete.
    Sealed,
    /// Sealed after a crash by [`seal_partial`]: the recording holds what reached the disk.
    Partial,
}

impl SealStatus {
    /// The manifest spelling: `"sealed"` or `"partial"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SealStatus::Sealed => "sealed",
            SealStatus::Partial => "partial",
        }
    }
}

impl std::fmt::Display for SealStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of sealing a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seal {
    /// Number of chunk files.
    pub chunks: u32,
    /// Length of the recording stream (all chunks), in bytes.
    pub bytes: u64,
    /// SHA-256 of the recording stream, lowercase hex (64 characters).
    pub sha256: String,
    /// `sealed` or `partial`.
    pub status: SealStatus,
}

/// A live recorder's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Progress {
    /// Chunk files started so far (at least 1 once the recorder has started).
    pub chunks: u32,
    /// Bytes of the recording stream handed to the OS so far (header included), in bytes.
    /// Frames still in the queue or in the user-space buffer are not counted.
    pub bytes: u64,
}

/// Errors of the recording subsystem.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// A file-system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The session ID is not `sess_` followed by 12 lowercase hex characters. Rejected before
    /// any path is built, so a crafted ID cannot escape the recordings root.
    #[error("invalid session ID {0:?}: expected sess_ followed by 12 lowercase hex characters")]
    InvalidSessionId(String),
    /// The session's recording is already sealed (status `sealed` or `partial`).
    #[error("recording of {0} is already sealed")]
    AlreadySealed(String),
    /// The session directory already holds an unsealed recording (seal it with
    /// [`seal_partial`] first) or is not a plain directory.
    #[error("recording directory of {0} already holds an unsealed recording")]
    AlreadyExists(String),
    /// There is no recording (no manifest and no chunk) for the session.
    #[error("no recording for {0}")]
    NotFound(String),
    /// The recorder was sealed (or its writer stopped): no more frames are accepted.
    #[error("recorder is closed")]
    Closed,
    /// The writer task failed earlier (e.g. disk full); the message is the original error.
    #[error("recording writer failed: {0}")]
    WriterFailed(String),
    /// The manifest cannot be parsed or is inconsistent.
    #[error("corrupt manifest {path}: {reason}")]
    CorruptManifest {
        /// Path of the manifest.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A chunk recorded as closed in the manifest is missing or no longer matches its hash, so
    /// the recording cannot be sealed without laundering the damage.
    #[error("chunk {file} of {session} does not match the manifest: {reason}")]
    ChunkMismatch {
        /// Session ID.
        session: String,
        /// Chunk file name.
        file: String,
        /// What differs.
        reason: String,
    },
    /// The asciicast stream is malformed.
    #[error("asciicast parse error at line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The [`RecorderConfig`] is unusable.
    #[error("invalid recorder configuration: {0}")]
    InvalidConfig(String),
    /// JSON encoding failed.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl RecordingError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecordingError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Checks that `id` is a session ID (`sess_` followed by 12 lowercase hex characters,
/// i.e. `^sess_[0-9a-f]{12}$`). Every public function taking a session ID calls this first.
///
/// # Errors
/// [`RecordingError::InvalidSessionId`] for anything else.
pub fn validate_session_id(id: &str) -> Result<(), RecordingError> {
    let ok = id.strip_prefix("sess_").is_some_and(|hex| {
        hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(RecordingError::InvalidSessionId(id.to_string()))
    }
}

/// `root/<session_id>` after validating the ID.
pub(crate) fn session_dir(root: &std::path::Path, id: &str) -> Result<PathBuf, RecordingError> {
    validate_session_id(id)?;
    Ok(root.join(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        assert!(validate_session_id("sess_a91c7f20bb48").is_ok());
        for bad in [
            "",
            "sess_",
            "sess_A91C7F20BB48",
            "sess_a91c7f20bb4",
            "sess_a91c7f20bb489",
            "sess_a91c7f20bbzz",
            "../sess_a91c7f20bb48",
            "sess_a91c7f20bb48/..",
            "sess_../../etc/x",
            "/etc/passwd",
            "sess_a91c7f20bb4\u{e9}",
        ] {
            assert!(
                matches!(
                    validate_session_id(bad),
                    Err(RecordingError::InvalidSessionId(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn config_defaults() {
        let c = RecorderConfig::new("/tmp/x");
        assert_eq!(c.chunk_bytes, 256 * 1024);
        assert_eq!(c.chunk_interval, Duration::from_secs(10));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.queue_frames, 1024);
        assert!(c.validate().is_ok());
        assert!(
            RecorderConfig {
                queue_frames: 0,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            RecorderConfig {
                flush_interval: Duration::ZERO,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            RecorderConfig {
                chunk_bytes: 0,
                ..c
            }
            .validate()
            .is_err()
        );
        assert_eq!(SealStatus::Partial.as_str(), "partial");
        assert_eq!(SealStatus::Sealed.to_string(), "sealed");
    }
}
