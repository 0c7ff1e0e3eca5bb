//! Policy evaluation (PRODUCT.md §4): which policy admits an actor to a target account, and how.
//!
//! Pure function of the resources: [`evaluate`] never looks at live sessions. Concurrency limits
//! are counted by the control plane after a policy admits the attempt.

use std::time::Duration;

use crate::resources::{
    MfaRequirement, Policy, Protocol, Reconnect, RecordingMode, ShadowMode, Target,
};

/// The actor being evaluated: a user or service principal and its groups.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The actor's name.
    pub name: &'a str,
    /// The actor's groups.
    pub groups: &'a [String],
}

/// What the actor asks for.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    /// Who.
    pub subject: Subject<'a>,
    /// The target resource.
    pub target: &'a Target,
    /// The protocol the client speaks.
    pub protocol: Protocol,
    /// The account named in the login, if any.
    pub account: Option<&'a str>,
}

/// A positive decision: the policy that admitted the attempt and what it imposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Name of the admitting policy.
    pub policy: String,
    /// The account to inject.
    pub account: String,
    /// Its vault path.
    pub credential: String,
    /// Recording mode.
    pub recording: RecordingMode,
    /// Shadow mode.
    pub shadow: ShadowMode,
    /// Reconnect behaviour.
    pub reconnect: Reconnect,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Idle grace.
    pub idle_grace: Duration,
    /// Policy-scope concurrency limit.
    pub concurrency_max: Option<u32>,
    /// Local port forwards allowed (`HOST:PORT` rules).
    pub forward_local: Vec<String>,
}

/// Why an attempt is denied by policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No policy names this actor for this target and protocol.
    #[error("no policy allows {actor} to reach {target} over {protocol}")]
    NoMatchingPolicy {
        /// Actor name.
        actor: String,
        /// Target name.
        target: String,
        /// Protocol name.
        protocol: &'static str,
    },
    /// The target does not speak the client's protocol.
    #[error("target {target} speaks {target_protocol}, not {protocol}")]
    ProtocolMismatch {
        /// Target name.
        target: String,
        /// What the target speaks.
        target_protocol: &'static str,
        /// What the client asked for.
        protocol: &'static str,
    },
    /// The named account does not exist on the target.
    #[error("target {target} has no account {account}")]
    UnknownAccount {
        /// Target name.
        target: String,
        /// Account asked for.
        account: String,
    },
    /// The account exists but no matching policy permits it.
    #[error("no policy allows {actor} to use account {account} on {target}")]
    AccountNotPermitted {
        /// Actor.
        actor: String,
        /// Target.
        target: String,
        /// Account.
        account: String,
    },
    /// Several accounts are permitted and the login named none.
    #[error(
        "several accounts are permitted on {target} ({choices}); name one as ACTOR:TARGET:ACCOUNT"
    )]
    AmbiguousAccount {
        /// Target.
        target: String,
        /// Comma-separated account names.
        choices: String,
    },
    /// The target has no accounts at all.
    #[error("target {target} has no accounts configured")]
    NoAccounts {
        /// Target.
        target: String,
    },
    /// The admitting policy requires a step this gateway cannot perform yet (fail closed).
    #[error("policy {policy} requires {step}, which is not available on this gateway yet")]
    StepUnavailable {
        /// Policy name.
        policy: String,
        /// `MFA` or `approval`.
        step: &'static str,
    },
}

fn subject_matches(policy: &Policy, subject: Subject<'_>) -> bool {
    policy.subjects.iter().any(|s| match s.split_once(':') {
        Some(("user", name)) => name == subject.name,
        Some(("group", g)) => subject.groups.iter().any(|x| x == g),
        _ => false,
    })
}

/// Whether a policy's target selector covers `target`: by name, or by all of its tags.
pub fn target_matches(policy: &Policy, target: &Target) -> bool {
    let sel = &policy.targets;
    let by_name = sel.names.iter().any(|n| n == &target.name);
    let by_tags = !sel.tags.is_empty()
        && sel
            .tags
            .iter()
            .all(|(k, v)| target.tags.get(k).is_some_and(|tv| tv == v));
    by_name || by_tags
}

fn protocol_matches(policy: &Policy, protocol: Protocol) -> bool {
    policy.protocols.is_empty() || policy.protocols.contains(&protocol)
}

fn account_permitted(policy: &Policy, account: &str) -> bool {
    policy.accounts.is_empty() || policy.accounts.iter().any(|a| a == account)
}

/// Decides an access request against `policies`.
///
/// Policies are considered in name order so that the decision is deterministic. The first policy
/// that matches subject, target, protocol and account admits the attempt; if it requires MFA or
/// approvals, which this build cannot perform, the attempt is denied (fail closed).
///
/// # Errors
/// A [`Denial`] that says precisely what did not match.
pub fn evaluate(req: AccessRequest<'_>, policies: &[Policy]) -> Result<Admission, Denial> {
    let target = req.target;
    if target.protocol != req.protocol {
        return Err(Denial::ProtocolMismatch {
            target: target.name.clone(),
            target_protocol: target.protocol.as_str(),
            protocol: req.protocol.as_str(),
        });
    }
    let mut matching: Vec<&Policy> = policies
        .iter()
        .filter(|p| {
            subject_matches(p, req.subject)
                && target_matches(p, target)
                && protocol_matches(p, req.protocol)
        })
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    if matching.is_empty() {
        return Err(Denial::NoMatchingPolicy {
            actor: req.subject.name.to_owned(),
            target: target.name.clone(),
            protocol: req.protocol.as_str(),
        });
    }
    if target.accounts.is_empty() {
        return Err(Denial::NoAccounts {
            target: target.name.clone(),
        });
    }
    let account = match req.account {
        Some(name) => {
            if !target.accounts.iter().any(|a| a.name == name) {
                return Err(Denial::UnknownAccount {
                    target: target.name.clone(),
                    account: name.to_owned(),
                });
            }
            name.to_owned()
        }
        None => {
            let permitted: Vec<&str> = target
                .accounts
                .iter()
                .filter(|a| matching.iter().any(|p| account_permitted(p, &a.name)))
                .map(|a| a.name.as_str())
                .collect();
            match permitted.as_slice() {
                [] => {
                    return Err(Denial::AccountNotPermitted {
                        actor: req.subject.name.to_owned(),
                        target: target.name.clone(),
                        account: "(any)".into(),
                    });
                }
                [one] => (*one).to_owned(),
                many => {
                    return Err(Denial::AmbiguousAccount {
                        target: target.name.clone(),
                        choices: many.join(", "),
                    });
                }
            }
        }
    };
    let Some(policy) = matching
        .into_iter()
        .find(|p| account_permitted(p, &account))
    else {
        return Err(Denial::AccountNotPermitted {
            actor: req.subject.name.to_owned(),
            target: target.name.clone(),
            account,
        });
    };
    if policy.mfa == MfaRequirement::Required {
        return Err(Denial::StepUnavailable {
            policy: policy.name.clone(),
            step: "MFA",
        });
    }
    if policy.approval.as_ref().is_some_and(|a| a.required > 0) {
        return Err(Denial::StepUnavailable {
            policy: policy.name.clone(),
            step: "approval",
        });
    }
    let credential = target
        .accounts
        .iter()
        .find(|a| a.name == account)
        .map(|a| a.credential.clone())
        .unwrap_or_default();
    Ok(Admission {
        policy: policy.name.clone(),
        account,
        credential,
        recording: policy.recording,
        shadow: policy.shadow,
        reconnect: policy.reconnect.clone(),
        idle_timeout: policy.idle.timeout,
        idle_grace: policy.idle.grace,
        concurrency_max: policy.concurrency.max,
        forward_local: policy.forwarding.local.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Resource, parse_documents};

    fn fixture() -> (Vec<Target>, Vec<Policy>) {
        let text = r#"
kind: target
name: dev1
address: 127.0.0.1:2201
protocol: ssh
tags: {env: dev}
accounts: [{name: deploy, credential: vault/ssh/deploy}, {name: root, credential: vault/ssh/root}]
---
kind: target
name: prod1
address: 127.0.0.1:2202
protocol: ssh
tags: {env: prod}
accounts: [{name: deploy, credential: vault/ssh/deploy}]
---
kind: policy
name: dev-ssh
subjects: [user:alice@corp, group:sre]
targets: {tags: {env: dev}}
protocols: [ssh]
accounts: [deploy]
recording: full
---
kind: policy
name: prod-mfa
subjects: [group:sre]
targets: {names: [prod1]}
mfa: required
"#;
        let mut targets = vec![];
        let mut policies = vec![];
        for r in parse_documents(text).unwrap() {
            match r {
                Resource::Target(t) => targets.push(t),
                Resource::Policy(p) => policies.push(p),
                _ => {}
            }
        }
        (targets, policies)
    }

    fn req<'a>(
        name: &'a str,
        groups: &'a [String],
        t: &'a Target,
        acct: Option<&'a str>,
    ) -> AccessRequest<'a> {
        AccessRequest {
            subject: Subject { name, groups },
            target: t,
            protocol: Protocol::Ssh,
            account: acct,
        }
    }

    #[test]
    fn admits_by_user_and_tag_and_picks_the_only_permitted_account() {
        let (t, p) = fixture();
        let a = evaluate(req("alice@corp", &[], &t[0], None), &p).unwrap();
        assert_eq!(a.policy, "dev-ssh");
        assert_eq!(a.account, "deploy");
        assert_eq!(a.credential, "vault/ssh/deploy");
    }

    #[test]
    fn forward_rules_match_host_and_port_with_wildcards() {
        use crate::resources::forward_rule_matches as m;
        assert!(m("127.0.0.1:5432", "127.0.0.1", 5432));
        assert!(!m("127.0.0.1:5432", "127.0.0.1", 5433));
        assert!(m("*:443", "example.internal", 443));
        assert!(m("db.internal:*", "DB.internal", 1));
        assert!(!m("db.internal:*", "other", 1));
        assert!(!m("garbage", "h", 1));
    }

    #[test]
    fn denials_say_what_did_not_match() {
        let (t, p) = fixture();
        let none: Vec<String> = vec![];
        assert!(matches!(
            evaluate(req("bob@corp", &none, &t[0], None), &p),
            Err(Denial::NoMatchingPolicy { .. })
        ));
        assert!(matches!(
            evaluate(req("alice@corp", &none, &t[0], Some("root")), &p),
            Err(Denial::AccountNotPermitted { .. })
        ));
        assert!(matches!(
            evaluate(req("alice@corp", &none, &t[0], Some("nobody")), &p),
            Err(Denial::UnknownAccount { .. })
        ));
        let sre = vec!["sre".to_owned()];
        assert!(matches!(
            evaluate(req("carol@corp", &sre, &t[1], None), &p),
            Err(Denial::StepUnavailable { step: "MFA", .. })
        ));
        let mut pg = req("alice@corp", &none, &t[0], None);
        pg.protocol = Protocol::Pg;
        assert!(matches!(
            evaluate(pg, &p),
            Err(Denial::ProtocolMismatch { .. })
        ));
    }
}
