//! Wakes the reload loop as soon as something in the policy directory changes (inotify
//! on Linux, through the `notify` crate), so a policy edit reaches the proxies without
//! waiting for the next rescan. The periodic rescan stays: it is the safety net for
//! events the kernel drops (queue overflow), file systems without notifications, and a
//! watch that could not be set up.

use std::path::Path;

use tokio::sync::mpsc;

/// Whether an event marks a finished change: a file closed after writing, a rename, a
/// creation or removal (a ConfigMap's `..data` swap). A write in progress (`IN_MODIFY`,
/// e.g. the truncation that starts a non-atomic rewrite) and reads are not, so a
/// notification never makes the directory be read half-written.
fn completes_a_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Data(_)) => false,
        EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    }
}

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
                // An error too (a dropped queue) wakes the loop: the read sorts it out.
                if event.map_or(true, |e| completes_a_change(&e.kind)) {
                    let _ = tx.try_send(());
                }
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
