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

/// The Envoy binary: `$HUNTGATE_ENVOY` (a path, or a name looked up on
/// `PATH`), else `envoy` on `PATH`.
pub fn envoy_binary() -> PathBuf {
    let named = env::var("HUNTGATE_ENVOY")
        .ok()
        .filter(|v| !v.is_empty() && !v.contains('/'));
    if let Some(name) = named {
        return find_on_path(&name)
            .unwrap_or_else(|| panic!("HUNTGATE_ENVOY={name} is not on PATH; run `make tools`"));
    }
    if let Some(path) = from_env("HUNTGATE_ENVOY") {
        if path.is_file() {
            return path;
        }
        panic!(
            "HUNTGATE_ENVOY={} does not exist; run `make tools` (scripts/install-tools.sh)",
            path.display()
        );
    }
    if let Some(path) = find_on_path("envoy") {
        return path;
    }
    panic!(
        "Envoy not found: set HUNTGATE_ENVOY or put `envoy` on PATH \
         (`make tools`, then `source ${{HUNTGATE_CACHE:-$HOME/.cache/huntgate}}/env.sh`)"
    );
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
    let path = from_env("HUNTGATE_GOVERNOR")
        .unwrap_or_else(|| workspace_root().join("target/debug/huntgate-governor"));
    if !path.is_file() {
        panic!(
            "governor binary {} not found: build it with `cargo build -p huntgate-governor` \
             (or set HUNTGATE_GOVERNOR)",
            path.display()
        );
    }
    path
}

/// redis-server: `$HUNTGATE_REDIS_SERVER`, else `redis-server` on `PATH`.
pub fn redis_server_binary() -> PathBuf {
    from_env("HUNTGATE_REDIS_SERVER")
        .or_else(|| find_on_path("redis-server"))
        .unwrap_or_else(|| {
            panic!("redis-server not found: install it (`make tools`) or set HUNTGATE_REDIS_SERVER")
        })
}

/// A committed Envoy config template under `envoy/`.
pub fn envoy_template(relative: &str) -> PathBuf {
    workspace_root().join("envoy").join(relative)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = env::var_os("PATH")?;
    env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
