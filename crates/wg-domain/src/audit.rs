//! The audit log's event model and hash chain (PRODUCT.md §7).
//!
//! Each event's `hash` is computed over the JSON array
//! `[seq, time_ms, kind, actor, session, reason, details_json, prev]`, where `details_json` is the
//! exact text stored and `prev` is the previous event's hash (64 zeros for the first event). Editing
//! any field of any event, or removing or reordering events, breaks the chain from that point.
//!
//! The hash is HMAC-SHA-256 (RFC 2104) under a chain key kept outside the database
//! ([`ChainHasher::keyed`]; the control plane derives it from the vault master key), so that
//! someone who can write to the database cannot rewrite an event *and* recompute the chain after
//! it. [`ChainHasher::Plain`] (bare SHA-256) remains for tools and tests without a key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::UnixMillis;

/// The `prev` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Audit event kinds, as named by the seed and PRODUCT.md §7.
pub mod kinds {
    /// A client leg authenticated and asked for a target.
    pub const SESSION_REQUESTED: &str = "session.requested";
    /// Every policy condition held.
    pub const SESSION_APPROVED: &str = "session.approved";
    /// The target leg is up.
    pub const SESSION_OPENED: &str = "session.opened";
    /// The session ended.
    pub const SESSION_CLOSED: &str = "session.closed";
    /// An attempt was denied.
    pub const SESSION_DENIED: &str = "session.denied";
    /// An operator terminated the session.
    pub const SESSION_TERMINATED: &str = "session.terminated";
    /// The idle warning fired.
    pub const SESSION_IDLE_WARNING: &str = "session.idle_warning";
    /// The client leg dropped; the session waits for its owner within the reconnect grace.
    pub const SESSION_DETACHED: &str = "session.detached";
    /// A detached session was re-attached by its owner (same ID, same PTY).
    pub const SESSION_RESUMED: &str = "session.resumed";
    /// A new client leg took over the session's terminal (after a handoff, the new owner's).
    pub const SESSION_ATTACHED: &str = "session.attached";
    /// The owner (or an operator) asked to hand the session over to another principal.
    pub const SESSION_HANDOFF_REQUESTED: &str = "session.handoff.requested";
    /// The incoming owner accepted a handoff: the owner changed.
    pub const SESSION_HANDOFF_ACCEPTED: &str = "session.handoff.accepted";
    /// A handoff was not accepted in time (an accept after the window is refused).
    pub const SESSION_HANDOFF_EXPIRED: &str = "session.handoff.expired";
    /// A pending handoff was voided because its session ended before anyone accepted it.
    pub const SESSION_HANDOFF_CANCELLED: &str = "session.handoff.cancelled";
    /// A port forward was opened through a session.
    pub const SESSION_FORWARD_OPENED: &str = "session.forward.opened";
    /// A port forward was refused by policy.
    pub const SESSION_FORWARD_DENIED: &str = "session.forward.denied";
    /// A recording was sealed.
    pub const RECORDING_SEALED: &str = "recording.sealed";
    /// A recording was played back or verified.
    pub const RECORDING_ACCESSED: &str = "recording.accessed";
    /// Resources were applied.
    pub const POLICY_APPLIED: &str = "policy.applied";
    /// Resources were deleted.
    pub const RESOURCE_DELETED: &str = "resource.deleted";
    /// A vault secret was written (never its value).
    pub const VAULT_WRITTEN: &str = "vault.written";
    /// An API token was issued for a principal (never the token or its hash).
    pub const TOKEN_CREATED: &str = "token.created";
    /// A gateway joined the cluster (redeemed its join token; `dev`: its first command stream
    /// of the process), or came back after it was declared lost (`returned_after_loss`).
    pub const GATEWAY_JOINED: &str = "gateway.joined";
    /// A joined gateway (re)opened its command stream to a control-plane replica (at every
    /// start, and after a replica restart or failover).
    pub const GATEWAY_CONNECTED: &str = "gateway.connected";
    /// A one-time gateway join token was created (never the token).
    pub const GATEWAY_TOKEN_CREATED: &str = "gateway.token.created";
    /// An unused join token was revoked (`wgctl gateway token revoke`).
    pub const GATEWAY_TOKEN_REVOKED: &str = "gateway.token.revoked";
    /// A gateway renewed its client certificate (with the one it had).
    pub const GATEWAY_CERTIFICATE_RENEWED: &str = "gateway.certificate.renewed";
    /// A gateway was revoked (`wgctl gateway remove`).
    pub const GATEWAY_REMOVED: &str = "gateway.removed";
    /// A gateway missed its lease.
    pub const GATEWAY_LOST: &str = "gateway.lost";
}

/// An event to append; the store assigns `seq`, `time`, `prev` and `hash`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// One of [`kinds`].
    pub kind: String,
    /// The acting principal (operator, actor or `gateway:NAME`).
    pub actor: Option<String>,
    /// The session concerned.
    pub session: Option<String>,
    /// The reason given, if any.
    pub reason: Option<String>,
    /// Kind-specific details (a JSON object).
    pub details: serde_json::Value,
}

impl NewAuditEvent {
    /// An event of `kind` with no actor, session, reason or details.
    pub fn new(kind: &str) -> Self {
        NewAuditEvent {
            kind: kind.to_owned(),
            actor: None,
            session: None,
            reason: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// Sets the acting principal.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Sets the session.
    pub fn session(mut self, session: impl ToString) -> Self {
        self.session = Some(session.to_string());
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored audit event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: UnixMillis,
    /// Event kind.
    pub kind: String,
    /// Acting principal.
    pub actor: Option<String>,
    /// Session ID.
    pub session: Option<String>,
    /// Reason.
    pub reason: Option<String>,
    /// Details as stored (JSON text).
    pub details_json: String,
    /// Previous event's hash.
    pub prev: String,
    /// This event's hash.
    pub hash: String,
}

/// How chain hashes are computed.
#[derive(Clone, Default)]
pub enum ChainHasher {
    /// SHA-256 of the canonical form (no key).
    #[default]
    Plain,
    /// HMAC-SHA-256 of the canonical form under a secret key.
    Keyed(ring::hmac::Key),
}

impl std::fmt::Debug for ChainHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainHasher::Plain => f.write_str("ChainHasher::Plain"),
            ChainHasher::Keyed(_) => f.write_str("ChainHasher::Keyed(<key redacted>)"),
        }
    }
}

impl ChainHasher {
    /// A keyed hasher whose key is derived from `secret` (any length; e.g. the vault master key)
    /// as HMAC-SHA-256(secret, "wardengate audit chain v1").
    pub fn keyed(secret: &[u8]) -> Self {
        let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&derive, b"wardengate audit chain v1");
        ChainHasher::Keyed(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref()))
    }

    /// The chain hash of an event (lowercase hex, 64 characters).
    #[allow(clippy::too_many_arguments)]
    pub fn hash(
        &self,
        seq: i64,
        time_ms: UnixMillis,
        kind: &str,
        actor: Option<&str>,
        session: Option<&str>,
        reason: Option<&str>,
        details_json: &str,
        prev: &str,
    ) -> String {
        let canonical = serde_json::json!([
            seq,
            time_ms,
            kind,
            actor,
            session,
            reason,
            details_json,
            prev
        ])
        .to_string();
        match self {
            ChainHasher::Plain => hex::encode(Sha256::digest(canonical.as_bytes())),
            ChainHasher::Keyed(key) => hex::encode(ring::hmac::sign(key, canonical.as_bytes())),
        }
    }
}

/// Computes the unkeyed chain hash of an event (lowercase hex SHA-256); see [`ChainHasher`].
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    seq: i64,
    time_ms: UnixMillis,
    kind: &str,
    actor: Option<&str>,
    session: Option<&str>,
    reason: Option<&str>,
    details_json: &str,
    prev: &str,
) -> String {
    ChainHasher::Plain.hash(
        seq,
        time_ms,
        kind,
        actor,
        session,
        reason,
        details_json,
        prev,
    )
}

impl AuditEvent {
    /// Recomputes this event's unkeyed hash from its fields.
    pub fn expected_hash(&self) -> String {
        self.expected_hash_with(&ChainHasher::Plain)
    }

    /// Recomputes this event's hash with `hasher`.
    pub fn expected_hash_with(&self, hasher: &ChainHasher) -> String {
        hasher.hash(
            self.seq,
            self.time_ms,
            &self.kind,
            self.actor.as_deref(),
            self.session.as_deref(),
            self.reason.as_deref(),
            &self.details_json,
            &self.prev,
        )
    }
}

/// Where a chain check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's content does not match its hash (edited).
    #[error("event {seq}: content does not match its hash (edited)")]
    Edited {
        /// The event.
        seq: i64,
    },
    /// An event's `prev` is not the previous event's hash (removed, inserted or reordered).
    #[error(
        "event {seq}: prev does not match the hash of event {prev_seq} (an event was removed or reordered)"
    )]
    Broken {
        /// The event.
        seq: i64,
        /// The event before it.
        prev_seq: i64,
    },
    /// Sequence numbers skip (an event was removed).
    #[error("event {seq} follows event {prev_seq}: {missing} event(s) missing")]
    Gap {
        /// The event.
        seq: i64,
        /// The event before it.
        prev_seq: i64,
        /// How many are missing.
        missing: i64,
    },
    /// The stored chain head does not match the last event (the tail was removed).
    #[error(
        "the chain head records {head_seq} events but the log ends at {last_seq} (events removed from the end)"
    )]
    Truncated {
        /// The head's count.
        head_seq: i64,
        /// The last event present.
        last_seq: i64,
    },
}

/// Incremental chain verifier: feed events in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
    hasher: ChainHasher,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier::new(ChainHasher::Plain)
    }
}

impl ChainVerifier {
    /// A verifier for a chain hashed with `hasher`.
    pub fn new(hasher: ChainHasher) -> Self {
        ChainVerifier {
            last_seq: 0,
            last_hash: GENESIS.to_owned(),
            hasher,
        }
    }

    /// Checks the next event.
    ///
    /// # Errors
    /// The first [`ChainError`].
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainError> {
        if e.expected_hash_with(&self.hasher) != e.hash {
            return Err(ChainError::Edited { seq: e.seq });
        }
        if e.seq != self.last_seq + 1 {
            return Err(ChainError::Gap {
                seq: e.seq,
                prev_seq: self.last_seq,
                missing: e.seq - self.last_seq - 1,
            });
        }
        if e.prev != self.last_hash {
            return Err(ChainError::Broken {
                seq: e.seq,
                prev_seq: self.last_seq,
            });
        }
        self.last_seq = e.seq;
        self.last_hash = e.hash.clone();
        Ok(())
    }

    /// Checks the end of the log against the stored chain head `(seq, hash)`.
    ///
    /// # Errors
    /// [`ChainError::Truncated`] when the head is ahead of the last event seen.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<i64, ChainError> {
        if head_seq != self.last_seq || head_hash != self.last_hash {
            return Err(ChainError::Truncated {
                head_seq,
                last_seq: self.last_seq,
            });
        }
        Ok(self.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let details = format!("{{\"n\":{seq}}}");
                let hash = chain_hash(
                    seq,
                    1000 + seq,
                    "session.opened",
                    Some("a"),
                    None,
                    None,
                    &details,
                    &prev,
                );
                let e = AuditEvent {
                    seq,
                    time_ms: 1000 + seq,
                    kind: "session.opened".into(),
                    actor: Some("a".into()),
                    session: None,
                    reason: None,
                    details_json: details,
                    prev: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent], head: (i64, &str)) -> Result<i64, ChainError> {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(e)?;
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn a_keyed_chain_cannot_be_recomputed_without_the_key() {
        let keyed = ChainHasher::keyed(b"master key bytes");
        let e = AuditEvent {
            seq: 1,
            time_ms: 5,
            kind: "session.opened".into(),
            actor: None,
            session: None,
            reason: None,
            details_json: "{}".into(),
            prev: GENESIS.into(),
            hash: String::new(),
        };
        let with_key = e.expected_hash_with(&keyed);
        assert_ne!(with_key, e.expected_hash());
        assert_eq!(
            with_key,
            e.expected_hash_with(&ChainHasher::keyed(b"master key bytes"))
        );
        assert_ne!(
            with_key,
            e.expected_hash_with(&ChainHasher::keyed(b"another key"))
        );
        let mut forged = e.clone();
        forged.hash = e.expected_hash(); // recomputed by someone without the key
        let mut v = ChainVerifier::new(keyed);
        assert_eq!(v.push(&forged), Err(ChainError::Edited { seq: 1 }));
    }

    #[test]
    fn intact_chain_verifies_and_tampering_is_detected() {
        let c = chain(5);
        let head = (5, c[4].hash.clone());
        assert_eq!(verify(&c, (head.0, &head.1)), Ok(5));

        let mut edited = c.clone();
        edited[2].reason = Some("changed".into());
        assert_eq!(
            verify(&edited, (head.0, &head.1)),
            Err(ChainError::Edited { seq: 3 })
        );

        let mut removed = c.clone();
        removed.remove(2);
        assert!(matches!(
            verify(&removed, (head.0, &head.1)),
            Err(ChainError::Gap { seq: 4, .. })
        ));

        let truncated = &c[..4];
        assert!(matches!(
            verify(truncated, (head.0, &head.1)),
            Err(ChainError::Truncated { .. })
        ));
    }
}
