//! Finding the real clients and peers `.ci/run` installs (under `$CONDUIT_PEERS_DIR`, else on
//! PATH). A missing one skips its test with a message, or fails it with `CONDUIT_REQUIRE_PEERS=1`.

use std::path::PathBuf;

/// `found`, or a skip (a failure in CI) naming what is missing.
pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        let msg = format!(
            "{what} is not installed (run .ci/run, or see README: npm i @anthropic-ai/claude-code @openai/codex; pip install anthropic openai)"
        );
        if std::env::var("CONDUIT_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// `$CONDUIT_PEERS_DIR`.
pub fn peers_dir() -> Option<PathBuf> {
    std::env::var_os("CONDUIT_PEERS_DIR").map(PathBuf::from)
}

/// `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `node_modules/.bin/<name>` under `$CONDUIT_PEERS_DIR`, else on PATH.
pub fn node_bin(name: &str) -> Option<PathBuf> {
    peers_dir()
        .map(|d| d.join("node_modules/.bin").join(name))
        .filter(|p| p.is_file())
        .or_else(|| on_path(name))
}

/// The current Claude Code release (`.ci/run` installs it beside the pinned one, under
/// `$CONDUIT_PEERS_DIR/claude-current`).
pub fn claude_current() -> Option<PathBuf> {
    peers_dir()
        .map(|d| d.join("claude-current/node_modules/.bin/claude"))
        .filter(|p| p.is_file())
}
