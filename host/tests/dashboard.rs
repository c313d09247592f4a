//! The dashboard in a real browser: `conduit demo` seeds a gateway over the mock provider, then
//! Debian's chromium driven by playwright-core (tests/dashboard/check.cjs) checks that the charts
//! show the API's numbers, promotes a finding category to block and revokes a key through the page,
//! and writes a screenshot to `target/tmp/dashboard.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::process::{BIN, policy_cache_dir};

fn playwright() -> Option<PathBuf> {
    let peers = std::env::var("CONDUIT_PEERS_DIR").ok()?;
    let module = PathBuf::from(peers).join("node_modules/playwright-core");
    let found = module.join("package.json").exists() && std::path::Path::new("/usr/bin/chromium").exists();
    if !found {
        let msg = "playwright-core (in $CONDUIT_PEERS_DIR) and /usr/bin/chromium are needed (run .ci/run)";
        if std::env::var("CONDUIT_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    Some(module)
}

#[test]
fn dashboard_renders_seeded_numbers_and_its_controls_work() {
    let Some(module) = playwright() else { return };
    let data = tempfile::tempdir().unwrap();
    let mut demo = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--json",
            "--requests",
            "160",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("CONDUIT_POLICY_CACHE_DIR", policy_cache_dir())
        .env("CONDUIT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(demo.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let seeded: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("demo said {line:?}: {e}"));
    assert!(seeded["requests"].as_u64().unwrap() >= 150, "{seeded}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let out = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/check.cjs"))
        .arg(seeded["admin"].as_str().unwrap())
        .arg(seeded["admin_token"].as_str().unwrap())
        .arg(&shot)
        .env("PLAYWRIGHT_CORE", &module)
        .output()
        .unwrap();
    let _ = demo.kill();
    let _ = demo.wait();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "browser check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot written");
    eprintln!("dashboard: {stdout}");
}
