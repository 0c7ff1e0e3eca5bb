//! asciicast v2 text: header and event encoding, the cross-frame UTF-8 decoder, parsing and
//! playback.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{Header, RecordingError};

/// The header line as serialised; field order is fixed (version first) for readability.
#[derive(Serialize)]
struct HeaderLine<'a> {
    version: u8,
    width: u32,
    height: u32,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<HeaderEnv<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
}

#[derive(Serialize)]
struct HeaderEnv<'a> {
    #[serde(rename = "TERM")]
    term: &'a str,
}

/// The header line, newline-terminated.
pub(crate) fn header_line(h: &Header) -> Result<Vec<u8>, serde_json::Error> {
    let line = HeaderLine {
        version: 2,
        width: h.width,
        height: h.height,
        timestamp: h.timestamp,
        env: h.term.as_deref().map(|term| HeaderEnv { term }),
        title: h.title.as_deref(),
    };
    let mut out = serde_json::to_vec(&line)?;
    out.push(b'\n');
    Ok(out)
}

/// Appends one event line `[secs, kind, data]\n` to `buf`; returns the bytes appended.
/// `micros` is the event time in microseconds since the recording started.
pub(crate) fn write_event(buf: &mut Vec<u8>, micros: u64, kind: &str, data: &str) -> usize {
    let before = buf.len();
    // Microsecond resolution; ryu prints the shortest round-tripping form, e.g. `1.234567`.
    #[allow(clippy::cast_precision_loss)]
    let secs = micros as f64 / 1_000_000.0;
    match serde_json::to_writer(&mut *buf, &(secs, kind, data)) {
        Ok(()) => {
            buf.push(b'\n');
            buf.len() - before
        }
        Err(e) => {
            // Unreachable in practice (a finite float and two strings into a Vec).
            tracing::error!(error = %e, "cannot encode recording event");
            buf.truncate(before);
            0
        }
    }
}

/// Longest incomplete UTF-8 sequence that can be held back between frames (a 4-byte sequence
/// missing its last byte).
const MAX_CARRY: usize = 3;

/// Decodes one direction of terminal traffic from bytes to text across frame boundaries.
///
/// An incomplete multi-byte sequence at the end of a frame is held back (at most 3 bytes) and
/// prepended to the next frame; invalid bytes become U+FFFD. Valid UTF-8 input is reproduced
/// exactly, however it is split into frames. The common case (no carry, valid frame) borrows the
/// frame without copying; the scratch buffers are reused, so decoding does not allocate per
/// frame in steady state.
#[derive(Debug, Default)]
pub(crate) struct Utf8Decoder {
    carry: [u8; MAX_CARRY],
    carry_len: usize,
    joined: Vec<u8>,
    text: String,
}

impl Utf8Decoder {
    /// The text of `data` (plus any carried bytes), minus an incomplete trailing sequence which
    /// is carried to the next call. May be empty.
    pub(crate) fn decode<'a>(&'a mut self, data: &'a [u8]) -> &'a str {
        let input: &'a [u8] = if self.carry_len == 0 {
            data
        } else {
            self.joined.clear();
            self.joined.extend_from_slice(&self.carry[..self.carry_len]);
            self.joined.extend_from_slice(data);
            self.carry_len = 0;
            &self.joined
        };
        if let Ok(s) = std::str::from_utf8(input) {
            return s;
        }
        self.text.clear();
        let mut rest = input;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.text.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    if let Ok(s) = std::str::from_utf8(valid) {
                        self.text.push_str(s);
                    }
                    match e.error_len() {
                        Some(n) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None if after.len() <= MAX_CARRY => {
                            // An incomplete but so far valid sequence: wait for the next frame.
                            self.carry[..after.len()].copy_from_slice(after);
                            self.carry_len = after.len();
                            break;
                        }
                        None => {
                            // Cannot happen (an incomplete sequence is at most 3 bytes).
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            break;
                        }
                    }
                }
            }
        }
        &self.text
    }

    /// Drops a pending incomplete sequence; true if there was one (the caller records U+FFFD).
    pub(crate) fn take_dangling(&mut self) -> bool {
        std::mem::take(&mut self.carry_len) > 0
    }
}

/// One asciicast v2 event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Time since the recording started, in seconds.
    pub time: f64,
    /// Event code: `"o"` output, `"i"` input, `"r"` resize, `"m"` marker.
    pub kind: String,
    /// Event data (text; `"COLSxROWS"` for resizes).
    pub data: String,
}

/// Parses an asciicast v2 stream into its header (a JSON object with `"version": 2`) and events.
/// Blank lines are ignored.
///
/// # Errors
/// [`RecordingError::Parse`] naming the 1-based line that is not a valid header or event.
pub fn parse_stream(stream: &[u8]) -> Result<(serde_json::Value, Vec<Event>), RecordingError> {
    let mut lines = stream.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let header: serde_json::Value =
        serde_json::from_slice(first).map_err(|e| RecordingError::Parse {
            line: 1,
            reason: format!("bad header: {e}"),
        })?;
    if !header.is_object() {
        return Err(RecordingError::Parse {
            line: 1,
            reason: "header is not a JSON object".into(),
        });
    }
    if header.get("version").and_then(serde_json::Value::as_u64) != Some(2) {
        return Err(RecordingError::Parse {
            line: 1,
            reason: "header version is not 2".into(),
        });
    }
    let mut events = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (time, kind, data): (f64, String, String) =
            serde_json::from_slice(line).map_err(|e| RecordingError::Parse {
                line: line_no,
                reason: format!("bad event: {e}"),
            })?;
        if !time.is_finite() || time < 0.0 {
            return Err(RecordingError::Parse {
                line: line_no,
                reason: format!("bad event time {time}"),
            });
        }
        events.push(Event { time, kind, data });
    }
    Ok((header, events))
}

/// The concatenated data of all `"o"` (output) events.
pub fn output_text(events: &[Event]) -> String {
    let len = events
        .iter()
        .filter(|e| e.kind == "o")
        .map(|e| e.data.len())
        .sum();
    let mut out = String::with_capacity(len);
    for e in events.iter().filter(|e| e.kind == "o") {
        out.push_str(&e.data);
    }
    out
}

/// Upper bound on the total playback schedule, so absurd timestamps cannot overflow `Instant`.
const MAX_PLAYBACK_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Replays the `"o"` events to `out` with their original timing divided by `speed`
/// (2.0 = twice as fast). When `max_idle` is given, any gap between consecutive events longer
/// than it (in recording time, before the speed-up) is shortened to it.
///
/// Events are scheduled against one start instant, so many short gaps do not accumulate timer
/// rounding. `out` is flushed after each write.
///
/// # Errors
/// `InvalidInput` when `speed` is not a finite number > 0; otherwise any error of `out`.
pub async fn play<W: AsyncWrite + Unpin>(
    events: &[Event],
    speed: f64,
    max_idle: Option<Duration>,
    out: &mut W,
) -> std::io::Result<()> {
    if !(speed.is_finite() && speed > 0.0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("playback speed must be a finite number > 0, got {speed}"),
        ));
    }
    let cap = max_idle.map(|d| d.as_secs_f64());
    let start = tokio::time::Instant::now();
    let mut prev = 0.0_f64;
    let mut schedule = 0.0_f64;
    for ev in events {
        let t = if ev.time.is_finite() {
            ev.time.max(prev)
        } else {
            prev
        };
        let mut gap = t - prev;
        if let Some(cap) = cap {
            gap = gap.min(cap);
        }
        prev = t;
        schedule = (schedule + gap / speed).min(MAX_PLAYBACK_SECS);
        if ev.kind != "o" {
            continue;
        }
        let at = start + Duration::try_from_secs_f64(schedule).unwrap_or_default();
        tokio::time::sleep_until(at).await;
        out.write_all(ev.data.as_bytes()).await?;
        out.flush().await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn decode_all(frames: &[&[u8]]) -> String {
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        for f in frames {
            out.push_str(d.decode(f));
        }
        if d.take_dangling() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
        out
    }

    #[test]
    fn decoder_passes_valid_utf8_through_any_split() {
        let text = "héllo → wörld 🦀 end";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode_all(&[a, b]), text, "split at {split}");
        }
        // one byte per frame
        let frames: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&frames), text);
    }

    #[test]
    fn decoder_replaces_only_invalid_bytes() {
        assert_eq!(decode_all(&[b"a\xffb"]), "a\u{fffd}b");
        assert_eq!(decode_all(&[b"a\xe2\x82", b"x"]), "a\u{fffd}x");
        assert_eq!(decode_all(&[b"a\xe2", b"\x82\xac"]), "a\u{20ac}");
        // dangling at the end
        assert_eq!(decode_all(&[b"a\xf0\x9f\xa6"]), "a\u{fffd}");
        // matches from_utf8_lossy for a mixed sequence
        let raw: &[u8] = b"\xc3\x28 ok \xa0\xa1 \xf0\x28\x8c\x28 \xed\xa0\x80";
        assert_eq!(decode_all(&[raw]), String::from_utf8_lossy(raw));
    }

    #[test]
    fn event_lines_escape_data() {
        let mut buf = Vec::new();
        let n = write_event(&mut buf, 1_500_000, "o", "a\"b\\c\n\x1b[0m\u{7f}");
        assert_eq!(n, buf.len());
        let line = std::str::from_utf8(&buf).unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let (t, k, d): (f64, String, String) = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(
            (t, k.as_str(), d.as_str()),
            (1.5, "o", "a\"b\\c\n\x1b[0m\u{7f}")
        );
    }

    #[test]
    fn header_and_parse_roundtrip() {
        let h = Header {
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            term: Some("xterm-256color".into()),
            title: Some("t".into()),
        };
        let mut stream = header_line(&h).unwrap();
        assert!(stream.starts_with(br#"{"version":2,"width":80,"height":24,"timestamp":1700000000,"env":{"TERM":"xterm-256color"},"title":"t"}"#));
        write_event(&mut stream, 0, "o", "hi");
        write_event(&mut stream, 250_000, "r", "100x30");
        let (header, events) = parse_stream(&stream).unwrap();
        assert_eq!(header["width"], 80);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            Event {
                time: 0.25,
                kind: "r".into(),
                data: "100x30".into()
            }
        );
        assert_eq!(output_text(&events), "hi");

        let minimal = Header {
            width: 1,
            height: 2,
            timestamp: 3,
            term: None,
            title: None,
        };
        assert_eq!(
            header_line(&minimal).unwrap(),
            b"{\"version\":2,\"width\":1,\"height\":2,\"timestamp\":3}\n"
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse_stream(b"{\"version\":2}\n[0.1,\"o\",\"a\"]\n[oops]\n").unwrap_err();
        assert!(
            matches!(err, RecordingError::Parse { line: 3, .. }),
            "{err}"
        );
        let err = parse_stream(b"{\"version\":1}\n").unwrap_err();
        assert!(
            matches!(err, RecordingError::Parse { line: 1, .. }),
            "{err}"
        );
        let err = parse_stream(b"").unwrap_err();
        assert!(
            matches!(err, RecordingError::Parse { line: 1, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn play_keeps_timing_and_caps_idle() {
        let events = vec![
            Event {
                time: 0.1,
                kind: "o".into(),
                data: "a".into(),
            },
            Event {
                time: 0.2,
                kind: "i".into(),
                data: "x".into(),
            },
            Event {
                time: 100.2,
                kind: "o".into(),
                data: "b".into(),
            },
        ];
        let start = tokio::time::Instant::now();
        let mut out = Vec::new();
        play(&events, 2.0, Some(Duration::from_millis(300)), &mut out)
            .await
            .unwrap();
        assert_eq!(out, b"ab");
        // (0.1 + 0.1 + min(100, 0.3)) / 2 = 0.25 s
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");

        let mut out = Vec::new();
        assert!(play(&events, 0.0, None, &mut out).await.is_err());
        assert!(play(&events, f64::NAN, None, &mut out).await.is_err());
    }
}
