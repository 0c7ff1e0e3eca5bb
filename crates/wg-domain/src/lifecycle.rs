//! The session lifecycle (PRODUCT.md §3): the one place where state transitions are decided.
//!
//! ```text
//! requested → approved → opened → active ⇄ idle → closing → closed
//!                                    ↕      ↓
//!                                  detached ─┘
//! ```
//!
//! `detached` (seed, "Reconnect behavior"): the client leg dropped under a `resume` or `reauth`
//! policy; the target leg and PTY are kept for the reconnect grace. Re-attaching returns the
//! session to `active`; a `reauth` reconnect or the end of the grace closes it.
//!
//! Every component that changes a session's state calls [`SessionState::check_transition`]; the
//! store applies a transition only if the row is still in the state the caller saw (compare and
//! set), so an out-of-order report (e.g. "active" for a closed session) is rejected, never applied.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The state of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The client leg is authenticated; policy is being evaluated.
    Requested,
    /// Every policy condition holds; the account credential may be released.
    Approved,
    /// The target leg is established with the injected account.
    Opened,
    /// Traffic flows.
    Active,
    /// The idle warning fired and the grace window runs.
    Idle,
    /// The client leg dropped; the session waits for its owner to re-attach within the grace.
    Detached,
    /// Recording frames are being flushed and sealed; both legs are being severed.
    Closing,
    /// Final.
    Closed,
}

impl SessionState {
    /// Every state, in lifecycle order.
    pub const ALL: [SessionState; 8] = [
        SessionState::Requested,
        SessionState::Approved,
        SessionState::Opened,
        SessionState::Active,
        SessionState::Idle,
        SessionState::Detached,
        SessionState::Closing,
        SessionState::Closed,
    ];

    /// The lowercase name used in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Requested => "requested",
            SessionState::Approved => "approved",
            SessionState::Opened => "opened",
            SessionState::Active => "active",
            SessionState::Idle => "idle",
            SessionState::Detached => "detached",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
        }
    }

    /// Whether the session is over.
    pub fn is_closed(self) -> bool {
        self == SessionState::Closed
    }

    /// Whether a transition from `self` to `to` is legal.
    pub fn can_transition(self, to: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, to),
            (Requested, Approved)
                | (Requested, Closed)
                | (Approved, Opened)
                | (Approved, Closing)
                | (Approved, Closed)
                | (Opened, Active)
                | (Opened, Closing)
                | (Active, Idle)
                | (Active, Closing)
                | (Idle, Active)
                | (Idle, Closing)
                | (Active, Detached)
                | (Idle, Detached)
                | (Detached, Active)
                | (Detached, Closing)
                | (Closing, Closed)
        )
    }

    /// Checks a transition.
    ///
    /// # Errors
    /// [`IllegalTransition`] naming both states when the move is not part of the lifecycle.
    pub fn check_transition(self, to: SessionState) -> Result<(), IllegalTransition> {
        if self.can_transition(to) {
            Ok(())
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// The shortest legal path from `self` to `to`, excluding `self` and including `to`.
    ///
    /// Used when a gateway reports a later state than the control plane has seen (for example
    /// `closed` straight after `active` when the client vanished): the intermediate states are
    /// applied in order, each through [`SessionState::check_transition`]. Returns `None` when `to`
    /// cannot be reached.
    pub fn path_to(self, to: SessionState) -> Option<Vec<SessionState>> {
        // Breadth-first search over the (eight-node) lifecycle graph.
        const N: usize = SessionState::ALL.len();
        let mut prev: [Option<SessionState>; N] = [None; N];
        let mut seen = [false; N];
        let idx = |s: SessionState| s as usize;
        let mut queue = std::collections::VecDeque::from([self]);
        seen[idx(self)] = true;
        while let Some(s) = queue.pop_front() {
            if s == to && s != self {
                break;
            }
            for n in SessionState::ALL {
                if s.can_transition(n) && !seen[idx(n)] {
                    seen[idx(n)] = true;
                    prev[idx(n)] = Some(s);
                    queue.push_back(n);
                }
            }
        }
        if self == to || !seen[idx(to)] {
            return None;
        }
        let mut path = vec![to];
        let mut cur = to;
        while let Some(p) = prev[idx(cur)] {
            if p == self {
                break;
            }
            path.push(p);
            cur = p;
        }
        path.reverse();
        Some(path)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "session state",
                name: s.to_owned(),
            })
    }
}

/// An illegal lifecycle transition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("illegal session transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The state the session is in.
    pub from: SessionState,
    /// The state that was asked for.
    pub to: SessionState,
}

/// A name that does not denote a known value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    /// What kind of value was expected.
    pub what: &'static str,
    /// The text given.
    pub name: String,
}

/// Why a session ended; carried by the `closed` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client or the target ended the session normally.
    ClientExit,
    /// An operator terminated it (`wgctl session terminate`).
    Terminated,
    /// Idle timeout and grace elapsed.
    IdleTimeout,
    /// The owning gateway was declared lost.
    GatewayLost,
    /// The reconnect grace of a detached session expired.
    ReconnectExpired,
    /// A reauth reconnect opened a new session.
    Superseded,
    /// The access decision denied the attempt.
    Denied,
    /// The target leg could not be established (unreachable, host key mismatch, auth failure).
    TargetError,
    /// The gateway failed while running the session (e.g. recording could not be written).
    GatewayError,
}

impl EndReason {
    /// Whether the gateway ended a running session by its own decision (an operator's
    /// termination, an idle timeout, an expired reconnect grace, a reauth, a lost gateway, a
    /// gateway failure), as opposed to the client or the target ending it. Only such an end
    /// signals the target's processes (see the gateway's close sequence): a client that leaves
    /// leaves them as it would leave them on a direct connection.
    pub fn is_forced(self) -> bool {
        !matches!(
            self,
            EndReason::ClientExit | EndReason::Denied | EndReason::TargetError
        )
    }

    /// Every reason.
    pub const ALL: [EndReason; 9] = [
        EndReason::ClientExit,
        EndReason::Terminated,
        EndReason::IdleTimeout,
        EndReason::GatewayLost,
        EndReason::ReconnectExpired,
        EndReason::Superseded,
        EndReason::Denied,
        EndReason::TargetError,
        EndReason::GatewayError,
    ];

    /// The snake_case name used in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientExit => "client_exit",
            EndReason::Terminated => "terminated",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::GatewayLost => "gateway_lost",
            EndReason::ReconnectExpired => "reconnect_expired",
            EndReason::Superseded => "superseded",
            EndReason::Denied => "denied",
            EndReason::TargetError => "target_error",
            EndReason::GatewayError => "gateway_error",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndReason {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EndReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "end reason",
                name: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::*;

    #[test]
    fn closed_is_final() {
        for s in SessionState::ALL {
            assert!(!Closed.can_transition(s));
        }
    }

    #[test]
    fn every_state_can_reach_closed_and_only_closing_precedes_it_after_open() {
        for s in SessionState::ALL {
            if s != Closed {
                assert!(s.path_to(Closed).is_some(), "{s}");
            }
        }
        assert!(!Active.can_transition(Closed));
        assert_eq!(Active.path_to(Closed).unwrap(), vec![Closing, Closed]);
        assert_eq!(
            Requested.path_to(Active).unwrap(),
            vec![Approved, Opened, Active]
        );
        assert_eq!(Closed.path_to(Active), None);
        assert_eq!(Idle.path_to(Active).unwrap(), vec![Active]);
    }

    #[test]
    fn no_event_sequence_leaves_the_lifecycle() {
        // Exhaustive over all sequences of length 6: every accepted step is in the table,
        // and once closed nothing is accepted.
        fn walk(state: SessionState, depth: usize) {
            if depth == 0 {
                return;
            }
            for to in SessionState::ALL {
                match state.check_transition(to) {
                    Ok(()) => {
                        assert_ne!(state, Closed);
                        walk(to, depth - 1);
                    }
                    Err(e) => assert_eq!(e, IllegalTransition { from: state, to }),
                }
            }
        }
        walk(Requested, 6);
    }

    #[test]
    fn names_round_trip() {
        for s in SessionState::ALL {
            assert_eq!(s.as_str().parse::<SessionState>().unwrap(), s);
        }
        for r in EndReason::ALL {
            assert_eq!(r.as_str().parse::<EndReason>().unwrap(), r);
        }
        assert!("bogus".parse::<SessionState>().is_err());
    }

    #[test]
    fn only_the_gateways_own_decisions_are_forced_ends() {
        let forced: Vec<EndReason> = EndReason::ALL
            .into_iter()
            .filter(|r| r.is_forced())
            .collect();
        assert_eq!(
            forced,
            vec![
                EndReason::Terminated,
                EndReason::IdleTimeout,
                EndReason::GatewayLost,
                EndReason::ReconnectExpired,
                EndReason::Superseded,
                EndReason::GatewayError,
            ]
        );
    }
}
