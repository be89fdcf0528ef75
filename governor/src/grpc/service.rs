//! The `huntgate.v1.Governor` service: reads from the published snapshot, mutations through
//! the serve loop (see the module docs of [`super`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::Tokens;
use super::pb;
use super::view;
use super::{Command, Commands};
use crate::api::AppState;
use crate::fleet::HuntView;
use crate::governor::Snapshot;
use crate::operator::{self, Actor, Mutation, OperatorError};

/// Updates a slow watcher may fall behind by before its stream waits (it then receives
/// the latest state, never a backlog).
const WATCH_BUFFER: usize = 4;

/// One listener's service.
#[derive(Clone)]
pub struct GovernorService {
    state: AppState,
    commands: Commands,
    /// `None`: mutations are refused (read-only listener, or no token file).
    tokens: Option<Arc<Tokens>>,
    /// Whether this listener takes mutations at all.
    writable: bool,
}

impl GovernorService {
    /// A service over the HTTP side's state, sending mutations to `commands`.
    pub fn new(
        state: AppState,
        commands: Commands,
        tokens: Option<Arc<Tokens>>,
        writable: bool,
    ) -> Self {
        Self {
            state,
            commands,
            tokens,
            writable,
        }
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        let snapshot = self.state.snapshots.borrow().clone();
        if snapshot.ready {
            Ok(snapshot)
        } else {
            Err(Status::unavailable("not ready: no evaluation has run yet"))
        }
    }

    /// The fleet allocation, or none when the coordination Redis does not answer (the
    /// hunts are still served, without their `fleet`).
    async fn fleets(&self) -> BTreeMap<String, HuntView> {
        crate::api::fleet_views(&self.state)
            .await
            .unwrap_or_default()
    }

    /// Authorizes, validates and applies one mutation request; the hunt's canonical id.
    /// Every outcome is counted in `/metrics`.
    async fn apply<R: MutationRequest>(&self, request: Request<R>) -> Result<String, Status> {
        let result = async {
            let by = self.authorize(&request)?;
            let request = request.into_inner();
            let hunt = canonical(request.hunt())?;
            let mutation = request.into_mutation(hunt.clone())?;
            self.mutate(by, mutation).await?;
            Ok(hunt)
        }
        .await;
        self.state
            .mutations
            .count(result.as_ref().map(|_| ()).map_err(Status::code));
        result
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        if !self.writable {
            return Err(Status::permission_denied(
                "this listener is read-only (--grpc-read-listen): mutate through --grpc-listen",
            ));
        }
        let Some(tokens) = &self.tokens else {
            return Err(Status::permission_denied(
                "mutations are disabled: the governor has no --grpc-token-file",
            ));
        };
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        tokens.check(header)
    }

    async fn mutate(&self, by: String, mutation: Mutation) -> Result<(), Status> {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            mutation,
            actor: Actor {
                by,
                replica: String::new(),
            },
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| Status::unavailable("the governor is shutting down"))?;
        match answer.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(status(&e)),
            Err(_) => Err(Status::unavailable("the governor is shutting down")),
        }
    }

    async fn one(&self, hunt: &str) -> Result<Response<pb::Hunt>, Status> {
        let snapshot = self.snapshot()?;
        let fleets = self.fleets().await;
        view::hunt(&snapshot, &fleets, hunt)
            .map(Response::new)
            .ok_or_else(|| status(&OperatorError::NotFound(hunt.to_owned())))
    }
}

/// The gRPC status of a refusal.
pub fn status(e: &OperatorError) -> Status {
    match e {
        OperatorError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        OperatorError::NotFound(_) => Status::not_found(e.to_string()),
        OperatorError::Full => Status::resource_exhausted(e.to_string()),
        OperatorError::Store(_) => Status::unavailable(e.to_string()),
    }
}

fn canonical(hunt: &str) -> Result<String, Status> {
    operator::hunt_id(hunt).map_err(|e| status(&e))
}

#[tonic::async_trait]
impl pb::governor_server::Governor for GovernorService {
    async fn get_hunt(
        &self,
        request: Request<pb::GetHuntRequest>,
    ) -> Result<Response<pb::Hunt>, Status> {
        let hunt = canonical(&request.get_ref().hunt)?;
        self.one(&hunt).await
    }

    async fn list_hunts(
        &self,
        _: Request<pb::ListHuntsRequest>,
    ) -> Result<Response<pb::ListHuntsResponse>, Status> {
        let snapshot = self.snapshot()?;
        let fleets = self.fleets().await;
        Ok(Response::new(pb::ListHuntsResponse {
            version: snapshot.document.version,
            default_ratio: snapshot.document.default_ratio,
            hunts: view::hunts(&snapshot, &fleets, &[]),
        }))
    }

    type WatchHuntsStream = ReceiverStream<Result<pb::HuntsUpdate, Status>>;

    async fn watch_hunts(
        &self,
        request: Request<pb::WatchHuntsRequest>,
    ) -> Result<Response<Self::WatchHuntsStream>, Status> {
        let request = request.into_inner();
        let only = request
            .hunts
            .iter()
            .map(|h| canonical(h))
            .collect::<Result<Vec<_>, _>>()?;
        if only.len() > crate::policy::MAX_HUNTS {
            return Err(Status::invalid_argument(format!(
                "hunts: at most {} hunts",
                crate::policy::MAX_HUNTS
            )));
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let service = self.clone();
        let mut snapshots = self.state.snapshots.clone();
        let mut shutdown = self.state.shutdown.clone();
        let mut seen = request.since_version;
        tokio::spawn(async move {
            loop {
                let snapshot = snapshots.borrow_and_update().clone();
                if snapshot.ready && snapshot.document.version != seen {
                    seen = snapshot.document.version;
                    let fleets = service.fleets().await;
                    let update = pb::HuntsUpdate {
                        version: seen,
                        default_ratio: snapshot.document.default_ratio,
                        hunts: view::hunts(&snapshot, &fleets, &only),
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { return },
                    _ = wait_true(&mut shutdown) => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn set_override(
        &self,
        request: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::Hunt>, Status> {
        let hunt = self.apply(request).await?;
        self.one(&hunt).await
    }

    async fn clear_override(
        &self,
        request: Request<pb::ClearOverrideRequest>,
    ) -> Result<Response<pb::Hunt>, Status> {
        let hunt = self.apply(request).await?;
        match self.one(&hunt).await {
            Err(e) if e.code() == tonic::Code::NotFound => {
                let snapshot = self.snapshot()?;
                Ok(Response::new(view::unlisted(&snapshot, &hunt)))
            }
            other => other,
        }
    }

    async fn start_hunt(
        &self,
        request: Request<pb::StartHuntRequest>,
    ) -> Result<Response<pb::Hunt>, Status> {
        let hunt = self.apply(request).await?;
        self.one(&hunt).await
    }

    async fn end_hunt(
        &self,
        request: Request<pb::EndHuntRequest>,
    ) -> Result<Response<pb::EndHuntResponse>, Status> {
        let hunt = self.apply(request).await?;
        let snapshot = self.state.snapshots.borrow().clone();
        Ok(Response::new(pb::EndHuntResponse {
            policy_file: snapshot.files.hunts.contains_key(&hunt),
            hunt,
        }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let only = if r.hunt.is_empty() {
            None
        } else {
            Some(canonical(&r.hunt)?)
        };
        let snapshot = self.state.snapshots.borrow().clone();
        let limit = if r.limit == 0 {
            usize::MAX
        } else {
            r.limit as usize
        };
        let entries = snapshot
            .operator
            .audit
            .iter()
            .rev()
            .filter(|e| only.as_ref().is_none_or(|h| &e.hunt == h))
            .take(limit)
            .map(view::audit)
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A mutation's request message.
trait MutationRequest: Send + 'static {
    /// The hunt id as given.
    fn hunt(&self) -> &str;
    /// The mutation, for the canonical `hunt`.
    fn into_mutation(self, hunt: String) -> Result<Mutation, Status>;
}

impl MutationRequest for pb::SetOverrideRequest {
    fn hunt(&self) -> &str {
        &self.hunt
    }
    fn into_mutation(self, hunt: String) -> Result<Mutation, Status> {
        Ok(Mutation::SetOverride {
            hunt,
            max_hunters: self.max_hunters,
            min_hunters: self.min_hunters,
            pin_ratio: self.pin_ratio,
            mode: view::mode_of(self.mode).map_err(|e| status(&e))?,
            reason: self.reason,
            ttl_s: self.ttl_s,
        })
    }
}

impl MutationRequest for pb::ClearOverrideRequest {
    fn hunt(&self) -> &str {
        &self.hunt
    }
    fn into_mutation(self, hunt: String) -> Result<Mutation, Status> {
        Ok(Mutation::ClearOverride {
            hunt,
            reason: self.reason,
        })
    }
}

impl MutationRequest for pb::StartHuntRequest {
    fn hunt(&self) -> &str {
        &self.hunt
    }
    fn into_mutation(self, hunt: String) -> Result<Mutation, Status> {
        Ok(Mutation::StartHunt {
            hunt,
            max_hunters: self.max_hunters,
            min_hunters: self.min_hunters,
            reason: self.reason,
        })
    }
}

impl MutationRequest for pb::EndHuntRequest {
    fn hunt(&self) -> &str {
        &self.hunt
    }
    fn into_mutation(self, hunt: String) -> Result<Mutation, Status> {
        Ok(Mutation::EndHunt {
            hunt,
            reason: self.reason,
        })
    }
}
