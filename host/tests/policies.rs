//! The policy runtime end to end: built-in policies through the gateway (block, alert, model
//! refusal), incremental scanning, signatures, hot reload, and the sandbox (runaway loop, memory
//! hog, trap — in both failure modes) while other requests keep flowing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use conduit_gateway::policy::builtin::{EXAMPLE_NO_TICKETS_WASM, MISBEHAVE_WASM};
use conduit_gateway::policy::runtime::RequestInfo;
use conduit_gateway::policy::segments::Segment;
use conduit_gateway::policy::{Decision, Mode, Policies, RawPolicies, signature};
use http::StatusCode;

const GITHUB_TOKEN: &str = "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u";

fn info(model: &str) -> RequestInfo {
    RequestInfo {
        provider: "anthropic".into(),
        model: Some(model.into()),
        key_id: "key_test".into(),
        owner: "alice@corp.example".into(),
        team: Some("payments".into()),
        path: "/v1/messages".into(),
        stream: false,
        estimated_input_tokens: 10,
    }
}

fn open(toml_text: &str, data: &Path) -> Arc<Policies> {
    let raw: RawPolicies = toml::from_str(toml_text).unwrap();
    let config = raw.validate(data, &|_| None).unwrap();
    Policies::open(config, &[]).unwrap()
}

fn body(text: &str) -> String {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}]
    })
    .to_string()
}

#[test]
fn builtins_report_secrets_entities_and_models_without_text() {
    let data = tempfile::tempdir().unwrap();
    let p = open(
        r#"
        [modes]
        "entity.*" = "block"
        [builtin.entities.config]
        terms = [{ id = "proj-orca", term = "Orca-7", category = "entity.codename" }]
        [builtin.models.config]
        allow = ["claude-sonnet-*", "claude-haiku-*"]
        "#,
        data.path(),
    );
    let request = body(&format!("token {GITHUB_TOKEN} for ORCA 7 launch"));
    let segs = conduit_gateway::content::segments_of(request.as_bytes());
    let out = p.scan(&info("claude-sonnet-4-5"), &segs);
    let found: Vec<(&str, &str, Mode)> = out
        .findings
        .iter()
        .map(|f| (f.category.as_str(), f.rule_id.as_str(), f.mode))
        .collect();
    assert!(
        found.contains(&("secret.github-token", "github-pat", Mode::Alert)),
        "{found:?}"
    );
    assert!(
        found.contains(&("entity.codename", "proj-orca", Mode::Block)),
        "{found:?}"
    );
    assert_eq!(out.decision, Decision::Block);
    let secret = out
        .findings
        .iter()
        .find(|f| f.category == "secret.github-token")
        .unwrap();
    assert_eq!(secret.location, "messages[0].content");
    let segment = &segs[secret.segment.unwrap()];
    assert_eq!(&segment.text[secret.start as usize..secret.end as usize], GITHUB_TOKEN);
    assert_eq!(secret.origin, "prompt");
    let debug = format!("{out:?}");
    assert!(
        !debug.contains(GITHUB_TOKEN) && !debug.to_lowercase().contains("orca 7"),
        "{debug}"
    );

    let out = p.scan(
        &info("claude-opus-4-8"),
        &conduit_gateway::content::segments_of(body("hello").as_bytes()),
    );
    let (status, message, policy) = out.deny.clone().expect("model outside the allow-list is refused");
    assert_eq!((status, policy.as_str()), (403, "models"));
    assert!(
        message.contains("claude-opus-4-8") && message.contains("claude-sonnet-*"),
        "{message}"
    );
    assert_eq!(out.decision, Decision::Block);

    // Setting the model category to alert lets it through (recorded), never downgraded.
    p.set_mode("model.*", Mode::Alert).unwrap();
    let out = p.scan(
        &info("claude-opus-4-8"),
        &conduit_gateway::content::segments_of(body("hello").as_bytes()),
    );
    assert_eq!((out.decision, out.deny.is_none()), (Decision::Alert, true));
}

#[test]
fn loaded_policies_are_configured_ahead_of_the_requests_that_need_them() {
    // One idle, configured instance per core, made on a thread of the policy's own after the
    // load: the first concurrent requests do not each wait for a `configure` (entities with
    // 100,000 terms: ~60 ms an instance).
    let data = tempfile::tempdir().unwrap();
    let policies = open("", data.path());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let idle = policies.idle_instances();
        assert_eq!(idle.len(), 3, "{idle:?}");
        if idle.iter().all(|(_, n)| *n >= cores) {
            break;
        }
        assert!(Instant::now() < deadline, "not pre-configured within 60 s: {idle:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_resent_conversation_is_scanned_only_for_what_is_new_and_still_blocks() {
    let data = tempfile::tempdir().unwrap();
    let p = open("[modes]\n\"secret.*\" = \"block\"\n", data.path());
    let turn1: Vec<Segment> = (0..20)
        .map(|i| {
            Segment::new(
                format!("messages[{i}].content"),
                format!("turn {i}: some ordinary words about refactoring the parser"),
            )
        })
        .collect();
    let out = p.scan(&info("claude-sonnet-4-5"), &turn1);
    assert_eq!((out.cached, out.scanned, out.decision), (0, 20, Decision::Allow));
    let mut turn2 = turn1.clone();
    turn2.push(Segment::new(
        "messages[20].content",
        format!("and the token is {GITHUB_TOKEN}"),
    ));
    let out = p.scan(&info("claude-sonnet-4-5"), &turn2);
    assert_eq!((out.cached, out.scanned, out.decision), (20, 1, Decision::Block));
    // Resent again: everything cached, the block still holds.
    let out = p.scan(&info("claude-sonnet-4-5"), &turn2);
    assert_eq!((out.cached, out.scanned, out.decision), (21, 0, Decision::Block));
    assert_eq!(out.findings[0].location, "messages[20].content");
}

/// A resent part (a message, a tool definition: same bytes, same place) is not read again: its
/// remembered verdict applies — the same findings at the same paths, the same facts, the same
/// segment limit — and only new parts are read and scanned.
#[test]
fn remembered_parts_are_not_read_again_and_keep_their_verdict() {
    use conduit_gateway::content::{self, BodyLimits, Shape};
    let data = tempfile::tempdir().unwrap();
    let p = open("[modes]\n\"secret.*\" = \"block\"\n", data.path());
    let recall: &dyn content::Recall = &*p;
    let turn = |messages: serde_json::Value| {
        serde_json::json!({
            "model": "claude-sonnet-4-5", "max_tokens": 16,
            "system": [{"type": "text", "text": "You are a coding agent."}],
            "tools": [{"name": "Read", "description": "Reads a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "messages": messages,
        })
        .to_string()
    };
    let first = serde_json::json!([
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, {"type": "text", "text": "look at this"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": format!("deploy with {GITHUB_TOKEN} please")}]},
    ]);
    let body1 = turn(first.clone());
    let limits = BodyLimits::default();
    let read = |body: &str, limits: &BodyLimits| {
        let b: &'static [u8] = Box::leak(body.as_bytes().to_vec().into_boxed_slice());
        content::json_recalling(b, Shape::Request, limits, Some(recall))
    };
    let summary = |o: &conduit_gateway::policy::Outcome| -> Vec<(String, String, u32, u32, Mode)> {
        o.findings
            .iter()
            .map(|f| (f.category.clone(), f.location.clone(), f.start, f.end, f.mode))
            .collect()
    };

    // Cold: every part read; the verdict blocks at the secret's path.
    let cold = read(&body1, &limits).unwrap();
    assert!(cold.parts.iter().all(|p| !p.remembered));
    let paths: Vec<&str> = cold.parts.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["system[0]", "tools", "messages[0]", "messages[1]", "messages[2]"]
    );
    let cold_out = p
        .scan_parts(&info("claude-sonnet-4-5"), &cold.segments, &cold.parts)
        .unwrap();
    assert_eq!(cold_out.decision, Decision::Block);
    let cold_findings = summary(&cold_out);
    assert_eq!(cold_findings.len(), 1);
    assert!(cold_findings[0].1.starts_with("messages[2]."), "{cold_findings:?}");

    // Resent: nothing read, the same facts (the image URL still makes the input unbounded), the
    // same findings at the same paths.
    let warm = read(&body1, &limits).unwrap();
    assert!(warm.parts.iter().all(|p| p.remembered), "{:?}", warm.parts);
    let outside = |s: &Segment| !["messages", "tools", "system"].iter().any(|m| s.path.starts_with(m));
    assert!(
        warm.segments.iter().all(outside),
        "only the root's own members are read: {:?}",
        warm.segments
    );
    assert_eq!(warm.facts, cold.facts);
    assert!(warm.facts.unbounded_input);
    let warm_out = p
        .scan_parts(&info("claude-sonnet-4-5"), &warm.segments, &warm.parts)
        .unwrap();
    assert_eq!(
        (warm_out.decision, summary(&warm_out)),
        (Decision::Block, cold_findings.clone())
    );
    assert_eq!((warm_out.cached, warm_out.scanned), (cold.segments.len(), 0));

    // The next turn: the old parts remembered, the new one read.
    let mut more = first.as_array().unwrap().clone();
    more.push(serde_json::json!({"role": "user", "content": "and now the tests"}));
    let next = read(&turn(serde_json::Value::Array(more)), &limits).unwrap();
    let remembered: Vec<bool> = next.parts.iter().map(|p| p.remembered).collect();
    assert_eq!(remembered, [true, true, true, true, true, false]);
    assert_eq!(next.segments.len(), warm.segments.len() + 1);
    let next_out = p
        .scan_parts(&info("claude-sonnet-4-5"), &next.segments, &next.parts)
        .unwrap();
    assert_eq!(summary(&next_out), cold_findings);

    // Modes apply to remembered findings as they are now.
    p.set_mode("secret.*", Mode::Alert).unwrap();
    let alert = p
        .scan_parts(&info("claude-sonnet-4-5"), &warm.segments, &warm.parts)
        .unwrap();
    assert_eq!((alert.decision, alert.findings[0].mode), (Decision::Alert, Mode::Alert));

    // The segment limit counts remembered parts: what is refused cold is refused warm.
    let tight = BodyLimits {
        max_segments: cold.segments.len() - 1,
        ..limits
    };
    let refused = read(&body1, &tight).unwrap_err();
    assert!(refused.too_large, "{}", refused.message);

    // A verdict gone by scan time (evicted, or the set reloaded) asks for a whole read.
    p.clear_cache();
    assert!(
        p.scan_parts(&info("claude-sonnet-4-5"), &warm.segments, &warm.parts)
            .is_none()
    );
    let again = read(&body1, &limits).unwrap();
    assert!(again.parts.iter().all(|p| !p.remembered));
}

fn sign_into(dir: &Path, name: &str, wasm: &[u8], private: &str) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(
        dir.join(format!("{name}.wasm.sig")),
        signature::sign(private, wasm).unwrap(),
    )
    .unwrap();
}

fn statuses_by_name(p: &Policies) -> Vec<(String, String)> {
    p.statuses().into_iter().map(|s| (s.name, s.state)).collect()
}

#[test]
fn signatures_are_required_and_checked() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = signature::keygen().unwrap();
    let (other_private, _) = signature::keygen().unwrap();
    let pub_path = data.path().join("org.pub");
    std::fs::write(&pub_path, &public).unwrap();
    let wasm = std::fs::read(EXAMPLE_NO_TICKETS_WASM).unwrap();

    // good: signed with the trusted key
    sign_into(dir.path(), "good", &wasm, &private);
    // tampered: one byte changed after signing (in a custom section's tail, still a valid file)
    std::fs::write(dir.path().join("tampered.wasm"), {
        let mut w = wasm.clone();
        let n = w.len();
        w[n - 1] ^= 0x01;
        w
    })
    .unwrap();
    std::fs::write(
        dir.path().join("tampered.wasm.sig"),
        signature::sign(&private, &wasm).unwrap(),
    )
    .unwrap();
    // wrong key
    sign_into(dir.path(), "wrongkey", &wasm, &other_private);
    // missing signature
    std::fs::write(dir.path().join("unsigned.wasm"), &wasm).unwrap();

    let toml_text = format!(
        "dir = {:?}\ntrusted_keys = [{:?}]\n",
        dir.path().display().to_string(),
        pub_path.display().to_string()
    );
    let p = open(&toml_text, data.path());
    let statuses = p.statuses();
    let state = |file: &str| {
        statuses
            .iter()
            .find(|s| s.source.ends_with(file))
            .map(|s| (s.state.clone(), s.error.clone().unwrap_or_default()))
            .unwrap()
    };
    assert_eq!(state("good.wasm").0, "loaded");
    let (s, e) = state("tampered.wasm");
    assert!(s == "refused" && e.contains("does not verify"), "{s} {e}");
    let (s, e) = state("wrongkey.wasm");
    assert!(s == "refused" && e.contains("does not verify"), "{s} {e}");
    let (s, e) = state("unsigned.wasm");
    assert!(s == "refused" && e.contains("no signature"), "{s} {e}");
    let good = statuses.iter().find(|s| s.source.ends_with("good.wasm")).unwrap();
    assert_eq!(
        (good.name.as_str(), good.signed_by.as_deref()),
        ("no-tickets", Some("org.pub"))
    );

    // The loaded custom policy works.
    let out = p.scan(
        &info("claude-sonnet-4-5"),
        &conduit_gateway::content::segments_of(body("see TICKET-4821").as_bytes()),
    );
    assert!(
        out.findings.iter().any(|f| f.category == "entity.ticket"),
        "{:?}",
        out.findings
    );

    // openssl-made raw DER signatures are accepted as well.
    let openssl_dir = tempfile::tempdir().unwrap();
    let key = openssl_dir.path().join("k.pem");
    let pubk = openssl_dir.path().join("k.pub");
    let target = openssl_dir.path().join("tickets.wasm");
    std::fs::write(&target, &wasm).unwrap();
    let run = |args: &[&str]| {
        assert!(
            std::process::Command::new("openssl")
                .args(args)
                .status()
                .unwrap()
                .success()
        )
    };
    let s = |p: &Path| p.display().to_string();
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &s(&key)]);
    run(&["ec", "-in", &s(&key), "-pubout", "-out", &s(&pubk)]);
    run(&[
        "dgst",
        "-sha256",
        "-sign",
        &s(&key),
        "-out",
        &format!("{}.sig", s(&target)),
        &s(&target),
    ]);
    let p = open(
        &format!("dir = {:?}\ntrusted_keys = [{:?}]\n", s(openssl_dir.path()), s(&pubk)),
        data.path(),
    );
    assert!(
        statuses_by_name(&p).contains(&("no-tickets".into(), "loaded".into())),
        "{:?}",
        p.statuses()
    );
}

#[test]
fn hot_reload_adds_replaces_and_removes() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = signature::keygen().unwrap();
    let pub_path = data.path().join("org.pub");
    std::fs::write(&pub_path, &public).unwrap();
    let p = open(
        &format!(
            "dir = {:?}\ntrusted_keys = [{:?}]\nreload_interval_ms = 50\n",
            dir.path().display().to_string(),
            pub_path.display().to_string()
        ),
        data.path(),
    );
    p.watch();
    let ticket = || {
        p.scan(
            &info("claude-sonnet-4-5"),
            &conduit_gateway::content::segments_of(body("see TICKET-77").as_bytes()),
        )
        .findings
        .iter()
        .any(|f| f.category == "entity.ticket")
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(!ticket());
    let wasm = std::fs::read(EXAMPLE_NO_TICKETS_WASM).unwrap();
    sign_into(dir.path(), "tickets", &wasm, &private);
    wait_for("the new policy is loaded", &|| ticket());

    // A broken replacement (signed, but not a component) is refused; the old version keeps serving.
    std::thread::sleep(Duration::from_millis(20)); // a distinct mtime
    sign_into(dir.path(), "tickets", b"\0asm\x0d\0\x01\0 broken", &private);
    wait_for("the broken version is reported", &|| {
        p.statuses().iter().any(|s| s.state == "loaded (new version refused)")
    });
    assert!(ticket(), "the previous version still serves");
    let status = p.statuses().into_iter().find(|s| s.name == "no-tickets").unwrap();
    assert!(status.error.unwrap().contains("not a valid policy component"));

    std::fs::remove_file(dir.path().join("tickets.wasm")).unwrap();
    wait_for("the removed policy is gone", &|| !ticket());
    assert!(p.statuses().iter().all(|s| s.name != "no-tickets"));
}

async fn misbehaving_gateway(on_error: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::copy(MISBEHAVE_WASM, dir.join("misbehave.wasm")).unwrap();
    std::fs::write(
        dir.join("misbehave.toml"),
        format!("[policy]\non_error = {on_error:?}\n"),
    )
    .unwrap();
    Harness::builder()
        .toml(&format!(
            "[policies]\ndir = {:?}\nallow_unsigned = true\ntimeout_ms = 10\nmemory_mib = 64\n",
            dir.display().to_string()
        ))
        .start()
        .await
}

/// A policy's refusal of the whole request (`deny`) rests on text it was given: a resend — whose
/// segments and parts the caches would otherwise answer, so the policy would not see that text
/// again — is refused again. Verdicts of a refused scan are not remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_refusal_of_the_whole_request_holds_on_a_resend() {
    let h = misbehaving_gateway("fail_closed").await;
    let refused = body("please-deny this one");
    for attempt in 1..=3 {
        let r = h.messages(&refused).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(h.messages(&body("fine")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_policy_fails_closed_and_others_keep_flowing() {
    let h = misbehaving_gateway("fail_closed").await;
    assert_eq!(h.messages(&body("fine")).await.status, StatusCode::OK);

    // A runaway loop is stopped by the deadline while other requests keep being served.
    let h = Arc::new(h);
    let runaway = {
        let h = h.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = h.messages(&body("please-loop")).await;
            (r, t.elapsed())
        })
    };
    let mut ok = 0;
    for _ in 0..20 {
        if h.messages(&body("fine")).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    let (r, took) = runaway.await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("misbehave") && msg.contains("deadline") && msg.contains("fail closed"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(2), "the loop was stopped ({took:?})");
    assert_eq!(ok, 20, "other requests were served meanwhile");

    // A 1 GiB allocation is refused; a trap is contained; the policy keeps working after each.
    for (text, expect) in [("please-oom", "memory cap"), ("please-trap", "trapped")] {
        let r = h.messages(&body(text)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(expect), "{text}: {msg}");
        assert_eq!(h.messages(&body("fine")).await.status, StatusCode::OK);
    }
    // Nothing reached the provider for the refused requests.
    let sent: Vec<String> = h.mock_log().await.iter().map(|r| r.path.clone()).collect();
    assert_eq!(sent.len(), 1 + 20 + 2, "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fail_open_policy_lets_the_request_through() {
    let h = misbehaving_gateway("fail_open").await;
    for text in ["please-loop", "please-oom", "please-trap"] {
        assert_eq!(h.messages(&body(text)).await.status, StatusCode::OK, "{text}");
    }
    // And its findings still count when it works.
    let r = h.messages(&body("please-find")).await;
    assert_eq!(r.status, StatusCode::OK);
    let findings = h.gateway().state.findings.list(10).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.category == "test.marker" && f.mode == "alert")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_alert_and_model_refusal_through_the_gateway() {
    let terms = r#"terms = [{ id = "cust-0042", term = "Acme Holdings", category = "entity.customer" }]"#;
    let h = Harness::builder()
        .toml(&format!(
            "[policies.modes]\n\"secret.*\" = \"block\"\n[policies.builtin.entities.config]\n{terms}\n[policies.builtin.models.config]\nallow = [\"claude-sonnet-*\", \"claude-haiku-*\"]\n"
        ))
        .start()
        .await;
    // block: a secret in a tool result, in the Anthropic error shape, naming category/rule/location
    let blocked = serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [
            {"role": "user", "content": "read the config"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": ".env"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": format!("GITHUB_TOKEN={GITHUB_TOKEN}\n")}]}
        ]
    });
    let r = h.messages(&blocked.to_string()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let j = r.json();
    assert_eq!(j["type"], "error");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("secret.github-token")
            && msg.contains("github-pat")
            && msg.contains("messages[2].content[0].content"),
        "{msg}"
    );
    assert!(!String::from_utf8_lossy(&r.body).contains(GITHUB_TOKEN));
    assert!(h.mock_log().await.is_empty(), "a blocked request is not forwarded");

    // alert: a customer name goes through and is recorded (id, never the name)
    let r = h.messages(&body("status of the Acme Holdings renewal?")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.mock_log().await.len(), 1);
    let findings = h.gateway().state.findings.list(10).await.unwrap();
    let customer = findings.iter().find(|f| f.category == "entity.customer").unwrap();
    assert_eq!(
        (
            customer.rule_id.as_str(),
            customer.mode.as_str(),
            customer.action.as_str()
        ),
        ("cust-0042", "alert", "forwarded")
    );
    let blocked_record = findings.iter().find(|f| f.category == "secret.github-token").unwrap();
    assert_eq!(blocked_record.action, "blocked");
    let stored = serde_json::to_string(&findings).unwrap();
    assert!(!stored.contains(GITHUB_TOKEN) && !stored.contains("Acme"), "{stored}");

    // a model outside the allow-list: 403 naming the model and what is allowed
    let r = h
        .messages(&serde_json::json!({"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("claude-opus-4-8") && msg.contains("claude-sonnet-*"),
        "{msg}"
    );
    assert_eq!(h.mock_log().await.len(), 1, "not forwarded, not downgraded");

    // OpenAI clients get the OpenAI error shape.
    let key = h.key.clone();
    let r = h
        .send(
            http::Method::POST,
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {key}")), ("content-type", "application/json")],
            serde_json::json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": format!("key {GITHUB_TOKEN}")}]}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "policy_blocked");
}
