//! The recording tap of one channel direction: what of the relayed bytes goes into the recording.
//!
//! - Channels with a PTY, and any channel while its stream is text, are recorded in full
//!   (asciicast `o`/`i` events): that is what a person saw or typed.
//! - A channel without a PTY whose stream turns out to be binary (invalid UTF-8 or NUL bytes —
//!   file transfers through `cat`, `tar`, `rsync`) switches to **digest mode** for that
//!   direction: the recording gets a marker when the switch happens and, when the channel ends,
//!   a marker with the byte count and SHA-256 of everything that passed after the switch. Binary
//!   payloads cannot be represented faithfully in asciicast text, would bloat recordings about
//!   2.4 times, and are not what a session review reads; their digest still proves exactly what
//!   passed.
//! - Subsystem channels (sftp) are markers only (see the bridge).

use sha2::{Digest, Sha256};

/// Which way the bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Target to client, stdout (`o` events).
    Output,
    /// Target to client, stderr (`o` events).
    ErrorOutput,
    /// Client to target (`i` events).
    Input,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Output => "output",
            Direction::ErrorOutput => "error output",
            Direction::Input => "input",
        }
    }
}

/// What the tap wants recorded for a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tapped {
    /// Record the frame as an event.
    Full,
    /// Record this marker, then nothing of the frame (digest mode begins).
    SwitchToDigest(String),
    /// Record nothing (the frame went into the digest).
    Digested,
}

/// The tap of one direction of one channel.
#[derive(Debug)]
pub(crate) struct Tap {
    direction: Direction,
    probe: TextProbe,
    digest: Option<(Sha256, u64)>,
}

impl Tap {
    pub(crate) fn new(direction: Direction) -> Self {
        Tap {
            direction,
            probe: TextProbe::default(),
            digest: None,
        }
    }

    /// Classifies a frame. `pty` says whether the channel has a terminal (always recorded in full).
    pub(crate) fn frame(&mut self, data: &[u8], pty: bool) -> Tapped {
        if let Some((hasher, bytes)) = &mut self.digest {
            hasher.update(data);
            *bytes += data.len() as u64;
            return Tapped::Digested;
        }
        if pty || self.probe.feed(data) {
            return Tapped::Full;
        }
        let mut hasher = Sha256::new();
        hasher.update(data);
        self.digest = Some((hasher, data.len() as u64));
        Tapped::SwitchToDigest(format!(
            "binary {} without a terminal: recording its size and SHA-256 only",
            self.direction.name()
        ))
    }

    /// The closing marker of a digested direction, if it switched.
    pub(crate) fn finish(&mut self) -> Option<String> {
        self.digest.take().map(|(hasher, bytes)| {
            format!(
                "binary {}: {bytes} bytes, sha256={}",
                self.direction.name(),
                hex::encode(hasher.finalize())
            )
        })
    }
}

/// Tells text from binary across frame boundaries: a UTF-8 sequence split between two frames is
/// still text.
#[derive(Debug, Default)]
struct TextProbe {
    /// The incomplete trailing sequence of the previous frame (at most 3 bytes).
    carry: Vec<u8>,
}

/// Length of the UTF-8 sequence a leading byte starts (0 for a byte that cannot lead).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl TextProbe {
    /// Whether `data`, following what was fed before, is still text.
    fn feed(&mut self, data: &[u8]) -> bool {
        let mut rest = data;
        if let Some(&lead) = self.carry.first() {
            let need = sequence_len(lead).saturating_sub(self.carry.len());
            if rest.len() < need {
                self.carry.extend_from_slice(rest);
                return true;
            }
            let mut ch = std::mem::take(&mut self.carry);
            ch.extend_from_slice(&rest[..need]);
            if std::str::from_utf8(&ch).is_err() {
                return false;
            }
            rest = &rest[need..];
        }
        if rest.contains(&0) {
            return false;
        }
        match std::str::from_utf8(rest) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                self.carry = rest[e.valid_up_to()..].to_vec();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_split_anywhere_stays_text() {
        let text = "héllo wörld — ✓ 𝄞 done\n".as_bytes();
        for cut in 0..text.len() {
            let mut p = TextProbe::default();
            assert!(p.feed(&text[..cut]), "cut {cut}");
            assert!(p.feed(&text[cut..]), "cut {cut}");
        }
    }

    #[test]
    fn binary_is_detected_and_digested() {
        let mut tap = Tap::new(Direction::Output);
        assert_eq!(tap.frame(b"plain text\n", false), Tapped::Full);
        let Tapped::SwitchToDigest(m) = tap.frame(&[0xff, 0x00, 0x41], false) else {
            panic!("expected a switch")
        };
        assert!(m.contains("binary output"));
        assert_eq!(tap.frame(b"more", false), Tapped::Digested);
        let end = tap.finish().unwrap();
        let mut h = Sha256::new();
        h.update([0xff, 0x00, 0x41]);
        h.update(b"more");
        assert_eq!(
            end,
            format!(
                "binary output: 7 bytes, sha256={}",
                hex::encode(h.finalize())
            )
        );
        assert_eq!(tap.finish(), None);
    }

    #[test]
    fn a_terminal_is_always_recorded_in_full() {
        let mut tap = Tap::new(Direction::Output);
        assert_eq!(tap.frame(&[0xff, 0xfe, 0x00], true), Tapped::Full);
        let mut nul = Tap::new(Direction::Input);
        assert!(matches!(
            nul.frame(b"a\0b", false),
            Tapped::SwitchToDigest(_)
        ));
    }
}
