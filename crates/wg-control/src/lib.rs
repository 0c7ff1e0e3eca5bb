//! The Wardengate control plane.
//!
//! Owns every decision and every record: access decisions ([`ControlPlane::request_session`]),
//! the session registry and its lifecycle, the audit log, the vault, the recording index, the REST
//! API ([`api::router`]) and the gateway-facing gRPC service ([`grpc::GatewayService`]).
//!
//! It never relays traffic and never holds a live connection to a target: gateways do. It talks to
//! gateways only through the `wardengate.v1` protocol (crate `wg-proto`).

pub mod api;
#[cfg(test)]
mod auth_tests;
pub mod ca;
mod error;
pub mod gateways;
pub mod grpc;
#[cfg(test)]
mod handoff_tests;
#[cfg(test)]
mod journal_tests;
mod service;
#[cfg(test)]
mod terminate_tests;
#[cfg(test)]
mod test_rig;
pub mod tls;
pub mod vault;
mod views;

pub use error::ControlError;
pub use service::{
    BOOTSTRAP_ADMIN, ControlConfig, ControlPlane, DEFAULT_LEASE, JoinedGateway, JournalAck,
    JournalEvent, ProgressItem, Report, SessionOwner, SessionQuery,
};
