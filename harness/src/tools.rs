//! Finding the tools the tests, the bench and the demo run.

use std::path::{Path, PathBuf};

/// The executable `name` on `PATH`, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The tool at `$env`, else `default`; `Err` says what is missing and how to get it.
pub fn tool(env: &str, default: Option<PathBuf>, what: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(env).map(PathBuf::from).or(default);
    match path {
        Some(p) if p.is_file() => Ok(p),
        other => Err(format!(
            "{what} not found (looked at {other:?}): run the install scripts (scripts/install-*.sh) or set {env}"
        )),
    }
}

/// The tool cache of `scripts/install-*.sh`: `$HUNTGATE_CACHE`, else `~/.cache/huntgate`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HUNTGATE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/huntgate")))
}

/// `relative` in the tool cache, if it is a file there.
pub fn cached(relative: &str) -> Option<PathBuf> {
    cache_dir()
        .map(|cache| cache.join(relative))
        .filter(|p| p.is_file())
}

/// The tool named by `$env` — a bare name looked up on `PATH`, or a path (a relative one
/// taken from `root`) — else `default`; `Err` says what is missing and how to get it.
pub fn tool_from(
    env: &str,
    root: &Path,
    default: Option<PathBuf>,
    what: &str,
) -> Result<PathBuf, String> {
    match std::env::var_os(env).filter(|v| !v.is_empty()) {
        Some(value) if !value.to_string_lossy().contains('/') => {
            let name = value.to_string_lossy();
            which(&name).ok_or_else(|| format!("{env}={name} is not on PATH"))
        }
        Some(value) => {
            let path = root.join(value);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{env}={} does not exist: run the install scripts (scripts/install-*.sh)",
                    path.display()
                ))
            }
        }
        None => tool(env, default, what),
    }
}
