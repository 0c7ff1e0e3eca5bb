//! Wardengate domain model.
//!
//! This crate holds the vocabulary of the product and every rule that can be decided without I/O:
//! identifiers ([`SessionId`]), the session lifecycle state machine ([`lifecycle`]), the resource
//! model applied with `wgctl apply` ([`resources`]), policy evaluation ([`policy`]), ownership
//! handoff ([`handoff`]), the audit hash chain ([`audit`]) and the JSON shapes of the REST API
//! ([`api`]).
//!
//! It never touches the network, the disk or a clock it was not handed: callers pass times in.

pub mod api;
pub mod audit;
pub mod error;
pub mod handoff;
pub mod ids;
pub mod lifecycle;
pub mod login;
pub mod policy;
pub mod resources;
pub mod time;

pub use error::{ErrorBody, ErrorCode};
pub use ids::SessionId;
pub use lifecycle::{EndReason, SessionState};
