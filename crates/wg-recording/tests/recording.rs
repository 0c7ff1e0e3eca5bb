//! End-to-end tests of the recorder: chunking, sealing, verification, crash recovery, playback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use wg_recording::{
    Frame, Header, Recorder, RecorderConfig, RecordingError, SealStatus, output_text, parse_stream,
    play, read_stream, seal_partial, verify,
};

const SID: &str = "sess_0123456789ab";

fn header() -> Header {
    Header {
        width: 80,
        height: 24,
        timestamp: 1_700_000_000,
        term: Some("xterm-256color".into()),
        title: Some("test session".into()),
    }
}

fn small(root: &Path) -> RecorderConfig {
    RecorderConfig {
        chunk_bytes: 1024,
        ..RecorderConfig::new(root)
    }
}

fn chunk_path(root: &Path, index: u32) -> PathBuf {
    root.join(SID).join(format!("chunk-{index:06}.cast"))
}

fn manifest(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join(SID).join("manifest.json")).unwrap()).unwrap()
}

/// Records a session of mixed frames with small chunks and seals it; returns the output bytes.
async fn record_sealed(root: &Path) -> Vec<u8> {
    let rec = Recorder::start(&small(root), SID, header()).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..200 {
        let line = format!("line {i}: héllo wörld \x1b[1m🦀\x1b[0m \"quoted\" \\ back\r\n");
        expected.extend_from_slice(line.as_bytes());
        rec.record(Frame::Output(line.into_bytes())).await.unwrap();
    }
    rec.seal().await.unwrap();
    expected
}

#[tokio::test]
async fn mixed_frames_roundtrip_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Recorder::start(&RecorderConfig::new(root), SID, header())
        .await
        .unwrap();
    assert_eq!(rec.progress().chunks, 1);
    assert!(rec.progress().bytes > 0, "header written at start");

    let euro = "€".as_bytes(); // e2 82 ac, split across two frames
    let mut out = Vec::new();
    let frames: Vec<Frame> = vec![
        Frame::Output(b"$ ls\r\n".to_vec()),
        Frame::Output([b"price: ".as_slice(), &euro[..1]].concat()),
        Frame::Input(b"l".to_vec()),
        Frame::Output([&euro[1..], b" ok\r\n".as_slice()].concat()),
        Frame::Resize {
            cols: 120,
            rows: 40,
        },
        Frame::Marker("checkpoint \"one\"".into()),
        Frame::Input("é".as_bytes().to_vec()),
        Frame::Output(b"\x1b[31mred\x1b[0m\ttab\x07bell\r\n".to_vec()),
    ];
    for f in &frames {
        if let Frame::Output(b) = f {
            out.extend_from_slice(b);
        }
        rec.record(f.clone()).await.unwrap();
    }
    let seal = rec.seal().await.unwrap();
    assert_eq!(seal.status, SealStatus::Sealed);
    assert_eq!(seal.chunks, 1);

    let report = verify(root, SID).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.status, "sealed");
    assert_eq!(report.sha256, seal.sha256);
    assert_eq!(report.bytes, seal.bytes);

    let stream = read_stream(root, SID).unwrap();
    assert_eq!(stream.len() as u64, seal.bytes);
    let (hdr, events) = parse_stream(&stream).unwrap();
    assert_eq!(hdr["version"], 2);
    assert_eq!(hdr["width"], 80);
    assert_eq!(hdr["height"], 24);
    assert_eq!(hdr["timestamp"], 1_700_000_000);
    assert_eq!(hdr["env"]["TERM"], "xterm-256color");
    assert_eq!(hdr["title"], "test session");

    // The "o" stream is byte-identical to the relayed output (valid UTF-8, split char rejoined).
    assert_eq!(output_text(&events).as_bytes(), out.as_slice());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["o", "o", "i", "o", "r", "m", "i", "o"]);
    assert_eq!(events[1].data, "price: ");
    assert_eq!(events[3].data, "€ ok\r\n");
    assert_eq!(events[4].data, "120x40");
    assert_eq!(events[5].data, "checkpoint \"one\"");
    assert_eq!(events[6].data, "é");
    assert!(events.windows(2).all(|w| w[0].time <= w[1].time));

    let m = manifest(root);
    assert_eq!(m["session"], SID);
    assert_eq!(m["format"], "asciicast-v2");
    assert_eq!(m["status"], "sealed");
    assert_eq!(m["sha256"], seal.sha256.as_str());
    assert_eq!(m["bytes"], seal.bytes);
    assert!(m["sealed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["chunks"][0]["file"], "chunk-000001.cast");
    assert_eq!(m["chunks"][0]["index"], 1);
}

#[tokio::test]
async fn invalid_utf8_becomes_replacement_only_where_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = Recorder::start(&RecorderConfig::new(tmp.path()), SID, header())
        .await
        .unwrap();
    rec.record(Frame::Output(b"a\xffb".to_vec())).await.unwrap();
    rec.record(Frame::Output(b"c\xf0\x9f".to_vec()))
        .await
        .unwrap(); // dangling at the end
    rec.seal().await.unwrap();
    let (_, events) = parse_stream(&read_stream(tmp.path(), SID).unwrap()).unwrap();
    assert_eq!(output_text(&events), "a\u{fffd}bc\u{fffd}");
}

#[tokio::test]
async fn chunk_rollover_keeps_lines_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let expected = record_sealed(root).await;

    let m = manifest(root);
    let chunks = m["chunks"].as_array().unwrap();
    assert!(
        chunks.len() >= 5,
        "expected several chunks, got {}",
        chunks.len()
    );
    let mut concat = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let index = u32::try_from(i + 1).unwrap();
        assert_eq!(c["index"], index);
        let data = std::fs::read(chunk_path(root, index)).unwrap();
        assert_eq!(c["bytes"], data.len() as u64);
        assert!(data.ends_with(b"\n"), "chunk {index} ends mid-line");
        // Every chunk but the last reached the limit; none exceeds it by more than one line.
        if i + 1 < chunks.len() {
            assert!(
                data.len() >= 1024,
                "chunk {index} closed early ({} bytes)",
                data.len()
            );
        }
        for (n, line) in data
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            if i == 0 && n == 0 {
                assert!(v.is_object(), "chunk 1 starts with the header");
            } else {
                assert!(v.is_array(), "chunk {index} line {n} is an event");
            }
        }
        concat.extend_from_slice(&data);
    }
    assert_eq!(concat, read_stream(root, SID).unwrap());
    let (_, events) = parse_stream(&concat).unwrap();
    assert_eq!(events.len(), 200);
    assert_eq!(output_text(&events).as_bytes(), expected.as_slice());

    let report = verify(root, SID).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.chunks as usize, chunks.len());
}

#[tokio::test]
async fn sha256sums_checks_with_coreutils() {
    let tmp = tempfile::tempdir().unwrap();
    record_sealed(tmp.path()).await;
    let dir = tmp.path().join(SID);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums.lines().count(),
        manifest(tmp.path())["chunks"].as_array().unwrap().len()
    );
    let out = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tampered_chunk_is_a_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    record_sealed(root).await;
    let path = chunk_path(root, 2);
    let mut data = std::fs::read(&path).unwrap();
    let pos = data.iter().position(|&b| b == b'l').unwrap();
    data[pos] = b'L';
    std::fs::write(&path, &data).unwrap();

    let report = verify(root, SID).unwrap();
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("chunk-000002.cast") && p.contains("SHA-256")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("seal")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn missing_and_extra_chunks_are_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    record_sealed(root).await;
    std::fs::remove_file(chunk_path(root, 3)).unwrap();
    let report = verify(root, SID).unwrap();
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("chunk-000003.cast is missing")),
        "{:?}",
        report.problems
    );

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    record_sealed(root).await;
    std::fs::write(chunk_path(root, 99), b"[1.0,\"o\",\"injected\"]\n").unwrap();
    let report = verify(root, SID).unwrap();
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("chunk-000099.cast is not in the manifest")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn manifest_seal_mismatch_is_a_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    record_sealed(root).await;
    let mut m = manifest(root);
    m["sha256"] = serde_json::Value::String("0".repeat(64));
    std::fs::write(
        root.join(SID).join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    let report = verify(root, SID).unwrap();
    assert!(!report.ok);
    assert!(
        report.problems.iter().any(|p| p.contains("seal says")),
        "{:?}",
        report.problems
    );

    // No manifest at all is an error, not a report.
    std::fs::remove_file(root.join(SID).join("manifest.json")).unwrap();
    assert!(matches!(
        verify(root, SID),
        Err(RecordingError::NotFound(_))
    ));
    std::fs::write(root.join(SID).join("manifest.json"), b"{not json").unwrap();
    assert!(matches!(
        verify(root, SID),
        Err(RecordingError::CorruptManifest { .. })
    ));
}

async fn wait_for_manifest_chunks(root: &Path) -> serde_json::Value {
    for _ in 0..200 {
        let m = manifest(root);
        let files = std::fs::read_dir(root.join(SID))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("chunk-")
            })
            .count();
        if m["chunks"].as_array().unwrap().len() == files && files > 0 {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("abandoned recording was not flushed");
}

#[tokio::test]
async fn dropped_recorder_then_seal_partial_keeps_every_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Recorder::start(&small(root), SID, header()).await.unwrap();
    let other = rec.clone();
    let mut expected = String::new();
    for i in 0..100 {
        let s = format!("frame {i} ✓\r\n");
        expected.push_str(&s);
        let r = if i % 2 == 0 { &rec } else { &other };
        r.record(Frame::Output(s.into_bytes())).await.unwrap();
    }
    drop(rec);
    drop(other);
    let m = wait_for_manifest_chunks(root).await;
    assert_eq!(m["status"], "recording");
    assert!(m["sha256"].is_null());
    let report = verify(root, SID).unwrap();
    assert!(!report.ok, "unsealed recording must not verify");

    // A crash can also leave half an event line at the end of the last chunk.
    let files = m["chunks"].as_array().unwrap().len();
    let next = u32::try_from(files + 1).unwrap();
    std::fs::write(
        chunk_path(root, next),
        b"[9.5,\"o\",\"complete\"]\n[9.6,\"o\",\"cut sh",
    )
    .unwrap();
    expected.push_str("complete");

    let seal = seal_partial(root, SID).unwrap();
    assert_eq!(seal.status, SealStatus::Partial);
    assert_eq!(seal.chunks, next);
    let m = manifest(root);
    assert_eq!(m["status"], "partial");
    assert_eq!(m["sha256"], seal.sha256.as_str());
    let report = verify(root, SID).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.status, "partial");

    let (_, events) = parse_stream(&read_stream(root, SID).unwrap()).unwrap();
    assert_eq!(output_text(&events), expected);

    // Idempotent, and a new recorder cannot reuse the directory.
    assert_eq!(seal_partial(root, SID).unwrap(), seal);
    let err = Recorder::start(&small(root), SID, header())
        .await
        .unwrap_err();
    assert!(matches!(err, RecordingError::AlreadySealed(_)), "{err}");
}

#[tokio::test]
async fn seal_partial_refuses_altered_closed_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Recorder::start(&small(root), SID, header()).await.unwrap();
    for i in 0..100 {
        rec.record(Frame::Output(format!("frame {i}\r\n").into_bytes()))
            .await
            .unwrap();
    }
    drop(rec);
    wait_for_manifest_chunks(root).await;
    // An unsealed directory cannot be reused either.
    let err = Recorder::start(&small(root), SID, header())
        .await
        .unwrap_err();
    assert!(matches!(err, RecordingError::AlreadyExists(_)), "{err}");
    std::fs::write(chunk_path(root, 1), b"{\"version\":2}\n").unwrap();
    let err = seal_partial(root, SID).unwrap_err();
    assert!(matches!(err, RecordingError::ChunkMismatch { .. }), "{err}");
}

#[tokio::test]
async fn seal_is_idempotent_and_closes_the_recorder() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = Recorder::start(&RecorderConfig::new(tmp.path()), SID, header())
        .await
        .unwrap();
    let clone = rec.clone();
    rec.record(Frame::Output(b"hi".to_vec())).await.unwrap();
    let first = rec.seal().await.unwrap();
    assert_eq!(rec.seal().await.unwrap(), first);
    assert_eq!(clone.seal().await.unwrap(), first);
    assert!(matches!(
        rec.record(Frame::Output(b"late".to_vec())).await,
        Err(RecordingError::Closed)
    ));
    assert!(matches!(
        clone.record(Frame::Marker("late".into())).await,
        Err(RecordingError::Closed)
    ));
    assert_eq!(rec.progress().bytes, first.bytes);
    assert_eq!(rec.progress().chunks, first.chunks);
    drop(clone);
    assert_eq!(rec.seal().await.unwrap(), first);
    assert!(verify(tmp.path(), SID).unwrap().ok);
    // A sealed recording cannot be started again.
    let err = Recorder::start(&RecorderConfig::new(tmp.path()), SID, header())
        .await
        .unwrap_err();
    assert!(matches!(err, RecordingError::AlreadySealed(_)), "{err}");
}

#[tokio::test]
async fn concurrent_seal_and_record_lose_nothing_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = Recorder::start(&small(tmp.path()), SID, header())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let rec = rec.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..500 {
                let s = format!("<{t}:{i}>");
                match rec.record(Frame::Output(s.clone().into_bytes())).await {
                    Ok(()) => accepted.push(s),
                    Err(RecordingError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let seal = rec.seal().await.unwrap();
    let mut accepted = Vec::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    let (_, events) = parse_stream(&read_stream(tmp.path(), SID).unwrap()).unwrap();
    let text = output_text(&events);
    for s in &accepted {
        assert!(text.contains(s.as_str()), "accepted frame {s} missing");
    }
    assert_eq!(events.len(), accepted.len());
    assert!(
        events.windows(2).all(|w| w[0].time <= w[1].time),
        "times must not decrease"
    );
    assert!(verify(tmp.path(), SID).unwrap().ok);
    assert_eq!(
        seal.bytes,
        read_stream(tmp.path(), SID).unwrap().len() as u64
    );
}

#[tokio::test]
async fn bad_session_ids_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for bad in [
        "../etc",
        "sess_../../x",
        "sess_ABCDEF012345",
        "sess_0123456789a",
        "",
        "sess_0123456789ab/",
    ] {
        let err = Recorder::start(&RecorderConfig::new(root), bad, header())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RecordingError::InvalidSessionId(_)),
            "{bad}: {err}"
        );
        assert!(matches!(
            verify(root, bad),
            Err(RecordingError::InvalidSessionId(_))
        ));
        assert!(matches!(
            seal_partial(root, bad),
            Err(RecordingError::InvalidSessionId(_))
        ));
        assert!(matches!(
            read_stream(root, bad),
            Err(RecordingError::InvalidSessionId(_))
        ));
    }
    assert_eq!(
        std::fs::read_dir(root).unwrap().count(),
        0,
        "nothing created"
    );
    assert!(matches!(
        read_stream(root, SID),
        Err(RecordingError::NotFound(_))
    ));
    assert!(matches!(
        seal_partial(root, SID),
        Err(RecordingError::NotFound(_))
    ));
    assert!(matches!(
        verify(root, SID),
        Err(RecordingError::NotFound(_))
    ));
}

#[tokio::test]
async fn play_writes_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Recorder::start(&RecorderConfig::new(root), SID, header())
        .await
        .unwrap();
    rec.record(Frame::Output(b"hello ".to_vec())).await.unwrap();
    rec.record(Frame::Input(b"x".to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    rec.record(Frame::Output("wörld\r\n".as_bytes().to_vec()))
        .await
        .unwrap();
    rec.seal().await.unwrap();
    let (_, events) = parse_stream(&read_stream(root, SID).unwrap()).unwrap();
    assert!(events[2].time >= 0.2);
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    play(&events, 1000.0, None, &mut out).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(out, "hello wörld\r\n".as_bytes());
}

#[tokio::test]
async fn buffered_frames_reach_disk_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Recorder::start(&RecorderConfig::new(root), SID, header())
        .await
        .unwrap();
    let path = chunk_path(root, 1);
    let header_len = std::fs::metadata(&path).unwrap().len();
    assert!(header_len > 0, "header is on disk right after start");
    rec.record(Frame::Output(b"visible soon".to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk.len() as u64 > header_len);
    assert!(String::from_utf8_lossy(&on_disk).contains("visible soon"));
    assert_eq!(rec.progress().bytes, on_disk.len() as u64);
    assert_eq!(manifest(root)["status"], "recording");
    rec.seal().await.unwrap();
}

#[tokio::test]
async fn chunk_closes_after_interval_with_activity() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let config = RecorderConfig {
        chunk_interval: Duration::from_millis(300),
        flush_interval: Duration::from_millis(50),
        ..RecorderConfig::new(root)
    };
    let rec = Recorder::start(&config, SID, header()).await.unwrap();
    // Idle: the header-only chunk 1 stays open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(manifest(root)["chunks"].as_array().unwrap().len(), 0);
    rec.record(Frame::Output(b"a".to_vec())).await.unwrap();
    // Chunk 1 has been open long enough and now has activity: closed on the next tick, then
    // fsynced and listed by the background sync.
    let mut listed = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        listed = manifest(root)["chunks"].as_array().unwrap().len();
        if listed > 0 {
            break;
        }
    }
    assert_eq!(listed, 1);
    assert_eq!(
        rec.progress().chunks,
        1,
        "next chunk starts only with the next event"
    );
    rec.record(Frame::Output(b"b".to_vec())).await.unwrap();
    let seal = rec.seal().await.unwrap();
    assert_eq!(seal.chunks, 2);
    assert!(verify(root, SID).unwrap().ok);
    let (_, events) = parse_stream(&read_stream(root, SID).unwrap()).unwrap();
    assert_eq!(output_text(&events), "ab");
}

#[tokio::test]
async fn backpressure_bounds_the_queue() {
    // Current-thread runtime: the writer task cannot run until this task yields, so the queue
    // fills up and the next `record` must wait instead of buffering without bound.
    let tmp = tempfile::tempdir().unwrap();
    let config = RecorderConfig {
        queue_frames: 4,
        ..RecorderConfig::new(tmp.path())
    };
    let rec = Recorder::start(&config, SID, header()).await.unwrap();
    for i in 0..4 {
        rec.record(Frame::Output(format!("{i}").into_bytes()))
            .await
            .unwrap();
    }
    let mut fifth = pin!(rec.record(Frame::Output(b"4".to_vec())));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        fifth.as_mut().poll(&mut cx).is_pending(),
        "a full queue must make record wait"
    );
    // Once the writer drains the queue, the waiting frame is accepted.
    fifth.await.unwrap();
    rec.seal().await.unwrap();
    let (_, events) = parse_stream(&read_stream(tmp.path(), SID).unwrap()).unwrap();
    assert_eq!(output_text(&events), "01234");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_output_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Recorder::start(&RecorderConfig::new(root), SID, header())
        .await
        .unwrap();
    let frame: Vec<u8> = "0123456789abcdefghijklmnopqrstuvwxyz ┃ é \r\n"
        .repeat(400)
        .into_bytes();
    let total = 40 * 1024 * 1024;
    let n = total / frame.len();
    let started = std::time::Instant::now();
    for _ in 0..n {
        rec.record(Frame::Output(frame.clone())).await.unwrap();
    }
    let seal = rec.seal().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "recorded {} MiB in {secs:.2}s ({:.0} MiB/s), {} chunks",
        (n * frame.len()) >> 20,
        (n * frame.len()) as f64 / secs / 1_048_576.0,
        seal.chunks
    );
    assert!(seal.chunks > 100);
    let report = verify(root, SID).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let config = RecorderConfig {
        flush_interval: Duration::ZERO,
        ..RecorderConfig::new(tmp.path())
    };
    let err = Recorder::start(&config, SID, header()).await.unwrap_err();
    assert!(matches!(err, RecordingError::InvalidConfig(_)), "{err}");
}

#[test]
fn runtime_shutdown_still_writes_accepted_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // On a current-thread runtime the writer task never gets to run here: every frame is still
    // queued when the runtime is dropped, and the writer's teardown must write them.
    let rec = rt.block_on(async {
        let rec = Recorder::start(&small(&root), SID, header()).await.unwrap();
        for i in 0..50 {
            rec.record(Frame::Output(format!("queued {i}\r\n").into_bytes()))
                .await
                .unwrap();
        }
        rec
    });
    drop(rt);
    drop(rec);
    let m = manifest(&root);
    assert_eq!(m["status"], "recording");
    seal_partial(&root, SID).unwrap();
    assert!(verify(&root, SID).unwrap().ok);
    let (_, events) = parse_stream(&read_stream(&root, SID).unwrap()).unwrap();
    let expected: String = (0..50).map(|i| format!("queued {i}\r\n")).collect();
    assert_eq!(output_text(&events), expected);
}
