//! Helpers for tests that run the `conduit` binary as a process.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The built `conduit` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// A compiled-policy cache shared by the gateway processes tests start, so each does not
/// recompile the built-in policies (seconds in a debug build).
pub fn policy_cache_dir() -> String {
    concat!(env!("CARGO_TARGET_TMPDIR"), "/policy-cache").to_string()
}

/// A port that was free a moment ago (for processes that must be told their address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr} after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM and waits (up to 15 s) for the process to exit.
pub fn terminate(mut child: Child) -> Output {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "process did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The request ids in `conduit audit export --format jsonl` output.
pub fn exported_request_ids(jsonl: &[u8]) -> std::collections::HashSet<String> {
    String::from_utf8_lossy(jsonl)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Runs `cmd` (a `conduit` CLI call) and insists it succeeded; its output.
pub fn succeed(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` — a `conduit keys create … --json` — and returns the new stand-in key.
pub fn issued_key(cmd: Command) -> String {
    let out = succeed(cmd);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}
