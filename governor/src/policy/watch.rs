//! Live reload: re-read the policy directory (every second in the binary) and report a new
//! policy, or the reason it was rejected, whenever the files changed.

use std::path::PathBuf;

use super::compile::compile;
use super::overrides::Overrides;
use super::tree::PolicyTree;
use super::{Policy, PolicyError};

/// Watches one policy directory by content.
#[derive(Debug)]
pub struct PolicyWatcher {
    dir: PathBuf,
    overrides: Overrides,
    /// Fingerprint of the last tree reported, or the text of the last read error.
    last: Option<Result<u64, String>>,
    /// Warnings of the latest read (ignored files, a missing `hunts/`).
    warnings: Vec<String>,
}

impl PolicyWatcher {
    /// A watcher whose first [`poll`](Self::poll) always reports.
    pub fn new(dir: PathBuf, overrides: Overrides) -> Self {
        Self {
            dir,
            overrides,
            last: None,
            warnings: Vec::new(),
        }
    }

    /// Warnings of the latest read: ignored files and a missing `hunts/`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Files the latest read ignored.
    pub fn ignored_files(&self) -> usize {
        self.warnings
            .iter()
            .filter(|w| w.contains(": ignored ("))
            .count()
    }

    /// The watched directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Re-reads the directory: `None` if nothing changed since the last report, else the
    /// newly compiled policy or why it was rejected. A rejected tree is reported once, not
    /// on every poll; the next change is reported again.
    pub fn poll(&mut self) -> Option<Result<Policy, PolicyError>> {
        match PolicyTree::read(&self.dir) {
            Ok(tree) => {
                if tree.warnings != self.warnings {
                    for w in &tree.warnings {
                        tracing::warn!("policy directory: {w}");
                    }
                    self.warnings = tree.warnings.clone();
                }
                let fp = tree.fingerprint();
                if self.last == Some(Ok(fp)) {
                    return None;
                }
                self.last = Some(Ok(fp));
                Some(compile(&tree, &self.overrides))
            }
            Err(e) => {
                let text = e.to_string();
                if self.last.as_ref() == Some(&Err(text.clone())) {
                    return None;
                }
                self.last = Some(Err(text));
                Some(Err(e))
            }
        }
    }
}
