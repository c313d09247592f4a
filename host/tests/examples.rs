//! The custom-policy examples in `examples/` run as tests: the Rust one (built with the
//! built-ins by crates/policy/build.rs) and the Python one, built here with componentize-py, signed with
//! `conduit policy sign`, loaded by a gateway from its policy directory and seen blocking a
//! request end to end.
//!
//! componentize-py is installed by `.ci/run`; locally a missing one skips with a message, and
//! with `CONDUIT_REQUIRE_PEERS=1` (CI) it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Harness;
use common::process::BIN;
use http::StatusCode;

fn componentize_py() -> Option<&'static str> {
    let found = Command::new("componentize-py")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("componentize-py");
    }
    let msg = "componentize-py is not installed (pip install componentize-py==0.25.1, or run .ci/run)";
    if std::env::var("CONDUIT_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn conduit(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("CONDUIT_DATA_DIR", cwd.join("data"))
        .env("CONDUIT_ADMIN_LISTEN", "127.0.0.1:1") // no gateway: commands run locally
        .env("CONDUIT_POLICY_CACHE_DIR", common::process::policy_cache_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "conduit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_policy_built_signed_loaded_and_blocking() {
    let Some(cpy) = componentize_py() else { return };
    let work = tempfile::tempdir().unwrap();
    let policies = work.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let wasm = policies.join("deal-codes.wasm");
    let status = Command::new(cpy)
        .current_dir(repo)
        .args([
            "-d",
            "wit",
            "-w",
            "policy",
            "componentize",
            "-p",
            "examples/python-policy",
            "app",
            "-o",
        ])
        .arg(&wasm)
        .status()
        .unwrap();
    assert!(status.success(), "componentize-py failed");

    // Sign with a key made by the CLI, verify, and test it on a text.
    conduit(&["policy", "keygen", "--out", "org"], work.path());
    conduit(
        &["policy", "sign", wasm.to_str().unwrap(), "--key", "org.key"],
        work.path(),
    );
    assert!(
        conduit(
            &["policy", "verify", wasm.to_str().unwrap(), "--key", "org.pub"],
            work.path()
        )
        .contains("OK")
    );
    std::fs::write(work.path().join("t.txt"), "closing DEAL-4821 this week").unwrap();
    let out = conduit(
        &[
            "policy",
            "test",
            "--policies",
            policies.to_str().unwrap(),
            "--text",
            "t.txt",
        ],
        work.path(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["findings"][0]["category"], "entity.deal");
    assert_eq!(
        (v["findings"][0]["start"].as_u64(), v["findings"][0]["end"].as_u64()),
        (Some(8), Some(17))
    );

    // A gateway trusting the key loads it and blocks a request carrying a deal code.
    let h = Harness::builder()
        .toml(&format!(
            "[policies]\ndir = {:?}\ntrusted_keys = [{:?}]\n[policies.modes]\n\"entity.deal\" = \"block\"\n",
            policies.display().to_string(),
            work.path().join("org.pub").display().to_string()
        ))
        .start()
        .await;
    let loaded = h.gateway().policies.as_ref().unwrap().statuses();
    assert!(
        loaded.iter().any(|s| s.name == "deal-codes" && s.state == "loaded"),
        "{loaded:?}"
    );
    let body = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
        "messages": [{"role": "user", "content": "is DEAL-4821 signed?"}]});
    let r = h.messages(&body.to_string()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.body).contains("entity.deal"));
    assert!(h.mock_log().await.is_empty());
}
