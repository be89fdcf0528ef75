//! The gRPC API (`governor/proto/huntgate/v1/governor.proto`): reads of every hunt's limit
//! and why, a watch stream, and the mutations of the operator state (overrides, started and
//! ended hunts), plus the standard health service and server reflection.
//!
//! The service never touches the governor itself: a mutation is checked for a token
//! ([`auth`]), then sent as a [`Command`] to the serve loop, which applies it through the
//! operator store, puts it in force and re-evaluates before answering. Reads come from the
//! published [`crate::governor::Snapshot`] ([`view`]).

pub mod auth;
pub mod service;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::operator::{Actor, Mutation, OperatorError, OperatorState};

/// The generated messages, server and client of `huntgate.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod pb {
    tonic::include_proto!("huntgate.v1");

    /// The encoded descriptor set of the `.proto`, for server reflection.
    pub const DESCRIPTOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/governor_descriptor.bin"));
}

/// Outcomes of the mutations this replica was asked for (`/metrics`).
#[derive(Debug, Default)]
pub struct MutationStats {
    /// Applied and stored.
    pub applied: AtomicU64,
    /// Refused for their input (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED).
    pub refused: AtomicU64,
    /// The store failed (UNAVAILABLE).
    pub failed: AtomicU64,
    /// No, a wrong or an unusable token, or a read-only listener.
    pub denied: AtomicU64,
}

impl MutationStats {
    /// Counts one outcome.
    pub fn count(&self, outcome: Result<(), tonic::Code>) {
        let counter = match outcome {
            Ok(()) => &self.applied,
            Err(tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => &self.denied,
            Err(tonic::Code::Unavailable) => &self.failed,
            Err(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends `huntgate_operator_mutations_total`.
    pub fn render(&self, out: &mut String) {
        let name = crate::metrics::OPERATOR_MUTATIONS;
        let mut o = crate::metrics::Out(std::mem::take(out));
        o.family(
            name,
            "counter",
            "Mutations asked of the gRPC API, by outcome.",
        );
        for (result, n) in [
            ("applied", &self.applied),
            ("refused", &self.refused),
            ("failed", &self.failed),
            ("denied", &self.denied),
        ] {
            o.sample(
                name,
                &[("result", result)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        *out = o.0;
    }
}

/// Queued mutations the serve loop has not taken yet (more wait for room).
pub const COMMAND_QUEUE: usize = 64;

/// One mutation on its way to the serve loop, with where the answer goes.
pub struct Command {
    /// What to change.
    pub mutation: Mutation,
    /// Who asks.
    pub actor: Actor,
    /// The new state in force, or why not.
    pub reply: oneshot::Sender<Result<OperatorState, OperatorError>>,
}

/// The sending end the service holds.
pub type Commands = mpsc::Sender<Command>;

/// The gRPC listeners.
#[derive(Debug, Clone, Default)]
pub struct GrpcConfig {
    /// Every method (`--grpc-listen`); mutations need a token.
    pub listen: Option<SocketAddr>,
    /// Read methods only (`--grpc-read-listen`).
    pub read_listen: Option<SocketAddr>,
    /// The bearer tokens (`--grpc-token-file`); none: mutations are refused.
    pub token_file: Option<PathBuf>,
}
