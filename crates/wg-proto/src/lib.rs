//! The gateway <-> control plane gRPC protocol, package `wardengate.v1`
//! (see `proto/wardengate.proto` for the message-level documentation).

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Generated messages, client and server for `wardengate.v1`.
pub mod v1 {
    tonic::include_proto!("wardengate.v1");
}
