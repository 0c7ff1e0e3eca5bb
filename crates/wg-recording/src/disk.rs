//! On-disk layout: chunk files, the manifest and `SHA256SUMS`, and the blocking half of the
//! writer ([`Disk`]), which owns the open chunk file and the running hashes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::writer::Shared;
use crate::{FORMAT, RecordingError, Seal, SealStatus};

pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const SUMS: &str = "SHA256SUMS";

pub(crate) const STATUS_RECORDING: &str = "recording";

/// `chunk-000001.cast` for index 1.
pub(crate) fn chunk_file_name(index: u32) -> String {
    format!("chunk-{index:06}.cast")
}

/// The index of a chunk file name (`chunk-` + at least 6 digits + `.cast`), if it is one.
pub(crate) fn parse_chunk_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("chunk-")?.strip_suffix(".cast")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&i| i > 0)
}

/// One closed chunk as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkEntry {
    pub(crate) index: u32,
    pub(crate) file: String,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) session: String,
    pub(crate) format: String,
    pub(crate) status: String,
    pub(crate) chunks: Vec<ChunkEntry>,
    pub(crate) bytes: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) sealed_at: Option<String>,
}

impl Manifest {
    fn recording(session: &str, chunks: Vec<ChunkEntry>) -> Self {
        let bytes = chunks.iter().map(|c| c.bytes).sum();
        Manifest {
            session: session.to_string(),
            format: FORMAT.to_string(),
            status: STATUS_RECORDING.to_string(),
            chunks,
            bytes,
            sha256: None,
            sealed_at: None,
        }
    }

    pub(crate) fn sealed(
        session: &str,
        chunks: Vec<ChunkEntry>,
        status: SealStatus,
        sha256: String,
    ) -> Self {
        let bytes = chunks.iter().map(|c| c.bytes).sum();
        Manifest {
            session: session.to_string(),
            format: FORMAT.to_string(),
            status: status.as_str().to_string(),
            chunks,
            bytes,
            sha256: Some(sha256),
            sealed_at: Some(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
        }
    }

    /// The seal of a manifest in status `sealed` or `partial`; `None` for other statuses.
    pub(crate) fn seal(&self, path: &Path) -> Result<Option<Seal>, RecordingError> {
        let status = match self.status.as_str() {
            "sealed" => SealStatus::Sealed,
            "partial" => SealStatus::Partial,
            _ => return Ok(None),
        };
        let sha256 = self
            .sha256
            .clone()
            .ok_or_else(|| RecordingError::CorruptManifest {
                path: path.to_path_buf(),
                reason: format!("status {} without sha256", self.status),
            })?;
        let chunks =
            u32::try_from(self.chunks.len()).map_err(|_| RecordingError::CorruptManifest {
                path: path.to_path_buf(),
                reason: "too many chunks".into(),
            })?;
        Ok(Some(Seal {
            chunks,
            bytes: self.bytes,
            sha256,
            status,
        }))
    }
}

/// Reads `dir/manifest.json`; `Ok(None)` when it does not exist.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>, RecordingError> {
    let path = dir.join(MANIFEST);
    let raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RecordingError::io(path, e)),
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| RecordingError::CorruptManifest {
            path,
            reason: e.to_string(),
        })
}

/// Writes `dir/name` atomically: temp file, fsync, rename over, fsync the directory.
fn atomic_write(dir: &Path, name: &str, contents: &[u8]) -> Result<(), RecordingError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = create_options()
            .truncate(true)
            .open(&tmp)
            .map_err(|e| RecordingError::io(&tmp, e))?;
        f.write_all(contents)
            .map_err(|e| RecordingError::io(&tmp, e))?;
        f.sync_all().map_err(|e| RecordingError::io(&tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| RecordingError::io(&path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), RecordingError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RecordingError::io(dir, e))
}

/// Write + create options; recordings are private to the gateway's user (0600 on unix).
fn create_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), RecordingError> {
    let mut json = serde_json::to_vec_pretty(manifest)?;
    json.push(b'\n');
    atomic_write(dir, MANIFEST, &json)
}

/// `SHA256SUMS`: `<hex>  <file>` per chunk, as `sha256sum` prints and `sha256sum -c` checks.
pub(crate) fn write_sums(dir: &Path, chunks: &[ChunkEntry]) -> Result<(), RecordingError> {
    let mut out = String::with_capacity(chunks.len() * 90);
    for c in chunks {
        out.push_str(&c.sha256);
        out.push_str("  ");
        out.push_str(&c.file);
        out.push('\n');
    }
    atomic_write(dir, SUMS, out.as_bytes())
}

/// Indices of the chunk files present in `dir`, ascending.
pub(crate) fn list_chunks(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_chunk_file_name) {
            out.push(index);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Creates `dir` for a new recording, refusing one that already holds a recording.
fn prepare_dir(dir: &Path, session: &str) -> Result<(), RecordingError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if let Some(m) = read_manifest(dir)? {
                if m.status != STATUS_RECORDING {
                    return Err(RecordingError::AlreadySealed(session.to_string()));
                }
                return Err(RecordingError::AlreadyExists(session.to_string()));
            }
            let chunks = list_chunks(dir).map_err(|e| RecordingError::io(dir, e))?;
            if !chunks.is_empty() {
                return Err(RecordingError::AlreadyExists(session.to_string()));
            }
            Ok(())
        }
        // A file or a symlink where the session directory should be.
        Ok(_) => Err(RecordingError::AlreadyExists(session.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(root) = dir.parent() {
                fs::create_dir_all(root).map_err(|e| RecordingError::io(root, e))?;
            }
            let mut b = fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            match b.create(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(RecordingError::AlreadyExists(session.to_string()))
                }
                Err(e) => Err(RecordingError::io(dir, e)),
            }
        }
        Err(e) => Err(RecordingError::io(dir, e)),
    }
}

/// What to do after writing a batch's data, besides the optional chunk close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Close the last chunk, sync every closed chunk and write the sealed manifest.
    Seal,
    /// All recorder handles were dropped without sealing: close the last chunk, sync every
    /// closed chunk and leave the manifest in status `recording` for [`crate::seal_partial`].
    Abandon,
}

/// One unit of work for the blocking side: serialised event lines plus what to do after.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) data: Vec<u8>,
    pub(crate) close_chunk: bool,
    pub(crate) finish: Option<Finish>,
}

/// Chunks that are closed (hashed, no longer written) but not yet fsynced and listed in the
/// manifest.
///
/// Closing a chunk is split in two so the fsync does not stall the write pipeline: the disk
/// side hashes the chunk and queues its file here ([`Closing::push`]), then goes on writing the
/// next chunk; a background job ([`Closing::sync_queued`], one at a time) fsyncs every queued
/// file and then rewrites the manifest listing them. Under load one manifest write covers
/// several chunks. A chunk is therefore only ever listed in the manifest after its fsync.
#[derive(Debug)]
pub(crate) struct Closing {
    dir: PathBuf,
    session: String,
    queue: Mutex<CloseQueue>,
    /// Held for a whole sync + manifest write, so those never interleave (lock order:
    /// `Disk` → `sync` → `queue`). `true` once the manifest is sealed: nothing rewrites it.
    sync: Mutex<bool>,
}

#[derive(Debug, Default)]
struct CloseQueue {
    /// Closed chunk files not yet fsynced.
    unsynced: Vec<(File, PathBuf)>,
    /// Every closed chunk, in order.
    entries: Vec<ChunkEntry>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Closing {
    /// Number of closed chunks waiting for their fsync.
    pub(crate) fn unsynced(&self) -> usize {
        lock(&self.queue).unsynced.len()
    }

    fn push(&self, file: File, path: PathBuf, entry: ChunkEntry) {
        let mut q = lock(&self.queue);
        q.unsynced.push((file, path));
        q.entries.push(entry);
    }

    /// Fsyncs every queued file; returns all closed entries (now all synced). Call with `sync`
    /// held.
    fn sync_taken(&self) -> Result<Vec<ChunkEntry>, RecordingError> {
        let (files, entries) = {
            let mut q = lock(&self.queue);
            (std::mem::take(&mut q.unsynced), q.entries.clone())
        };
        for (file, path) in &files {
            file.sync_data().map_err(|e| RecordingError::io(path, e))?;
        }
        Ok(entries)
    }

    /// Fsyncs the queued chunk files, then lists them in the manifest (status `recording`).
    /// Blocking; run on the blocking pool.
    pub(crate) fn sync_queued(&self) -> Result<(), RecordingError> {
        let sealed = lock(&self.sync);
        if *sealed || self.unsynced() == 0 {
            return Ok(());
        }
        let entries = self.sync_taken()?;
        let n = entries.len();
        write_manifest(&self.dir, &Manifest::recording(&self.session, entries))?;
        tracing::debug!(session = %self.session, chunks = n, "recording chunks synced");
        Ok(())
    }

    /// Fsyncs the queued chunk files and writes `SHA256SUMS` and the sealed manifest.
    fn seal(&self, sha256: String) -> Result<Vec<ChunkEntry>, RecordingError> {
        let mut sealed = lock(&self.sync);
        let entries = self.sync_taken()?;
        let manifest = Manifest::sealed(&self.session, entries, SealStatus::Sealed, sha256);
        write_sums(&self.dir, &manifest.chunks)?;
        write_manifest(&self.dir, &manifest)?;
        *sealed = true;
        Ok(manifest.chunks)
    }
}

#[derive(Debug)]
struct OpenChunk {
    index: u32,
    file: File,
    path: PathBuf,
    bytes: u64,
    hasher: Sha256,
}

/// The blocking half of a recorder: owns the open chunk file and the hashes. Only ever used
/// from blocking threads (or during teardown), behind a mutex that is never contended in
/// steady state.
#[derive(Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    session: String,
    current: Option<OpenChunk>,
    next_index: u32,
    stream: Sha256,
    total: u64,
    /// The batch handed over by the async side and not yet applied. Kept here (rather than
    /// moved into the blocking closure) so teardown can apply it if the closure never runs.
    pub(crate) pending: Option<Batch>,
    closing: Arc<Closing>,
    shared: Arc<Shared>,
    sealed: Option<Seal>,
}

impl Disk {
    /// Prepares the session directory, writes the initial manifest (status `recording`) and
    /// the header into chunk 1.
    pub(crate) fn create(
        dir: PathBuf,
        session: String,
        header: Vec<u8>,
        shared: Arc<Shared>,
    ) -> Result<Disk, RecordingError> {
        prepare_dir(&dir, &session)?;
        write_manifest(&dir, &Manifest::recording(&session, Vec::new()))?;
        let closing = Arc::new(Closing {
            dir: dir.clone(),
            session: session.clone(),
            queue: Mutex::default(),
            sync: Mutex::default(),
        });
        let mut disk = Disk {
            dir,
            session,
            current: None,
            next_index: 1,
            stream: Sha256::new(),
            total: 0,
            pending: None,
            closing,
            shared,
            sealed: None,
        };
        disk.write(&header)?;
        Ok(disk)
    }

    /// The queue of closed chunks awaiting their fsync.
    pub(crate) fn closing(&self) -> Arc<Closing> {
        self.closing.clone()
    }

    /// Applies the pending batch, if any. Returns the batch's (cleared) buffer for reuse and,
    /// for [`Finish::Seal`], the seal.
    pub(crate) fn run_pending(&mut self) -> (Vec<u8>, Result<Option<Seal>, RecordingError>) {
        let Some(mut batch) = self.pending.take() else {
            return (Vec::new(), Ok(None));
        };
        let result = self.apply(&batch);
        batch.data.clear();
        (batch.data, result)
    }

    fn apply(&mut self, batch: &Batch) -> Result<Option<Seal>, RecordingError> {
        if let Some(seal) = &self.sealed {
            return Ok(Some(seal.clone()));
        }
        if !batch.data.is_empty() {
            self.write(&batch.data)?;
        }
        if batch.close_chunk || batch.finish.is_some() {
            self.close_chunk();
        }
        match batch.finish {
            Some(Finish::Seal) => {
                let sha256 = hex::encode(self.stream.clone().finalize());
                let chunks = self.closing.seal(sha256.clone())?;
                let seal = Seal {
                    chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
                    bytes: self.total,
                    sha256,
                    status: SealStatus::Sealed,
                };
                tracing::info!(
                    session = %self.session, chunks = seal.chunks, bytes = seal.bytes,
                    sha256 = %seal.sha256, "recording sealed"
                );
                self.sealed = Some(seal.clone());
                Ok(Some(seal))
            }
            Some(Finish::Abandon) => {
                self.closing.sync_queued()?;
                tracing::warn!(
                    session = %self.session, chunks = self.next_index - 1, bytes = self.total,
                    "recorder dropped without sealing; recording left in status recording"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Appends to the current chunk, opening the next one if none is open.
    fn write(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let chunk = match &mut self.current {
            Some(c) => c,
            None => {
                let index = self.next_index;
                let path = self.dir.join(chunk_file_name(index));
                let file = create_options()
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| RecordingError::io(&path, e))?;
                self.next_index += 1;
                self.shared.chunks.store(index, Ordering::Relaxed);
                tracing::debug!(session = %self.session, index, "recording chunk opened");
                self.current.insert(OpenChunk {
                    index,
                    file,
                    path,
                    bytes: 0,
                    hasher: Sha256::new(),
                })
            }
        };
        chunk
            .file
            .write_all(data)
            .map_err(|e| RecordingError::io(&chunk.path, e))?;
        chunk.hasher.update(data);
        self.stream.update(data);
        let n = data.len() as u64;
        chunk.bytes += n;
        self.total += n;
        self.shared.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the current chunk: hashes it and queues it for fsync + manifest entry (see
    /// [`Closing`]). No-op when no chunk is open.
    fn close_chunk(&mut self) {
        let Some(chunk) = self.current.take() else {
            return;
        };
        let entry = ChunkEntry {
            index: chunk.index,
            file: chunk_file_name(chunk.index),
            bytes: chunk.bytes,
            sha256: hex::encode(chunk.hasher.finalize()),
        };
        tracing::debug!(session = %self.session, index = entry.index, bytes = entry.bytes, "recording chunk closed");
        self.closing.push(chunk.file, chunk.path, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names() {
        assert_eq!(chunk_file_name(1), "chunk-000001.cast");
        assert_eq!(chunk_file_name(1_234_567), "chunk-1234567.cast");
        assert_eq!(parse_chunk_file_name("chunk-000042.cast"), Some(42));
        assert_eq!(parse_chunk_file_name("chunk-1234567.cast"), Some(1_234_567));
        for bad in [
            "chunk-00001.cast",
            "chunk-000000.cast",
            "chunk-00000a.cast",
            "chunk-000001.cast.tmp",
            "x",
        ] {
            assert_eq!(parse_chunk_file_name(bad), None, "{bad}");
        }
    }
}
