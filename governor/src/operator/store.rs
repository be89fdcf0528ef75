//! Where the operator state lives, so that an override survives a restart and every
//! replica sees the same one:
//! - with `--coordination`: the coordination Redis, key `huntgate:{fleet}:operator`
//!   (`<revision> <JSON>`, compare-and-set on the revision; replicas re-read it every
//!   second);
//! - else with `--state-dir`: the file `operator-state.json` there, replaced by
//!   write-to-temp + fsync + rename;
//! - else memory only (a restart forgets every override; logged at start).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::{apply, Actor, Mutation, OperatorError, OperatorState, FORMAT};
use crate::clock::Millis;
use crate::coordination::Coordination;
use crate::policy::Policy;

/// Name of the state file inside `--state-dir`.
pub const OPERATOR_FILE: &str = "operator-state.json";
/// Largest stored state read back (500 audit entries and 2,000 hunts take about 600 KB).
pub const MAX_OPERATOR_BYTES: usize = 4 << 20;
/// Compare-and-set attempts of one mutation before it answers UNAVAILABLE.
pub const MAX_ATTEMPTS: usize = 8;

/// The operator state's home.
#[derive(Clone)]
pub enum OperatorStore {
    /// This process only.
    Memory,
    /// A file in a directory.
    File(PathBuf),
    /// The coordination Redis.
    Redis(Arc<Coordination>),
}

impl OperatorStore {
    /// For logs.
    pub fn describe(&self) -> String {
        match self {
            OperatorStore::Memory => "memory (lost at restart)".to_owned(),
            OperatorStore::File(dir) => dir.join(OPERATOR_FILE).display().to_string(),
            OperatorStore::Redis(_) => "the coordination Redis".to_owned(),
        }
    }

    /// Whether other replicas may change the state (then it is re-read periodically).
    pub fn shared(&self) -> bool {
        matches!(self, OperatorStore::Redis(_))
    }

    /// The stored state (`None`: nothing stored yet; memory always answers `None`).
    pub async fn load(&self) -> Result<Option<OperatorState>, String> {
        let text = match self {
            OperatorStore::Memory => return Ok(None),
            OperatorStore::File(dir) => {
                let path = dir.join(OPERATOR_FILE);
                match std::fs::read(&path) {
                    Ok(bytes) if bytes.len() > MAX_OPERATOR_BYTES => {
                        return Err(format!(
                            "{}: larger than {MAX_OPERATOR_BYTES} bytes",
                            path.display()
                        ))
                    }
                    Ok(bytes) => String::from_utf8(bytes)
                        .map_err(|_| format!("{}: not UTF-8", path.display()))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
                }
            }
            OperatorStore::Redis(c) => match c.load_operator().await.map_err(|e| e.to_string())? {
                None => return Ok(None),
                Some(v) if v.len() > MAX_OPERATOR_BYTES => {
                    return Err(format!(
                        "stored state larger than {MAX_OPERATOR_BYTES} bytes"
                    ))
                }
                Some(v) => match v.split_once(' ') {
                    Some((_, json)) => json.to_owned(),
                    None => return Err("stored state has no revision".to_owned()),
                },
            },
        };
        let state: OperatorState =
            serde_json::from_str(&text).map_err(|e| format!("stored state: {e}"))?;
        if state.format != FORMAT {
            return Err(format!(
                "stored state has format {} (this governor reads {FORMAT})",
                state.format
            ));
        }
        Ok(Some(state))
    }

    /// Writes `next` if the stored state still is revision `expected`; `false` if another
    /// replica wrote first.
    async fn compare_and_set(&self, expected: u64, next: &OperatorState) -> Result<bool, String> {
        let json = serde_json::to_string(next).map_err(|e| e.to_string())?;
        match self {
            OperatorStore::Memory => Ok(true),
            OperatorStore::File(dir) => write_atomically(dir, &json).map(|()| true),
            OperatorStore::Redis(c) => {
                let value = format!("{} {json}", next.revision);
                c.store_operator((expected > 0).then_some(expected), &value)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Applies `mutation` to the latest stored state (`current` is this replica's copy, used
    /// when the store has none) and stores the result: the new state, or why not.
    pub async fn mutate(
        &self,
        current: &OperatorState,
        mutation: &Mutation,
        actor: &Actor,
        policy: &Policy,
        now: Millis,
    ) -> Result<OperatorState, OperatorError> {
        for _ in 0..MAX_ATTEMPTS {
            let latest = if self.shared() {
                self.load()
                    .await
                    .map_err(OperatorError::Store)?
                    .unwrap_or_default()
            } else {
                current.clone()
            };
            let next = apply(&latest, mutation, actor, policy, now)?;
            if self
                .compare_and_set(latest.revision, &next)
                .await
                .map_err(OperatorError::Store)?
            {
                return Ok(next);
            }
        }
        Err(OperatorError::Store(format!(
            "changed by other replicas {MAX_ATTEMPTS} times in a row"
        )))
    }
}

fn write_atomically(dir: &std::path::Path, json: &str) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", e))?;
    let tmp = dir.join(format!(".{OPERATOR_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot write", e))?;
    f.write_all(json.as_bytes())
        .map_err(|e| io("cannot write", e))?;
    f.sync_all().map_err(|e| io("cannot sync", e))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(OPERATOR_FILE)).map_err(|e| io("cannot rename", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
