//! Inspecting recordings at rest: verification, sealing after a crash, reading the stream.
//!
//! These functions do blocking file I/O; from async code call them via `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::disk::{
    self, ChunkEntry, MANIFEST, Manifest, STATUS_RECORDING, SUMS, chunk_file_name, list_chunks,
    read_manifest,
};
use crate::{FORMAT, RecordingError, Seal, SealStatus, session_dir};

/// The outcome of [`verify`]. Damage is reported here (`ok == false`, `problems`), not as an
/// error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when the recording is sealed (or partial) and every check passed.
    pub ok: bool,
    /// The manifest status: `sealed`, `partial` or `recording`.
    pub status: String,
    /// Number of chunks listed in the manifest.
    pub chunks: u32,
    /// Bytes actually read from the listed chunk files that exist.
    pub bytes: u64,
    /// SHA-256 (lowercase hex) recomputed over the listed chunk files that exist, in order.
    pub sha256: String,
    /// Human-readable descriptions of every mismatch found; empty when `ok`.
    pub problems: Vec<String>,
}

/// Re-hashes every chunk and the whole stream and compares them with the manifest (and with
/// `SHA256SUMS`). A missing, extra or modified chunk, a size mismatch, a wrong seal or an
/// unsealed recording is a *problem* in the report.
///
/// # Errors
/// [`RecordingError::InvalidSessionId`]; [`RecordingError::NotFound`] when there is no
/// manifest; [`RecordingError::CorruptManifest`] / [`RecordingError::Io`] when the manifest
/// cannot be parsed / read, or the directory cannot be listed.
pub fn verify(root: &Path, session_id: &str) -> Result<VerifyReport, RecordingError> {
    let dir = session_dir(root, session_id)?;
    let manifest =
        read_manifest(&dir)?.ok_or_else(|| RecordingError::NotFound(session_id.to_string()))?;
    let mut problems = Vec::new();
    if manifest.session != session_id {
        problems.push(format!("manifest names session {:?}", manifest.session));
    }
    if manifest.format != FORMAT {
        problems.push(format!(
            "manifest format is {:?}, expected {FORMAT:?}",
            manifest.format
        ));
    }
    match manifest.status.as_str() {
        "sealed" | "partial" => {}
        STATUS_RECORDING => problems.push("recording is not sealed (status recording)".into()),
        other => problems.push(format!("unknown status {other:?}")),
    }

    let mut stream = Sha256::new();
    let mut total = 0_u64;
    let mut listed = BTreeSet::new();
    for (pos, entry) in manifest.chunks.iter().enumerate() {
        let expected = u32::try_from(pos + 1).unwrap_or(u32::MAX);
        if entry.index != expected {
            problems.push(format!(
                "manifest entry {expected} has index {}",
                entry.index
            ));
        }
        // Only ever open the canonical name, never a path taken from the manifest.
        let file = chunk_file_name(entry.index);
        if entry.file != file {
            problems.push(format!(
                "manifest entry {} names file {:?}, expected {file:?}",
                entry.index, entry.file
            ));
        }
        if !listed.insert(entry.index) {
            problems.push(format!("chunk {file} is listed twice"));
            continue;
        }
        match hash_file(&dir.join(&file), &mut stream) {
            Ok((bytes, sha)) => {
                total += bytes;
                if bytes != entry.bytes {
                    problems.push(format!(
                        "chunk {file} has {bytes} bytes, manifest says {}",
                        entry.bytes
                    ));
                }
                if sha != entry.sha256 {
                    problems.push(format!(
                        "chunk {file} has SHA-256 {sha}, manifest says {}",
                        entry.sha256
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                problems.push(format!("chunk {file} is missing"))
            }
            Err(e) => problems.push(format!("chunk {file} is unreadable: {e}")),
        }
    }
    for index in list_chunks(&dir).map_err(|e| RecordingError::io(&dir, e))? {
        if !listed.contains(&index) {
            problems.push(format!(
                "chunk {} is not in the manifest",
                chunk_file_name(index)
            ));
        }
    }

    let sha256 = hex::encode(stream.finalize());
    let listed_bytes: u64 = manifest.chunks.iter().map(|c| c.bytes).sum();
    if manifest.bytes != listed_bytes {
        problems.push(format!(
            "manifest total is {} bytes, its chunks sum to {listed_bytes}",
            manifest.bytes
        ));
    }
    match &manifest.sha256 {
        Some(seal) if *seal == sha256 => {}
        Some(seal) => problems.push(format!("stream SHA-256 is {sha256}, seal says {seal}")),
        None if manifest.status != STATUS_RECORDING => problems.push("manifest has no seal".into()),
        None => {}
    }
    if manifest.status != STATUS_RECORDING {
        check_sums(&dir, &manifest.chunks, &mut problems);
    }

    Ok(VerifyReport {
        ok: problems.is_empty(),
        status: manifest.status,
        chunks: u32::try_from(manifest.chunks.len()).unwrap_or(u32::MAX),
        bytes: total,
        sha256,
        problems,
    })
}

/// Compares `SHA256SUMS` with the manifest's chunk list.
fn check_sums(dir: &Path, chunks: &[ChunkEntry], problems: &mut Vec<String>) {
    let raw = match fs::read_to_string(dir.join(SUMS)) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(format!("{SUMS} is unreadable: {e}"));
            return;
        }
    };
    let mut sums = BTreeMap::new();
    for line in raw.lines().filter(|l| !l.is_empty()) {
        match line.split_once("  ").or_else(|| line.split_once(" *")) {
            Some((sha, file)) => {
                sums.insert(file.to_string(), sha.to_string());
            }
            None => problems.push(format!("{SUMS} has a malformed line {line:?}")),
        }
    }
    for c in chunks {
        match sums.remove(&c.file) {
            Some(sha) if sha == c.sha256 => {}
            Some(sha) => problems.push(format!(
                "{SUMS} has {sha} for {}, manifest says {}",
                c.file, c.sha256
            )),
            None => problems.push(format!("{SUMS} has no line for {}", c.file)),
        }
    }
    for file in sums.keys() {
        problems.push(format!(
            "{SUMS} lists {file:?}, which is not in the manifest"
        ));
    }
}

/// Streams a file through its own hasher and `stream`; returns its length and SHA-256 hex.
fn hash_file(path: &Path, stream: &mut Sha256) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 64 * 1024];
    let mut total = 0_u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        stream.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Seals, as `partial`, a recording left in status `recording` (or with chunks but no manifest)
/// by a process that crashed: every chunk file present is kept, in index order; bytes after
/// the last `'\n'` of a chunk (an event line cut short by the crash) are truncated away, then
/// `SHA256SUMS` and the manifest (status `partial`, with the seal) are written. If the
/// recording is already sealed (or partial), its existing seal is returned unchanged.
///
/// Must not be called while a [`crate::Recorder`] is writing the session (i.e. only for
/// sessions left over from a previous process).
///
/// # Errors
/// [`RecordingError::NotFound`] without manifest and chunks; [`RecordingError::ChunkMismatch`]
/// when a chunk the manifest already lists as closed is missing or altered (sealing it would
/// launder the damage); I/O and manifest errors.
pub fn seal_partial(root: &Path, session_id: &str) -> Result<Seal, RecordingError> {
    let dir = session_dir(root, session_id)?;
    let manifest = read_manifest(&dir)?;
    if let Some(m) = &manifest
        && let Some(seal) = m.seal(&dir.join(MANIFEST))?
    {
        return Ok(seal);
    }
    let indices = match list_chunks(&dir) {
        Ok(i) => i,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordingError::NotFound(session_id.to_string()));
        }
        Err(e) => return Err(RecordingError::io(&dir, e)),
    };
    if indices.is_empty() && manifest.is_none() {
        return Err(RecordingError::NotFound(session_id.to_string()));
    }
    let closed: BTreeMap<u32, &ChunkEntry> = manifest
        .iter()
        .flat_map(|m| &m.chunks)
        .map(|c| (c.index, c))
        .collect();
    let mismatch = |file: &str, reason: String| RecordingError::ChunkMismatch {
        session: session_id.to_string(),
        file: file.to_string(),
        reason,
    };
    for (&index, entry) in &closed {
        if !indices.contains(&index) {
            return Err(mismatch(&entry.file, "listed as closed but missing".into()));
        }
    }

    let mut stream = Sha256::new();
    let mut chunks = Vec::with_capacity(indices.len());
    for (pos, &index) in indices.iter().enumerate() {
        if u32::try_from(pos + 1).ok() != Some(index) {
            tracing::warn!(
                session = session_id,
                index,
                "gap in recording chunks before this one"
            );
        }
        let file = chunk_file_name(index);
        let path = dir.join(&file);
        let data = fs::read(&path).map_err(|e| RecordingError::io(&path, e))?;
        let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if keep < data.len() {
            tracing::warn!(
                session = session_id, chunk = %file, dropped = data.len() - keep,
                "truncating an incomplete trailing event line"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| RecordingError::io(&path, e))?;
            f.set_len(keep as u64)
                .map_err(|e| RecordingError::io(&path, e))?;
            f.sync_all().map_err(|e| RecordingError::io(&path, e))?;
        }
        let data = &data[..keep];
        let sha256 = hex::encode(Sha256::digest(data));
        if let Some(entry) = closed.get(&index)
            && (entry.sha256 != sha256 || entry.bytes != data.len() as u64)
        {
            return Err(mismatch(&file, "content differs from the manifest".into()));
        }
        stream.update(data);
        chunks.push(ChunkEntry {
            index,
            file,
            bytes: data.len() as u64,
            sha256,
        });
    }

    let sha256 = hex::encode(stream.finalize());
    let manifest = Manifest::sealed(session_id, chunks, SealStatus::Partial, sha256);
    disk::write_sums(&dir, &manifest.chunks)?;
    disk::write_manifest(&dir, &manifest)?;
    let seal = Seal {
        chunks: u32::try_from(manifest.chunks.len()).unwrap_or(u32::MAX),
        bytes: manifest.bytes,
        sha256: manifest.sha256.unwrap_or_default(),
        status: SealStatus::Partial,
    };
    tracing::info!(
        session = session_id, chunks = seal.chunks, bytes = seal.bytes, sha256 = %seal.sha256,
        "recording sealed as partial"
    );
    Ok(seal)
}

/// The recording stream: the chunks concatenated in order (a valid asciicast v2 file). For a
/// sealed or partial recording these are the chunks listed in the manifest; for one still in
/// status `recording`, every chunk file present.
///
/// # Errors
/// [`RecordingError::NotFound`] when there is no recording; I/O and manifest errors
/// (including a listed chunk that is missing).
pub fn read_stream(root: &Path, session_id: &str) -> Result<Vec<u8>, RecordingError> {
    let dir = session_dir(root, session_id)?;
    let manifest = read_manifest(&dir)?;
    let indices: Vec<u32> = match &manifest {
        Some(m) if m.status != STATUS_RECORDING => m.chunks.iter().map(|c| c.index).collect(),
        _ => match list_chunks(&dir) {
            Ok(i) => i,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RecordingError::NotFound(session_id.to_string()));
            }
            Err(e) => return Err(RecordingError::io(&dir, e)),
        },
    };
    if indices.is_empty() && manifest.is_none() {
        return Err(RecordingError::NotFound(session_id.to_string()));
    }
    let total = manifest.as_ref().map_or(0, |m| m.bytes);
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for index in indices {
        let path = dir.join(chunk_file_name(index));
        let mut f = File::open(&path).map_err(|e| RecordingError::io(&path, e))?;
        f.read_to_end(&mut out)
            .map_err(|e| RecordingError::io(&path, e))?;
    }
    Ok(out)
}
