//! The SSH login name `ACTOR:TARGET[:ACCOUNT]` (PRODUCT.md §5).

use std::fmt;

/// A parsed login name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginName {
    /// The actor, e.g. `alice@corp` or `svc_deploy`.
    pub actor: String,
    /// The target name, e.g. `web-01.prod`.
    pub target: String,
    /// The account on the target; `None` lets the policy pick the only permitted one.
    pub account: Option<String>,
}

/// A login name that is not `ACTOR:TARGET[:ACCOUNT]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "malformed login name {0:?}: expected ACTOR:TARGET[:ACCOUNT], e.g. alice@corp:web-01.prod:deploy"
)]
pub struct BadLoginName(pub String);

impl LoginName {
    /// Parses `ACTOR:TARGET[:ACCOUNT]`. Each part must be 1 to 253 bytes and free of whitespace
    /// and control characters.
    ///
    /// # Errors
    /// [`BadLoginName`] for any other shape.
    pub fn parse(text: &str) -> Result<Self, BadLoginName> {
        let bad = || BadLoginName(text.to_owned());
        let parts: Vec<&str> = text.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        if parts.iter().any(|p| {
            p.is_empty() || p.len() > 253 || p.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(bad());
        }
        Ok(LoginName {
            actor: parts[0].to_owned(),
            target: parts[1].to_owned(),
            account: parts.get(2).map(|s| (*s).to_owned()),
        })
    }
}

impl fmt::Display for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.target)?;
        if let Some(a) = &self.account {
            write!(f, ":{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let l = LoginName::parse("alice@corp:web-01.prod:deploy").unwrap();
        assert_eq!(l.actor, "alice@corp");
        assert_eq!(l.target, "web-01.prod");
        assert_eq!(l.account.as_deref(), Some("deploy"));
        let l = LoginName::parse("svc_deploy:demo").unwrap();
        assert_eq!(l.account, None);
        assert_eq!(l.to_string(), "svc_deploy:demo");
        let long = format!("a:{}", "t".repeat(254));
        for bad in [
            "alice",
            "alice:",
            ":demo",
            "a:b:c:d",
            "a b:c",
            "a::c",
            long.as_str(),
        ] {
            assert!(LoginName::parse(bad).is_err(), "{bad}");
        }
    }
}
