//! Policies: `policies/defaults.yaml` plus one `policies/hunts/<hunt>.yaml` per governed hunt.
//!
//! Files are read into a [`tree::PolicyTree`], parsed into the [`raw`] structs (serde,
//! `deny_unknown_fields`) and compiled by [`compile`] into an immutable [`Policy`]. Every
//! error names the file, the field and the problem. [`watch::PolicyWatcher`] re-reads the
//! directory and reports a new policy when any file changed.

pub mod compile;
#[cfg(feature = "runtime")]
pub mod events;
pub mod overrides;
pub mod raw;
pub mod tree;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::clock::{secs, Millis};
use crate::law::{HuntSpec, Knobs};
use crate::signal::SignalId;

pub use compile::compile;
pub use overrides::{Overrides, RedisOverride};

/// Name of the defaults file inside the policy directory.
pub const DEFAULTS_FILE: &str = "defaults.yaml";
/// The other accepted name of the defaults file (not both at once).
pub const DEFAULTS_FILE_YML: &str = "defaults.yml";
/// Name of the per-hunt directory inside the policy directory.
pub const HUNTS_DIR: &str = "hunts";
/// Most hunts a policy may govern: bounds the `hunt` label of the per-hunt metrics and the
/// size of the throttle document.
pub const MAX_HUNTS: usize = 1000;
/// Most distinct signals a policy may bind: bounds the `signal` label and the reads per tick.
pub const MAX_SIGNALS: usize = 64;

/// A Redis endpoint of the compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// Connection URL.
    pub url: String,
    /// Capacity used when the server reports `maxmemory` 0.
    pub capacity_bytes: Option<u64>,
}

/// The Kafka cluster of the compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaCluster {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
}

/// A validated, immutable policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Time between evaluations.
    pub eval_period_ms: Millis,
    /// `ttl_s` of the throttle document (informative for the filter, see the README).
    pub ttl_s: u64,
    /// A signal with no good read for longer than this is stale.
    pub stale_after_ms: Millis,
    /// Time limit of one signal read.
    pub read_timeout_ms: Millis,
    /// Whether `default_ratio` follows the law over the default signals.
    pub govern_unlisted: bool,
    /// The spec behind `default_ratio` and the base of every hunt.
    pub default: HuntSpec,
    /// Governed hunts by canonical (lowercase) id.
    pub hunts: BTreeMap<String, HuntSpec>,
    /// Redis endpoints by name.
    pub redis: BTreeMap<String, RedisEndpoint>,
    /// The Kafka cluster, if any `kafka:` signal may be bound.
    pub kafka: Option<KafkaCluster>,
}

impl Default for Policy {
    /// Built-in defaults: no signals, no hunts, the Hunt-002 knobs.
    fn default() -> Self {
        Self {
            eval_period_ms: secs(DEFAULT_EVAL_PERIOD_S),
            ttl_s: DEFAULT_TTL_S,
            stale_after_ms: secs(DEFAULT_STALE_AFTER_S),
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            govern_unlisted: true,
            default: HuntSpec {
                max_hunters: DEFAULT_MAX_HUNTERS,
                min_hunters: 0,
                signals: Vec::new(),
                knobs: Knobs::default(),
                pin_ratio: None,
            },
            hunts: BTreeMap::new(),
            redis: BTreeMap::new(),
            kafka: None,
        }
    }
}

impl Policy {
    /// Every signal bound by the default spec or by some hunt.
    pub fn bound_signals(&self) -> BTreeSet<SignalId> {
        let mut all: BTreeSet<SignalId> = self.default.signals.iter().cloned().collect();
        for spec in self.hunts.values() {
            all.extend(spec.signals.iter().cloned());
        }
        all
    }
}

/// Default `eval_period_s`.
pub const DEFAULT_EVAL_PERIOD_S: u64 = 5;
/// Default `ttl_s`.
pub const DEFAULT_TTL_S: u64 = 10;
/// Default `stale_after_s`.
pub const DEFAULT_STALE_AFTER_S: u64 = 15;
/// Default `read_timeout_ms`.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 2000;
/// Default `max_hunters` (the legacy hunt-config.yml cap).
pub const DEFAULT_MAX_HUNTERS: u32 = 2000;

/// A policy that could not be loaded. The message names the file, the field and the problem.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file or directory could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A field is malformed or out of range.
    #[error("{}: field `{field}`: {problem}", file.display())]
    Field {
        /// The file.
        file: PathBuf,
        /// Dotted path of the field (`control.cut_step`, `signals[1]`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A value given on the command line or in the environment is wrong.
    #[error("{flag}: {problem}")]
    Flag {
        /// The flag and its environment variable, e.g. `--redis (HUNTGATE_REDIS)`.
        flag: String,
        /// What is wrong.
        problem: String,
    },
    /// The file as a whole is wrong (YAML syntax, file name, too many hunts).
    #[error("{}: {problem}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
}
