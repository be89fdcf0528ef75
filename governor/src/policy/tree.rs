//! Reading the policy directory into memory, once per poll.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::{PolicyError, DEFAULTS_FILE, DEFAULTS_FILE_YML, HUNTS_DIR};

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
    /// `defaults.yaml` (or `defaults.yml`).
    pub defaults: PolicyFile,
    /// `hunts/*.yaml` and `hunts/*.yml` (extension in any case), sorted by path.
    pub hunts: Vec<PolicyFile>,
    /// What was not read and why (ignored files, a missing `hunts/`), for a warning.
    pub warnings: Vec<String>,
}

/// What an entry of `hunts/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A hunt policy file: `<hunt>.yaml` / `<hunt>.yml`, extension in any case.
    Policy,
    /// A dot entry (editor swap files, a ConfigMap's `..data` and timestamped folders):
    /// skipped silently.
    Hidden,
    /// Anything else (another extension, a sub-folder): ignored with a warning.
    Ignored,
}

/// Classifies an entry of `hunts/` by its name and whether it is a directory.
pub fn classify(name: &str, is_dir: bool) -> EntryKind {
    if name.starts_with('.') {
        return EntryKind::Hidden;
    }
    let yaml = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if yaml && !is_dir {
        EntryKind::Policy
    } else {
        EntryKind::Ignored
    }
}

impl PolicyTree {
    /// Reads `dir/defaults.yaml` (or `defaults.yml`, not both) and `dir/hunts/*.y{a,}ml`.
    /// A missing `hunts/` means no hunt file, with a warning.
    pub fn read(dir: &Path) -> Result<Self, PolicyError> {
        let yaml = dir.join(DEFAULTS_FILE);
        let yml = dir.join(DEFAULTS_FILE_YML);
        let defaults_path = match (yaml.exists(), yml.exists()) {
            (true, true) => {
                return Err(PolicyError::File {
                    file: yml,
                    problem: format!(
                        "both {DEFAULTS_FILE} and {DEFAULTS_FILE_YML} exist: keep one"
                    ),
                })
            }
            (false, true) => yml,
            _ => yaml,
        };
        let defaults = read_file(&defaults_path)?;
        let hunts_dir = dir.join(HUNTS_DIR);
        let mut hunts = Vec::new();
        let mut warnings = Vec::new();
        match std::fs::read_dir(&hunts_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|source| PolicyError::Read {
                        file: hunts_dir.clone(),
                        source,
                    })?;
                    let path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    match classify(&name, path.is_dir()) {
                        EntryKind::Policy => hunts.push(read_file(&path)?),
                        EntryKind::Hidden => {}
                        EntryKind::Ignored => warnings.push(format!(
                            "{}: ignored ({}; hunt files are <hunt>.yaml or <hunt>.yml directly in {HUNTS_DIR}/)",
                            path.display(),
                            if path.is_dir() { "a sub-folder" } else { "not a .yaml/.yml file" }
                        )),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => warnings.push(format!(
                "{}: missing, so no hunt has a policy file (every hunt follows defaults); create it, even empty, to silence this",
                hunts_dir.display()
            )),
            Err(source) => {
                return Err(PolicyError::Read {
                    file: hunts_dir,
                    source,
                })
            }
        }
        hunts.sort_by(|a, b| a.path.cmp(&b.path));
        warnings.sort();
        Ok(Self {
            defaults,
            hunts,
            warnings,
        })
    }

    /// How many files were ignored (the `huntgate_policy_ignored_files` gauge).
    pub fn ignored_files(&self) -> usize {
        self.warnings
            .iter()
            .filter(|w| w.contains(": ignored ("))
            .count()
    }

    /// A hash of every path and text: equal trees have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.defaults.hash(&mut h);
        self.hunts.hash(&mut h);
        h.finish()
    }
}

/// Largest policy file read, in bytes: a bigger one (a mistaken link to a log or a
/// device) is refused without reading it.
pub const MAX_POLICY_FILE_BYTES: u64 = 1 << 20;

fn read_file(path: &Path) -> Result<PolicyFile, PolicyError> {
    let read_err = |source| PolicyError::Read {
        file: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() || meta.len() > MAX_POLICY_FILE_BYTES {
        return Err(PolicyError::File {
            file: path.to_path_buf(),
            problem: format!(
                "not a policy file (a regular file of at most {MAX_POLICY_FILE_BYTES} bytes); its content is not shown"
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|e| PolicyError::File {
        file: path.to_path_buf(),
        problem: format!(
            "not UTF-8 text (invalid byte at offset {}); its content is not shown",
            e.utf8_error().valid_up_to()
        ),
    })?;
    Ok(PolicyFile {
        path: path.to_path_buf(),
        text,
    })
}
