//! Wakes the reload loop as soon as something in the policy directory changes (inotify
//! on Linux, through the `notify` crate), so a policy edit reaches the proxies without
//! waiting for the next rescan. The periodic rescan stays: it is the safety net for
//! events the kernel drops (queue overflow), file systems without notifications, and a
//! watch that could not be set up.

use std::path::Path;

use tokio::sync::mpsc;

/// Events of one directory tree, coalesced: at most one wake-up is pending.
pub struct DirEvents {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::Receiver<()>,
}

impl DirEvents {
    /// Watches `dir` and everything below it.
    pub fn watch(dir: &Path) -> Result<Self, notify::Error> {
        use notify::Watcher as _;
        let (tx, rx) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Any event, and an error too (a dropped queue): the rescan sorts it out.
                let _ = event;
                let _ = tx.try_send(());
            })?;
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
        Ok(Self {
            _watcher: watcher,
            rx,
        })
    }

    /// Waits for the next change; pends forever on `None` (no watch).
    pub async fn changed(events: &mut Option<Self>) {
        match events {
            Some(events) => {
                if events.rx.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// Drops a wake-up already pending (taken in by the read that follows).
    pub fn clear(events: &mut Option<Self>) {
        if let Some(events) = events {
            while events.rx.try_recv().is_ok() {}
        }
    }
}
