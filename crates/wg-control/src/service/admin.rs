//! Resources, the vault, the audit log and recording access.

use serde_json::json;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::time::{now_millis, rfc3339};
use wg_domain::{ErrorCode, SessionId};

use super::*;
use crate::ControlError;

impl ControlPlane {
    // ------------------------------------------------------------------ resources and vault

    /// Applies a resource file: every document or none.
    ///
    /// # Errors
    /// `bad_request` naming the line and column of the first problem.
    pub async fn apply(
        &self,
        yaml: &str,
        actor: &str,
    ) -> Result<Vec<AppliedResource>, ControlError> {
        let mut resources = wg_domain::resources::parse_documents(yaml)
            .map_err(|e| ControlError::bad_request(e.to_string()))?;
        if resources.is_empty() {
            return Err(ControlError::bad_request("the file holds no resources"));
        }
        // A pinned host key (given earlier or learnt on first use) survives an apply that
        // omits it: re-applying an unchanged file must not reopen the trust-on-first-use window.
        // Changing the key takes an explicit `hostKey`.
        for r in &mut resources {
            if let Resource::Target(t) = r
                && t.host_key.is_none()
                && let Some(Resource::Target(old)) =
                    self.inner.store.get_resource(Kind::Target, &t.name).await?
            {
                t.host_key = old.host_key;
            }
        }
        Ok(self.inner.store.apply_resources(&resources, actor).await?)
    }

    /// One resource.
    ///
    /// # Errors
    /// `not_found`.
    pub async fn get_resource(&self, kind: Kind, name: &str) -> Result<Resource, ControlError> {
        self.inner
            .store
            .get_resource(kind, name)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no {} named {name:?}", kind.as_str())))
    }

    /// Every resource of a kind.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_resources(&self, kind: Kind) -> Result<Vec<Resource>, ControlError> {
        Ok(self.inner.store.list_resources(kind).await?)
    }

    /// Deletes a resource.
    ///
    /// # Errors
    /// `not_found`.
    pub async fn delete_resource(
        &self,
        kind: Kind,
        name: &str,
        actor: &str,
    ) -> Result<(), ControlError> {
        if self.inner.store.delete_resource(kind, name, actor).await? {
            Ok(())
        } else {
            Err(ControlError::not_found(format!(
                "no {} named {name:?}",
                kind.as_str()
            )))
        }
    }

    /// Stores a secret, encrypted.
    ///
    /// # Errors
    /// `bad_request` for a bad path, kind or key format.
    pub async fn vault_put(
        &self,
        path: &str,
        kind: &str,
        secret: &str,
        actor: &str,
    ) -> Result<VaultEntry, ControlError> {
        if !path.starts_with("vault/")
            || path.len() < 7
            || path.len() > 253
            || !path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.@".contains(&b))
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(ControlError::bad_request(format!(
                "vault path {path:?} must look like vault/ssh/NAME (at most 253 characters: letters, digits, / - _ . @)"
            )));
        }
        match kind {
            "password" if !secret.is_empty() => {}
            "private_key"
                if secret.contains("-----BEGIN") && secret.contains("PRIVATE KEY-----") => {}
            "password" => return Err(ControlError::bad_request("the password is empty")),
            "private_key" => {
                return Err(ControlError::bad_request(
                    "the private key is not in PEM form (-----BEGIN OPENSSH PRIVATE KEY-----)",
                ));
            }
            other => {
                return Err(ControlError::bad_request(format!(
                    "secret kind {other:?} must be password or private_key"
                )));
            }
        }
        let (nonce, ciphertext) = self.inner.vault.seal(path, secret.as_bytes())?;
        let now = now_millis();
        self.inner
            .store
            .put_secret(
                &SealedSecret {
                    path: path.to_owned(),
                    kind: kind.to_owned(),
                    nonce,
                    ciphertext,
                    updated_ms: now,
                },
                actor,
            )
            .await?;
        Ok(VaultEntry {
            path: path.to_owned(),
            kind: kind.to_owned(),
            updated_at: rfc3339(now),
        })
    }

    /// Vault entries' metadata.
    ///
    /// # Errors
    /// Store failures.
    pub async fn vault_list(&self) -> Result<Vec<VaultEntry>, ControlError> {
        Ok(self
            .inner
            .store
            .list_secrets()
            .await?
            .into_iter()
            .map(|s| VaultEntry {
                path: s.path,
                kind: s.kind,
                updated_at: rfc3339(s.updated_ms),
            })
            .collect())
    }

    // ------------------------------------------------------------------ audit and recordings

    /// Audit events in chain order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn audit_list(
        &self,
        session: Option<String>,
        kind: Option<String>,
    ) -> Result<Vec<AuditEventView>, ControlError> {
        let filter = AuditFilter {
            session,
            kind,
            after_seq: None,
            limit: None,
        };
        Ok(self
            .inner
            .store
            .list_audit(&filter)
            .await?
            .iter()
            .map(audit_view)
            .collect())
    }

    /// Verifies the whole audit chain against the stored chain head.
    ///
    /// # Errors
    /// Store failures (a broken chain is an `ok: false` answer, not an error).
    pub async fn audit_verify(&self) -> Result<AuditVerify, ControlError> {
        let (head_seq, head_hash) = self.inner.store.audit_head().await?;
        let mut verifier = ChainVerifier::new(self.inner.store.chain_hasher().clone());
        let mut after = 0;
        let mut count = 0;
        loop {
            let page = self
                .inner
                .store
                .list_audit(&AuditFilter {
                    after_seq: Some(after),
                    limit: Some(5000),
                    ..Default::default()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if let Err(err) = verifier.push(e) {
                    return Ok(AuditVerify {
                        ok: false,
                        events: count,
                        error: Some(err.to_string()),
                    });
                }
                count += 1;
                after = e.seq;
            }
        }
        match verifier.finish(head_seq, &head_hash) {
            Ok(n) => Ok(AuditVerify {
                ok: true,
                events: n,
                error: None,
            }),
            Err(err) => Ok(AuditVerify {
                ok: false,
                events: count,
                error: Some(err.to_string()),
            }),
        }
    }

    async fn recording_accessed(
        &self,
        id: SessionId,
        operator: &str,
        how: &str,
    ) -> Result<(), ControlError> {
        self.inner
            .store
            .append_audit(
                &NewAuditEvent::new(kinds::RECORDING_ACCESSED)
                    .actor(operator)
                    .session(id)
                    .details(json!({"access": how})),
            )
            .await?;
        Ok(())
    }

    /// Re-hashes a recording against its manifest (audited as `recording.accessed`).
    ///
    /// # Errors
    /// `not_found` when the session or its recording does not exist.
    pub async fn recording_verify(
        &self,
        id: &str,
        operator: &str,
    ) -> Result<RecordingVerify, ControlError> {
        let id = parse_session_id(id)?;
        let record = self.require_recording(id).await?;
        self.recording_accessed(id, operator, "verify").await?;
        let root = self.inner.config.recordings_root.clone();
        let sid = id.to_string();
        let mut report = tokio::task::spawn_blocking(move || wg_recording::verify(&root, &sid))
            .await
            .map_err(|e| ControlError::internal(e.to_string()))??;
        // The files must also match the seal the store recorded when the session closed (and
        // the `recording.sealed` event carries): a recording rewritten consistently on disk —
        // chunks, manifest and SHA256SUMS together — still fails here.
        if let Some(sealed) = &record.recording_sha256
            && &report.sha256 != sealed
        {
            match self.sealed_prefix(&record, sealed).await? {
                Some(extra) => {
                    // What was sealed is intact; a gateway declared lost (or removed) while it
                    // was only stalled wrote on afterwards. The seal covers what it covers.
                    report = wg_recording::VerifyReport {
                        ok: true,
                        status: record.recording_status.clone(),
                        chunks: record.recording_chunks,
                        bytes: record.recording_bytes,
                        sha256: sealed.clone(),
                        problems: vec![format!(
                            "{extra} bytes were written after the seal (by a gateway that was \
                             declared lost or removed while it still ran); they are not part of \
                             the sealed recording"
                        )],
                    };
                }
                None => {
                    report.ok = false;
                    report.problems.push(format!(
                        "the recording's seal {} differs from the seal recorded when the session closed ({sealed})",
                        report.sha256
                    ));
                }
            }
        }
        Ok(RecordingVerify {
            session: id.to_string(),
            ok: report.ok,
            status: report.status,
            chunks: report.chunks,
            bytes: report.bytes,
            sha256: report.sha256,
            problems: report.problems,
        })
    }

    /// When the recording's stream is longer than what the store sealed and its first
    /// `recording_bytes` bytes hash to the recorded seal: how many bytes follow them. `None`
    /// when the sealed part itself does not match.
    async fn sealed_prefix(
        &self,
        record: &SessionRecord,
        sealed: &str,
    ) -> Result<Option<u64>, ControlError> {
        let root = self.inner.config.recordings_root.clone();
        let sid = record.id.to_string();
        let Ok(stream) =
            tokio::task::spawn_blocking(move || wg_recording::read_stream(&root, &sid))
                .await
                .map_err(|e| ControlError::internal(e.to_string()))?
        else {
            return Ok(None);
        };
        let Ok(n) = usize::try_from(record.recording_bytes) else {
            return Ok(None);
        };
        use sha2::Digest;
        Ok(
            (stream.len() > n && hex::encode(sha2::Sha256::digest(&stream[..n])) == sealed)
                .then(|| (stream.len() - n) as u64),
        )
    }

    /// The recording stream (asciicast v2), audited as `recording.accessed`.
    ///
    /// # Errors
    /// `not_found` when the session or its recording does not exist.
    pub async fn recording_stream(
        &self,
        id: &str,
        operator: &str,
    ) -> Result<Vec<u8>, ControlError> {
        let id = parse_session_id(id)?;
        let record = self.require_recording(id).await?;
        self.recording_accessed(id, operator, "play").await?;
        let root = self.inner.config.recordings_root.clone();
        let sid = id.to_string();
        let stream = tokio::task::spawn_blocking(move || wg_recording::read_stream(&root, &sid))
            .await
            .map_err(|e| ControlError::internal(e.to_string()))??;
        // Never hand out evidence that does not match its seal: the sealed bytes only (a
        // gateway that was declared lost while merely stalled may have written on after them).
        let mut stream = stream;
        if let Some(sealed) = &record.recording_sha256 {
            use sha2::Digest;
            let actual = hex::encode(sha2::Sha256::digest(&stream));
            if &actual != sealed
                && let Ok(n) = usize::try_from(record.recording_bytes)
                && stream.len() > n
                && hex::encode(sha2::Sha256::digest(&stream[..n])) == *sealed
            {
                stream.truncate(n);
                return Ok(stream);
            }
            if &actual != sealed {
                return Err(ControlError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the recording of {id} does not match the seal recorded when it closed; see `wgctl recording verify {id}`"
                    ),
                ));
            }
        }
        Ok(stream)
    }

    async fn require_recording(&self, id: SessionId) -> Result<SessionRecord, ControlError> {
        let r = self
            .inner
            .store
            .get_session(id)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no session {id}")))?;
        if r.recording_mode != "full" || r.recording_status == "none" {
            return Err(ControlError::not_found(format!(
                "session {id} has no recording"
            )));
        }
        Ok(r)
    }

    /// Concurrency use against limits: for the one actor, target or policy named, or every scope
    /// key with live sessions when none is named.
    ///
    /// # Errors
    /// `bad_request` when more than one selector is given; store failures.
    pub async fn limits_usage(
        &self,
        actor: Option<&str>,
        target: Option<&str>,
        policy: Option<&str>,
    ) -> Result<Vec<wg_domain::api::LimitUsage>, ControlError> {
        let selected: Vec<(&str, &str)> =
            [("actor", actor), ("target", target), ("policy", policy)]
                .into_iter()
                .filter_map(|(scope, key)| key.map(|k| (scope, k)))
                .collect();
        if selected.len() > 1 {
            return Err(ControlError::bad_request(
                "name at most one of actor, target, policy",
            ));
        }
        let store = &self.inner.store;
        let rows: Vec<(String, String, i64)> = match selected.first() {
            Some((scope, key)) => {
                let used = store
                    .slot_usage(Some(scope), Some(key))
                    .await?
                    .first()
                    .map_or(0, |u| u.used);
                vec![((*scope).to_owned(), (*key).to_owned(), used)]
            }
            None => store
                .slot_usage(None, None)
                .await?
                .into_iter()
                .map(|u| (u.scope, u.key, u.used))
                .collect(),
        };
        let defaults = match store.get_resource(Kind::Limits, "default").await? {
            Some(Resource::Limits(l)) => Some(l),
            _ => None,
        };
        let mut out = Vec::with_capacity(rows.len());
        for (scope, key, used) in rows {
            let limit = match scope.as_str() {
                "actor" => {
                    let own = match store.get_resource(Kind::User, &key).await? {
                        Some(Resource::User(u)) => u.max_sessions_per_user,
                        _ => match store.get_resource(Kind::ServicePrincipal, &key).await? {
                            Some(Resource::ServicePrincipal(s)) => s.max_sessions_per_user,
                            _ => None,
                        },
                    };
                    own.or(defaults.as_ref().and_then(|d| d.max_sessions_per_user))
                }
                "target" => match store.get_resource(Kind::Target, &key).await? {
                    Some(Resource::Target(t)) => t.max_sessions_per_target,
                    _ => None,
                }
                .or(defaults.as_ref().and_then(|d| d.max_sessions_per_target)),
                "policy" => match store.get_resource(Kind::Policy, &key).await? {
                    Some(Resource::Policy(p)) => p.concurrency.max,
                    _ => None,
                },
                _ => None,
            };
            out.push(wg_domain::api::LimitUsage {
                scope,
                key,
                used,
                limit,
            });
        }
        Ok(out)
    }
}
