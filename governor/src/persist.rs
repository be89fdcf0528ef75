//! The law's state across restarts: what is saved (pure), how it is resumed (pure, with an
//! age rule), and where it is kept ([`StateStore`]: a file today; the trait is the seam for
//! a coordination-Redis backend).
//!
//! The age rule, per hunt: a saved ratio is **always** resumed (a restart in the middle of
//! an overload must not re-open every hunt). The saved step times (last cut, last raise)
//! are resumed only while the state is at most [`STEP_TIMES_MAX_AGE_INTERVALS`] ×
//! `cut_interval_s` old (and at least [`STEP_TIMES_MIN_AGE_MS`]); older, they are
//! forgotten: the next overload cuts at once and recovery waits a whole `stable_period_s`.
//! The calm period always restarts (nobody watched the signals while the governor was
//! down). Until every signal of the hunt has been read once after the restart, the resumed
//! ratio holds (the start-up grace, see [`crate::signal::SignalStatus::Pending`]).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::{secs, Millis};
use crate::law::{round_ratio, HuntState, LawState, Reason};
use crate::policy::Policy;

/// Format version of the saved state.
pub const FORMAT: u32 = 1;
/// Saved step times are trusted while the state is at most this many `cut_interval_s` old.
pub const STEP_TIMES_MAX_AGE_INTERVALS: u64 = 10;
/// ... and at least this old (so `cut_interval_s: 0` still resumes a restart of seconds).
pub const STEP_TIMES_MIN_AGE_MS: Millis = secs(60);
/// Name of the state file inside `--state-dir`.
pub const STATE_FILE: &str = "governor-state.json";
/// Largest state file read back, in bytes (1,000 hunts take about 150 KB).
pub const MAX_STATE_BYTES: u64 = 4 << 20;

/// One hunt's saved control state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedHunt {
    /// The ratio in force.
    pub ratio: f64,
    /// When it was last cut (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cut_ms: Option<Millis>,
    /// When it last rose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_raise_ms: Option<Millis>,
    /// The reason of the latest decision.
    pub reason: Reason,
}

/// The saved state of every controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// [`FORMAT`].
    pub format: u32,
    /// When it was saved (ms since the epoch).
    pub saved_at_ms: Millis,
    /// The controller behind `default_ratio`.
    pub default: SavedHunt,
    /// Per hunt with a policy file.
    pub hunts: BTreeMap<String, SavedHunt>,
}

fn save_one(s: &HuntState) -> SavedHunt {
    SavedHunt {
        ratio: s.ratio,
        last_cut_ms: s.last_cut_ms,
        last_raise_ms: s.last_raise_ms,
        reason: s.reason,
    }
}

/// The state to save at `now`.
pub fn snapshot(law: &LawState, now: Millis) -> SavedState {
    SavedState {
        format: FORMAT,
        saved_at_ms: now,
        default: save_one(&law.default),
        hunts: law
            .hunts
            .iter()
            .map(|(h, s)| (h.clone(), save_one(s)))
            .collect(),
    }
}

fn resume_one(saved: &SavedHunt, age_ms: Millis, cut_interval_ms: Millis) -> HuntState {
    let trust_times = age_ms
        <= cut_interval_ms
            .saturating_mul(STEP_TIMES_MAX_AGE_INTERVALS)
            .max(STEP_TIMES_MIN_AGE_MS);
    let ratio = if saved.ratio.is_finite() {
        round_ratio(saved.ratio.clamp(0.0, 1.0))
    } else {
        1.0
    };
    HuntState {
        ratio,
        last_cut_ms: saved.last_cut_ms.filter(|_| trust_times),
        last_raise_ms: saved.last_raise_ms.filter(|_| trust_times),
        calm_since_ms: None,
        reason: saved.reason,
    }
}

/// Resumes a saved state under `policy` at `now` (the age rule is in the module docs).
/// Hunts no longer in the policy are dropped, new ones start at 1.0 at the first tick.
/// Returns the state and how many hunts (the default controller excluded) resumed.
pub fn restore(saved: &SavedState, policy: &Policy, now: Millis) -> (LawState, usize) {
    let age = now.saturating_sub(saved.saved_at_ms);
    let default = resume_one(&saved.default, age, policy.default.knobs.cut_interval_ms);
    let hunts: BTreeMap<String, HuntState> = policy
        .hunts
        .iter()
        .filter_map(|(hunt, spec)| {
            let s = saved.hunts.get(hunt)?;
            Some((hunt.clone(), resume_one(s, age, spec.knobs.cut_interval_ms)))
        })
        .collect();
    let n = hunts.len();
    (LawState { default, hunts }, n)
}

/// Why a saved state could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a saved state of this format.
    #[error("{}: not a governor state file ({problem}); its content is not shown", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Where the state is kept. Today a file (`--state-dir`); a coordination-Redis backend
/// would implement the same two calls (with `saved_at_ms` as the age, not the file time).
pub trait StateStore: Send + Sync {
    /// The saved state, or `None` if nothing was saved yet.
    fn load(&self) -> Result<Option<SavedState>, StateError>;
    /// Saves `state`, replacing the previous one atomically.
    fn save(&self, state: &SavedState) -> Result<(), StateError>;
    /// Where the state lives, for logs.
    fn describe(&self) -> String;
}

/// A JSON file in a directory, replaced by write-to-temp + fsync + rename, so a crash
/// leaves either the old or the new state, never half of one.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn io<'a>(
        path: &'a Path,
        what: &'static str,
    ) -> impl FnOnce(std::io::Error) -> StateError + 'a {
        move |source| StateError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<SavedState>, StateError> {
        let path = self.path();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&path, "cannot read")(e)),
        };
        let mut text = String::new();
        use std::io::Read as _;
        file.take(MAX_STATE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(Self::io(&path, "cannot read"))?;
        if text.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::Invalid {
                path,
                problem: format!("larger than {MAX_STATE_BYTES} bytes"),
            });
        }
        let state: SavedState = serde_json::from_str(&text).map_err(|e| StateError::Invalid {
            path: path.clone(),
            problem: format!(
                "line {} column {}: {:?}",
                e.line(),
                e.column(),
                e.classify()
            ),
        })?;
        if state.format != FORMAT {
            return Err(StateError::Invalid {
                path,
                problem: format!("format {} (this governor reads {FORMAT})", state.format),
            });
        }
        Ok(Some(state))
    }

    fn save(&self, state: &SavedState) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir, "cannot create"))?;
        let path = self.path();
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_vec(state).map_err(|e| StateError::Invalid {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(Self::io(&tmp, "cannot write"))?;
        f.write_all(&text).map_err(Self::io(&tmp, "cannot write"))?;
        f.sync_all().map_err(Self::io(&tmp, "cannot sync"))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(Self::io(&path, "cannot rename into place"))?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}
