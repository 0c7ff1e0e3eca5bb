//! Access checks shared by everything that makes a principal the owner of a session: which policy
//! permits a principal on a target account (the same evaluation as a connection attempt,
//! PRODUCT.md §4), a principal's own concurrency limit, and the structured error of a full scope.

use wg_domain::ErrorCode;
use wg_domain::resources::{Kind, Limits, Resource, Target};
use wg_store::SlotsFull;

use super::*;
use crate::ControlError;

impl ControlPlane {
    /// The groups of the user or service principal `name`; `None` when there is no such
    /// principal.
    ///
    /// # Errors
    /// Store failures.
    pub(super) async fn principal_groups(
        &self,
        name: &str,
    ) -> Result<Option<Vec<String>>, ControlError> {
        let store = &self.inner.store;
        if let Some(Resource::User(u)) = store.get_resource(Kind::User, name).await? {
            return Ok(Some(u.groups));
        }
        if let Some(Resource::ServicePrincipal(s)) =
            store.get_resource(Kind::ServicePrincipal, name).await?
        {
            return Ok(Some(s.groups));
        }
        Ok(None)
    }

    /// The policy that permits `name` (with `groups`) to reach `account` on `target` over
    /// `protocol`, by [`policy::evaluate`] over every policy — exactly as a connection attempt is
    /// decided, MFA and approval requirements included (they deny, fail closed).
    ///
    /// # Errors
    /// `policy_denied` saying what did not match (with the target), store failures.
    pub(super) async fn permitting_policy(
        &self,
        name: &str,
        groups: &[String],
        target: &Target,
        protocol: Protocol,
        account: Option<&str>,
    ) -> Result<policy::Admission, ControlError> {
        let policies: Vec<_> = self
            .inner
            .store
            .list_resources(Kind::Policy)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Resource::Policy(p) => Some(p),
                _ => None,
            })
            .collect();
        policy::evaluate(
            AccessRequest {
                subject: Subject { name, groups },
                target,
                protocol,
                account,
            },
            &policies,
        )
        .map_err(|d| {
            let mut e = ControlError::new(ErrorCode::PolicyDenied, d.to_string());
            e.0.target = Some(target.name.clone());
            e
        })
    }

    /// The actor-scope concurrency limit of `actor`: its own `maxSessionsPerUser` over the
    /// `limits` resource's default; `None` when neither is set.
    ///
    /// # Errors
    /// Store failures.
    pub(super) async fn actor_session_limit(
        &self,
        actor: &str,
    ) -> Result<Option<u32>, ControlError> {
        let store = &self.inner.store;
        let own = match store.get_resource(Kind::User, actor).await? {
            Some(Resource::User(u)) => u.max_sessions_per_user,
            _ => match store.get_resource(Kind::ServicePrincipal, actor).await? {
                Some(Resource::ServicePrincipal(s)) => s.max_sessions_per_user,
                _ => None,
            },
        };
        if own.is_some() {
            return Ok(own);
        }
        Ok(match store.get_resource(Kind::Limits, "default").await? {
            Some(Resource::Limits(Limits {
                max_sessions_per_user,
                ..
            })) => max_sessions_per_user,
            _ => None,
        })
    }
}

/// The structured refusal of a full scope, e.g.
/// `{"error":"concurrency_limit","scope":"actor","limit":3,"target":"web-01.prod"}`.
pub(super) fn concurrency_error(full: &SlotsFull, target: &str) -> ControlError {
    let what = match full.scope.as_str() {
        "actor" => format!(
            "{} already has {} live sessions (maxSessionsPerUser)",
            full.key, full.limit
        ),
        "target" => format!(
            "target at capacity: {} has {} live sessions (maxSessionsPerTarget)",
            full.key, full.limit
        ),
        "policy" => format!(
            "policy {} admits {} live sessions at once (concurrency.max)",
            full.key, full.limit
        ),
        _ => format!(
            "gateway {} is at capacity: {} live sessions (gateway.maxActive)",
            full.key, full.limit
        ),
    };
    let mut e = ControlError::new(ErrorCode::ConcurrencyLimit, what);
    e.0.scope = Some(full.scope.clone());
    e.0.limit = Some(full.limit);
    e.0.target = Some(target.to_owned());
    e
}
