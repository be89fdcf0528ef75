//! Where the things under test are: the workspace, the Envoy binary, the
//! wasm module, the governor binary. A missing one fails the test with the
//! command that provides it, never skips it.

use std::env;
use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A path from the environment, relative paths taken from the workspace root
/// (cargo runs tests from the crate directory, `make` from the root).
fn from_env(var: &str) -> Option<PathBuf> {
    let value = env::var_os(var).filter(|v| !v.is_empty())?;
    let path = PathBuf::from(value);
    Some(if path.is_relative() {
        workspace_root().join(path)
    } else {
        path
    })
}

/// The Envoy binary (the harness's lookup: `$HUNTGATE_ENVOY` as a name on `PATH` or a
/// path, relative ones from the workspace root; the tool cache; `envoy` on `PATH`).
pub fn envoy_binary() -> PathBuf {
    huntgate_harness::envoy::envoy_binary(&workspace_root()).unwrap_or_else(|e| {
        panic!(
            "{e} (`make tools`, then `source ${{HUNTGATE_CACHE:-$HOME/.cache/huntgate}}/env.sh`)"
        )
    })
}

/// The filter under test: `$HUNTGATE_WASM`, else `<workspace>/dist/huntgate.wasm`.
pub fn wasm_module() -> PathBuf {
    let path =
        from_env("HUNTGATE_WASM").unwrap_or_else(|| workspace_root().join("dist/huntgate.wasm"));
    if !path.is_file() {
        panic!(
            "wasm module {} not found: build it with `make wasm` (or set HUNTGATE_WASM)",
            path.display()
        );
    }
    path
}

/// The governor binary: `$HUNTGATE_GOVERNOR`, else the workspace's debug
/// build (`cargo build -p huntgate-governor`, which `make e2e` runs).
pub fn governor_binary() -> PathBuf {
    huntgate_harness::governor::governor_binary(&workspace_root(), &["debug"])
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The crash-test build of the filter (`--features crash-test`, see `src/crash_test.rs`):
/// `$HUNTGATE_CRASH_WASM`, else `target/crash-test/wasm32-wasip1/release/huntgate.wasm`
/// (`make e2e` builds it).
pub fn crash_test_wasm() -> PathBuf {
    let path = from_env("HUNTGATE_CRASH_WASM").unwrap_or_else(|| {
        workspace_root().join("target/crash-test/wasm32-wasip1/release/huntgate.wasm")
    });
    if !path.is_file() {
        panic!(
            "crash-test wasm {} not found: `make e2e` builds it (or set HUNTGATE_CRASH_WASM)",
            path.display()
        );
    }
    path
}

/// `huntgatectl`: `$HUNTGATE_CTL`, else next to the governor binary (both are built by
/// `cargo build -p huntgate-governor`).
pub fn huntgatectl_binary() -> PathBuf {
    let path =
        from_env("HUNTGATE_CTL").unwrap_or_else(|| governor_binary().with_file_name("huntgatectl"));
    if !path.is_file() {
        panic!(
            "huntgatectl {} not found: build it with `cargo build -p huntgate-governor` \
             (or set HUNTGATE_CTL)",
            path.display()
        );
    }
    path
}

/// A committed Envoy config template under `envoy/`.
pub fn envoy_template(relative: &str) -> PathBuf {
    workspace_root().join("envoy").join(relative)
}
