//! Reading the policy directory into memory, once per poll.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::{PolicyError, DEFAULTS_FILE, HUNTS_DIR};

/// One file's path and text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyFile {
    /// Path of the file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

/// The policy directory as read at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyTree {
    /// `defaults.yaml`.
    pub defaults: PolicyFile,
    /// `hunts/*.yaml` and `hunts/*.yml`, sorted by path (dot files are skipped).
    pub hunts: Vec<PolicyFile>,
}

impl PolicyTree {
    /// Reads `dir/defaults.yaml` and `dir/hunts/*.y{a,}ml`. A missing `hunts/` is no hunts.
    pub fn read(dir: &Path) -> Result<Self, PolicyError> {
        let defaults_path = dir.join(DEFAULTS_FILE);
        let defaults = read_file(&defaults_path)?;
        let hunts_dir = dir.join(HUNTS_DIR);
        let mut hunts = Vec::new();
        match std::fs::read_dir(&hunts_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|source| PolicyError::Read {
                        file: hunts_dir.clone(),
                        source,
                    })?;
                    let path = entry.path();
                    if is_policy_file(&path) {
                        hunts.push(read_file(&path)?);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PolicyError::Read {
                    file: hunts_dir,
                    source,
                })
            }
        }
        hunts.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self { defaults, hunts })
    }

    /// A hash of every path and text: equal trees have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

fn is_policy_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yaml" || e == "yml");
    yaml && !name.starts_with('.') && path.is_file()
}

fn read_file(path: &Path) -> Result<PolicyFile, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    Ok(PolicyFile {
        path: path.to_path_buf(),
        text,
    })
}
