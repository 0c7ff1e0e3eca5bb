//! Ownership handoff (seed, "Ownership and handoff"): a session's owner — or an operator — offers
//! the session to another principal, who must accept within a time window.
//!
//! The offer's lifecycle is `pending → accepted | expired | cancelled`: at most one offer per
//! session is pending at a time; an offer nobody accepted in time is `expired` (an accept after
//! the window is refused); closing the session `cancelled`s a pending offer.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::{SessionState, UnknownName};

/// How long the incoming owner has to accept when the request names no TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// The shortest TTL accepted.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest TTL accepted: an offer is a hand-over in progress, not a standing delegation.
pub const MAX_TTL: Duration = Duration::from_secs(60 * 60);

/// The session states in which a session can be handed off (and a handoff accepted): the
/// session is live, with or without a client leg attached.
pub const HANDOFF_STATES: [SessionState; 3] = [
    SessionState::Active,
    SessionState::Idle,
    SessionState::Detached,
];

/// Whether a session in `state` can be handed off.
pub fn can_hand_off(state: SessionState) -> bool {
    HANDOFF_STATES.contains(&state)
}

/// The state of one handoff offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandoffState {
    /// Offered; waiting for the incoming owner within the window.
    Pending,
    /// The incoming owner accepted: the owner changed.
    Accepted,
    /// Not accepted within the window.
    Expired,
    /// The session ended while the offer was pending.
    Cancelled,
}

impl HandoffState {
    /// Every state.
    pub const ALL: [HandoffState; 4] = [
        HandoffState::Pending,
        HandoffState::Accepted,
        HandoffState::Expired,
        HandoffState::Cancelled,
    ];

    /// The snake_case name used in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffState::Pending => "pending",
            HandoffState::Accepted => "accepted",
            HandoffState::Expired => "expired",
            HandoffState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for HandoffState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HandoffState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HandoffState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "handoff state",
                name: s.to_owned(),
            })
    }
}

/// A TTL outside [`MIN_TTL`]`..=`[`MAX_TTL`] or not in whole seconds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the handoff TTL must be whole seconds between 1s and 1h (e.g. 90s, 5m), not {0}")]
pub struct BadTtl(pub String);

/// Checks a requested TTL: whole seconds, at least [`MIN_TTL`], at most [`MAX_TTL`].
///
/// # Errors
/// [`BadTtl`] naming the value.
pub fn check_ttl(ttl: Duration) -> Result<Duration, BadTtl> {
    if ttl.subsec_nanos() != 0 || ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(BadTtl(crate::time::format_duration(ttl)));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in HandoffState::ALL {
            assert_eq!(s.as_str().parse::<HandoffState>(), Ok(s));
        }
        assert!("done".parse::<HandoffState>().is_err());
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(check_ttl(DEFAULT_TTL), Ok(DEFAULT_TTL));
        assert!(check_ttl(Duration::from_secs(90)).is_ok());
        assert!(check_ttl(MAX_TTL).is_ok());
        assert!(check_ttl(MIN_TTL).is_ok());
        assert!(check_ttl(Duration::ZERO).is_err());
        assert!(check_ttl(MAX_TTL + Duration::from_secs(1)).is_err());
        assert!(check_ttl(Duration::from_millis(1500)).is_err());
    }

    #[test]
    fn only_live_sessions_are_handed_off() {
        for s in SessionState::ALL {
            assert_eq!(
                can_hand_off(s),
                matches!(
                    s,
                    SessionState::Active | SessionState::Idle | SessionState::Detached
                ),
                "{s}"
            );
        }
    }
}
