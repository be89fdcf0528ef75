//! The running service: the evaluation and reload loop plus the HTTP server, until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use tokio::net::TcpListener;

use crate::api::{app, AppState};
use crate::clock::{Clock, Millis};
use crate::governor::Governor;
use crate::grpc::{Command, GrpcConfig};
use crate::listener::{ConnMeta, Gate, GuardedListener, Limits};
use crate::operator::store::OperatorStore;
use crate::operator::{Actor, Mutation};
use crate::persist::StateStore;
use crate::policy::watch::PolicyWatcher;
use crate::policy::{Overrides, PolicyError};
use crate::sources::SourceFactory;

/// How often the policy directory is re-read even without a change notification.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);
/// After a change notification, how long to wait for the rest of a burst of events (a
/// ConfigMap update renames several entries) before reading the directory once.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(20);

/// What `serve` needs.
pub struct ServeConfig {
    /// The policy directory.
    pub policies: PathBuf,
    /// Endpoint overrides.
    pub overrides: Overrides,
    /// Where to listen.
    pub listen: SocketAddr,
    /// A second listener that serves only `/healthz`, `/readyz` and `/metrics` (for probes
    /// and scrapes that must keep working whatever the API port suffers).
    pub probe_listen: Option<SocketAddr>,
    /// Connection limits and timeouts of the API listener.
    pub limits: Limits,
    /// How long a shutdown waits for in-flight requests before closing every connection.
    pub drain: Duration,
    /// Where the control state is saved and resumed from (none: memory only).
    pub state: Option<Arc<dyn StateStore>>,
    /// The coordination Redis holding the lease allocation shared with other replicas
    /// (none: this replica's memory; run one replica then).
    pub coordination: Option<Arc<crate::coordination::Coordination>>,
    /// How often the policy directory is re-read without a change notification
    /// ([`RELOAD_POLL`]; changes are normally read as soon as they are notified). A
    /// shared operator store is re-read as often.
    pub rescan: Duration,
    /// The gRPC listeners (none set: no gRPC API).
    pub grpc: GrpcConfig,
    /// Where overrides, started and ended hunts are kept.
    pub operator: OperatorStore,
    /// This replica's name (in audit entries).
    pub replica: String,
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy could not be loaded at start-up (there is no last good one to keep).
    #[error("initial policy: {0}")]
    Policy(#[from] PolicyError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag it came from.
        flag: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC token file could not be used at start-up.
    #[error("--grpc-token-file: {0}")]
    Tokens(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
}

/// Resolves once `rx` holds `true` (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, flag, source })
}

fn resume(governor: &mut Governor, store: &dyn StateStore, now: Millis) {
    match store.load() {
        Ok(Some(saved)) => {
            let resumed = governor.restore(&saved, now);
            tracing::info!(
                state = %store.describe(),
                hunts = resumed,
                age_s = now.saturating_sub(saved.saved_at_ms) / 1000,
                "resumed the saved control state"
            );
        }
        Ok(None) => {
            tracing::info!(state = %store.describe(), "no saved control state yet: every hunt starts at ratio 1.0");
        }
        Err(e) => {
            tracing::warn!(error = %e, "saved control state ignored: every hunt starts at ratio 1.0");
        }
    }
}

/// Saves the state if it changed. A failing store is logged when it starts failing and
/// when it works again (not at every evaluation); failures are counted in
/// `huntgate_state_saves_total{result="failure"}` and retried at the next evaluation.
fn save(governor: &mut Governor, store: Option<&dyn StateStore>, now: Millis, failing: &mut bool) {
    let Some(store) = store else { return };
    let Some(state) = governor.unsaved(now) else {
        return;
    };
    match store.save(&state) {
        Ok(()) => {
            governor.record_save(true);
            if std::mem::take(failing) {
                tracing::info!(state = %store.describe(), "control state saved again");
            }
        }
        Err(e) => {
            governor.record_save(false);
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, "cannot save the control state (retried at every evaluation; logged again once it works)");
            }
        }
    }
}

fn spawn_http(
    listener: TcpListener,
    gate: Gate,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let listener = GuardedListener::new(listener, gate);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<ConnMeta>(),
        )
        .with_graceful_shutdown(async move { stopped(&mut shutdown).await })
        .await
    })
}

/// Waits for `server` to finish its graceful shutdown for at most `drain`, then kills every
/// connection still open (a client that sent half a request, a response nobody reads).
async fn drain(
    server: &mut tokio::task::JoinHandle<std::io::Result<()>>,
    gate: &Gate,
    drain: Duration,
) -> Result<(), ServeError> {
    let finished = match tokio::time::timeout(drain, &mut *server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                open = gate.open(),
                drain_ms = drain.as_millis() as u64,
                "drain deadline passed: closing the remaining connections"
            );
            gate.kill();
            match tokio::time::timeout(KILL_GRACE, &mut *server).await {
                Ok(r) => r,
                Err(_) => {
                    server.abort();
                    return Ok(());
                }
            }
        }
    };
    match finished {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServeError::Http(e)),
        Err(e) => Err(ServeError::Http(std::io::Error::other(e))),
    }
}

/// Loads the stored operator state into `governor` (a failure is logged; a shared store is
/// tried again at every rescan).
async fn load_operator(governor: &mut Governor, store: &OperatorStore, now: Millis) {
    match store.load().await {
        Ok(Some(state)) if state.revision != governor.operator().revision => {
            tracing::info!(store = %store.describe(), revision = state.revision, hunts = state.hunts.len(), "operator state loaded");
            governor.set_operator(state, now);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(store = %store.describe(), error = %e, "cannot read the operator state (overrides); tried again at the next rescan")
        }
    }
}

/// Applies one mutation through the store, puts the result in force and evaluates at once
/// (the document carries it before the caller hears back).
async fn apply_command(
    governor: &mut Governor,
    store: &OperatorStore,
    command: Command,
    replica: &str,
    now: Millis,
) {
    let actor = Actor {
        replica: replica.to_owned(),
        ..command.actor
    };
    let result = store
        .mutate(
            governor.operator(),
            &command.mutation,
            &actor,
            governor.file_policy(),
            now,
        )
        .await;
    if let Ok(state) = &result {
        governor.set_operator(state.clone(), now);
        governor.evaluate_with(Vec::new(), now);
    }
    let _ = command.reply.send(result);
}

/// Binds and spawns the gRPC listeners of `config`.
async fn spawn_grpc(
    config: &GrpcConfig,
    state: &AppState,
    commands: &crate::grpc::Commands,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
    use crate::grpc::pb::governor_server::GovernorServer;
    use crate::grpc::service::GovernorService;
    let tokens = match &config.token_file {
        Some(path) => Some(Arc::new(
            crate::grpc::auth::Tokens::load(path).map_err(ServeError::Tokens)?,
        )),
        None => None,
    };
    let mut handles = Vec::new();
    let listeners = [
        (config.listen, "--grpc-listen", true),
        (config.read_listen, "--grpc-read-listen", false),
    ];
    for (addr, flag, writable) in listeners {
        let Some(addr) = addr else { continue };
        let listener = bind(addr, flag).await?;
        let local = listener.local_addr().map_err(ServeError::Http)?;
        let service =
            GovernorService::new(state.clone(), commands.clone(), tokens.clone(), writable);
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<GovernorServer<GovernorService>>()
            .await;
        // Both versions of reflection: grpcurl and most tools still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::grpc::pb::DESCRIPTOR)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
        let mut stop = shutdown.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tracing::info!(%local, writable, mutations = tokens.is_some() && writable, "gRPC API listening");
        handles.push(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(GRPC_MAX_STREAMS))
                .add_service(health)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(GovernorServer::new(service))
                .serve_with_incoming_shutdown(incoming, async move { stopped(&mut stop).await })
                .await;
            if let Err(e) = served {
                tracing::error!(%local, error = %e, "gRPC listener failed");
            }
        }));
    }
    Ok(handles)
}

/// Concurrent calls (streams included) per gRPC connection.
pub const GRPC_MAX_STREAMS: u32 = 64;

/// After the kill switch, how long connections get to notice before the server is dropped.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` becomes true: loads the policy, resumes the saved state, serves
/// HTTP, evaluates every `eval_period_s`, re-reads the policies every second, saves the
/// state after every evaluation that changed it. Calls `on_listening` with the bound API
/// address (port 0 picks a free one). After `shutdown`, in-flight requests get
/// `config.drain`; then every connection is closed.
pub async fn serve(
    config: ServeConfig,
    clock: Arc<dyn Clock>,
    factory: Arc<dyn SourceFactory>,
    shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(SocketAddr) + Send,
) -> Result<(), ServeError> {
    let mut watcher = PolicyWatcher::new(config.policies.clone(), config.overrides.clone());
    let policy = match watcher.poll() {
        Some(result) => result?,
        None => crate::policy::compile::load_dir(&config.policies, &config.overrides)?,
    };
    let now = clock.now_ms();
    let mut governor = Governor::new(policy, factory, now, now);
    governor.set_ignored_files(watcher.ignored_files());
    let operator = config.operator.clone();
    match &operator {
        OperatorStore::Memory => tracing::info!("operator overrides kept in memory only: a restart forgets them (set --state-dir or --coordination)"),
        other => load_operator(&mut governor, other, now).await,
    }
    let store = config.state.clone();
    if let Some(store) = &store {
        resume(&mut governor, store.as_ref(), now);
    }
    let gate = Gate::new(config.limits);
    // Both listeners report the API listener's connection counters.
    let mut state =
        AppState::new(governor.subscribe(), shutdown.clone()).with_conns(Arc::clone(&gate.stats));
    if let Some(coordination) = &config.coordination {
        tracing::info!(
            replica = coordination.replica(),
            "lease allocation kept in the coordination Redis"
        );
        state = state.with_coordination(Arc::clone(coordination));
    }
    let listener = bind(config.listen, "--listen").await?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    let probe_listener = match config.probe_listen {
        Some(addr) => Some(bind(addr, "--probe-listen").await?),
        None => None,
    };
    let (command_tx, mut commands) = tokio::sync::mpsc::channel(crate::grpc::COMMAND_QUEUE);
    let grpc = spawn_grpc(&config.grpc, &state, &command_tx, &shutdown).await?;
    drop(command_tx);
    let mut server = spawn_http(listener, gate.clone(), state.clone(), shutdown.clone());
    let probe = probe_listener.map(|l| {
        let probe_gate = Gate::new(Limits {
            max_connections: 0,
            probe_timeout: config.limits.header_timeout,
            ..config.limits
        });
        let probe_local = l.local_addr().ok();
        tracing::info!(probe = ?probe_local, "probe listener (/healthz, /readyz, /metrics)");
        let handle = spawn_http(l, probe_gate.clone(), state.clone(), shutdown.clone());
        (handle, probe_gate)
    });
    tracing::info!(%local, policies = %config.policies.display(), max_connections = config.limits.max_connections, "huntgate-governor listening");
    on_listening(local);

    let mut save_failing = false;
    let mut stop = shutdown;
    let mut stop_mid_eval = stop.clone();
    let mut period = governor.policy().eval_period_ms;
    let mut eval = tokio::time::interval(Duration::from_millis(period));
    eval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut events = match crate::policy::events::DirEvents::watch(&config.policies) {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::warn!(error = %e, every_ms = config.rescan.as_millis() as u64, "cannot watch the policy directory: edits are read at the next rescan");
            None
        }
    };
    let mut reload = tokio::time::interval(config.rescan);
    reload.set_missed_tick_behavior(MissedTickBehavior::Delay);
    reload.tick().await; // the first tick is immediate and the policy is already loaded
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(command) = commands.recv() => {
                apply_command(&mut governor, &operator, command, &config.replica, clock.now_ms()).await;
                save(&mut governor, store.as_deref(), clock.now_ms(), &mut save_failing);
            }
            _ = crate::policy::events::DirEvents::changed(&mut events) => {
                tokio::time::sleep(RELOAD_DEBOUNCE).await;
                crate::policy::events::DirEvents::clear(&mut events);
                reload.reset_immediately();
            }
            _ = eval.tick() => {
                // A shutdown does not wait for slow reads (they are cancelled).
                tokio::select! {
                    _ = governor.evaluate(clock.now_ms()) => {}
                    _ = stopped(&mut stop_mid_eval) => break,
                }
                save(&mut governor, store.as_deref(), clock.now_ms(), &mut save_failing);
            }
            _ = reload.tick() => {
                if operator.shared() {
                    let before = governor.operator().revision;
                    load_operator(&mut governor, &operator, clock.now_ms()).await;
                    if governor.operator().revision != before {
                        governor.evaluate_with(Vec::new(), clock.now_ms());
                    }
                }
                if crate::operator::has_expired(governor.operator(), clock.now_ms()) {
                    let (reply, _) = tokio::sync::oneshot::channel();
                    let actor = Actor { by: "governor".to_owned(), replica: String::new() };
                    let command = Command { mutation: Mutation::Expire, actor, reply };
                    apply_command(&mut governor, &operator, command, &config.replica, clock.now_ms()).await;
                }
                let polled = watcher.poll();
                governor.set_ignored_files(watcher.ignored_files());
                if let Some(result) = polled {
                    let ok = result.is_ok();
                    governor.apply_reload(result, clock.now_ms());
                    if ok {
                        governor.evaluate(clock.now_ms()).await;
                        save(&mut governor, store.as_deref(), clock.now_ms(), &mut save_failing);
                        // The grid continues from this evaluation, so steps stay exactly
                        // one interval apart (see law::due).
                        if governor.policy().eval_period_ms != period {
                            period = governor.policy().eval_period_ms;
                            eval = tokio::time::interval(Duration::from_millis(period));
                            eval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        }
                        eval.reset();
                    }
                }
            }
        }
    }
    tracing::info!(
        open_connections = gate.open(),
        drain_ms = config.drain.as_millis() as u64,
        "shutting down"
    );
    save(
        &mut governor,
        store.as_deref(),
        clock.now_ms(),
        &mut save_failing,
    );
    let api = drain(&mut server, &gate, config.drain).await;
    for mut handle in grpc {
        if tokio::time::timeout(config.drain, &mut handle)
            .await
            .is_err()
        {
            handle.abort();
        }
    }
    if let Some((mut handle, probe_gate)) = probe {
        // The probe listener stopped accepting with the API one; its connections are short.
        let _ = drain(&mut handle, &probe_gate, Duration::ZERO).await;
    }
    api
}
