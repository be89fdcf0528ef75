//! The running service: the evaluation and reload loop plus the HTTP server, until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::api::{app, AppState};
use crate::clock::Clock;
use crate::governor::Governor;
use crate::policy::watch::PolicyWatcher;
use crate::policy::{Overrides, PolicyError};
use crate::sources::SourceFactory;

/// How often the policy directory is re-read.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// What `serve` needs.
pub struct ServeConfig {
    /// The policy directory.
    pub policies: PathBuf,
    /// Endpoint overrides.
    pub overrides: Overrides,
    /// Where to listen.
    pub listen: SocketAddr,
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy could not be loaded at start-up (there is no last good one to keep).
    #[error("initial policy: {0}")]
    Policy(#[from] PolicyError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
}

/// Runs until `shutdown` becomes true: loads the policy, serves HTTP, evaluates every
/// `eval_period_s`, re-reads the policies every second. Calls `on_listening` with the bound
/// address (port 0 picks a free one).
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
    let state = AppState::new(governor.subscribe(), shutdown.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(%local, policies = %config.policies.display(), "huntgate-governor listening");
    on_listening(local);

    let mut http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });

    let mut stop = shutdown;
    let mut stop_mid_eval = stop.clone();
    let mut period = governor.policy().eval_period_ms;
    let mut eval = tokio::time::interval(Duration::from_millis(period));
    eval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reload = tokio::time::interval(RELOAD_POLL);
    reload.set_missed_tick_behavior(MissedTickBehavior::Delay);
    reload.tick().await; // the first tick is immediate and the policy is already loaded
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = eval.tick() => {
                // A shutdown does not wait for slow reads (they are cancelled).
                tokio::select! {
                    _ = governor.evaluate(clock.now_ms()) => {}
                    _ = stop_mid_eval.wait_for(|s| *s) => break,
                }
            }
            _ = reload.tick() => {
                if let Some(result) = watcher.poll() {
                    let ok = result.is_ok();
                    governor.apply_reload(result);
                    if ok {
                        governor.evaluate(clock.now_ms()).await;
                        if governor.policy().eval_period_ms != period {
                            period = governor.policy().eval_period_ms;
                            eval = tokio::time::interval(Duration::from_millis(period));
                            eval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                            eval.reset();
                        }
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServeError::Http(e)),
        Err(e) => Err(ServeError::Http(std::io::Error::other(e))),
    }
}
