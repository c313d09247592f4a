//! Sign-in with the org's IdP, end to end: a real OIDC provider (node `oidc-provider` 9,
//! tests/signin/idp.mjs) as the IdP, the browser leg in Debian's chromium (tests/signin/
//! browser.cjs), and the gateway's device flow, token, refresh, revocation, managed settings,
//! usage and telemetry endpoints as Claude Code's `/login` and `conduit login` use them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{Harness, Reply};
use http::Method;
use serde_json::{Value, json};

const SECRET: &str = "idp-client-secret-for-tests-0123456789";

/// The IdP process; killed on drop.
struct Idp {
    child: Child,
    url: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peers(path: &str) -> Option<PathBuf> {
    let p = common::installed::peers_dir()?.join(path);
    p.exists().then_some(p)
}

/// The IdP and browser this test needs, or a skip (a failure in CI).
fn tools() -> Option<(PathBuf, PathBuf)> {
    let found = peers("idp/node_modules/oidc-provider")
        .zip(peers("node_modules/playwright-core"))
        .filter(|_| std::path::Path::new("/usr/bin/chromium").exists());
    common::installed::require(
        "oidc-provider (in $CONDUIT_PEERS_DIR/idp), playwright-core and /usr/bin/chromium",
        found,
    )
}

fn users() -> Value {
    json!({
        "bob": {"email": "Bob@corp.example", "name": "Bob", "groups": ["payments-eng", "everyone"]},
        "dana": {"email": "dana@corp.example", "groups": ["research"]},
        "carol": {"email": "carol@other.example", "groups": ["payments-eng"]},
        "eve": {"email": "eve@corp.example", "email_verified": false, "groups": []},
        "ann": {"email": "ann@corp.example", "groups": ["conduit-admins"]},
        "fin": {"email": "fin@corp.example", "groups": ["finance-team", "everyone"]},
    })
}

fn start_idp(module: &std::path::Path) -> Idp {
    let mut child = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signin/idp.mjs"))
        .env("OIDC_PROVIDER", module)
        .env("IDP_USERS", users().to_string())
        .env("CLIENT_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("the IdP said {line:?}"));
    Idp {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn gateway(idp: &Idp, extra: &str) -> (Harness, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let settings = files.path().join("managed.json");
    std::fs::write(
        &settings,
        json!({
            "default": {"availableModels": ["claude-haiku-4-5"]},
            "teams": {"payments": {"availableModels": ["claude-sonnet-4-5", "claude-haiku-4-5"], "env": {"CLAUDE_CODE_ENABLE_TELEMETRY": "1"}}},
        })
        .to_string(),
    )
    .unwrap();
    let toml = format!(
        r#"
[signin]
issuer = "{issuer}"
client_id = "conduit"
access_ttl_secs = 120
allowed_email_domains = ["corp.example"]
managed_settings_file = "{settings}"
login_notice = "Conduit test org: sign in with your corp account."
{extra}

[[signin.teams]]
group = "payments-eng"
team = "payments"
"#,
        issuer = idp.url,
        settings = settings.display(),
    );
    let h = Harness::builder()
        .toml(&toml)
        .env("CONDUIT_OIDC_CLIENT_SECRET", SECRET)
        .start()
        .await;
    (h, files)
}

async fn form(h: &Harness, path: &str, pairs: &[(&str, &str)]) -> Reply {
    let body = conduit_gateway::idp::oidc::form(pairs);
    h.send(
        Method::POST,
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("user-agent", "claude-code/2.1.332"),
        ],
        body,
    )
    .await
}

/// Runs the browser leg: approve (or deny) `code_url` as `user`; the page it ends on.
fn browser(module: &std::path::Path, url: &str, user: &str, action: &str) -> String {
    // One chromium at a time on a two-core machine.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signin/browser.cjs"))
        .args([url, user, action])
        .env("PLAYWRIGHT_CORE", module)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "browser leg failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CSP-VIOLATIONS 0"),
        "the pages broke their own CSP:\n{stdout}\n{stderr}"
    );
    stdout
        .lines()
        .find(|l| l.starts_with("PAGE "))
        .unwrap_or_default()
        .to_string()
}

/// Starts a device authorization as Claude Code does.
async fn device(h: &Harness) -> Value {
    let r = form(
        h,
        "/oauth/device_authorization",
        &[("surface", "claude_code"), ("unknown_param", "x")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn poll(h: &Harness, device_code: &str) -> Reply {
    form(
        h,
        "/oauth/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ],
    )
    .await
}

/// A whole sign-in as `user`; the token answer.
async fn sign_in(h: &Harness, module: &std::path::Path, user: &str) -> Value {
    let d = device(h).await;
    let page = browser(
        module,
        d["verification_uri_complete"].as_str().unwrap(),
        user,
        "approve",
    );
    assert!(page.contains("You are signed in"), "{page}");
    let r = poll(h, d["device_code"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn messages(h: &Harness, bearer: &str) -> Reply {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    h.send(
        Method::POST,
        "/v1/messages",
        &[
            ("authorization", &format!("Bearer {bearer}")),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_codes_device_sign_in_yields_a_short_lived_key_of_the_idp_user_and_team() {
    let Some((idp_module, browser_module)) = tools() else {
        return;
    };
    let idp = start_idp(&idp_module);
    let (h, _files) = gateway(&idp, "").await;

    // Discovery: every endpoint on this origin; no authorization endpoint (RFC 8628 only).
    let meta = h
        .send(Method::GET, "/.well-known/oauth-authorization-server", &[], "")
        .await
        .json();
    let base = h.url("");
    assert_eq!(meta["issuer"], base.as_str());
    for (k, path) in [
        ("device_authorization_endpoint", "/oauth/device_authorization"),
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
    ] {
        assert_eq!(meta[k], format!("{base}{path}"), "{meta}");
    }
    assert!(meta.get("authorization_endpoint").is_none());

    let d = device(&h).await;
    let user_code = d["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert_eq!(
        d["verification_uri_complete"],
        format!("{base}/device?user_code={user_code}")
    );
    assert_eq!(d["login_notice"], "Conduit test org: sign in with your corp account.");
    let device_code = d["device_code"].as_str().unwrap().to_string();
    assert!(device_code.len() >= 43, "≥ 256 bits");

    // Before approval: pending, then slow_down for polling faster than the interval.
    let r = poll(&h, &device_code).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (400, json!("authorization_pending"))
    );
    let r = poll(&h, &device_code).await;
    assert_eq!(r.json()["error"], "slow_down");
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let page = browser(
        &browser_module,
        d["verification_uri_complete"].as_str().unwrap(),
        "bob",
        "approve",
    );
    assert!(
        page.contains("You are signed in") && page.contains("bob@corp.example"),
        "{page}"
    );
    let r = poll(&h, &device_code).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json();
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    assert!(access.starts_with("ck_") && refresh.starts_with("crt_"), "{t}");
    assert_eq!(
        (t["token_type"].clone(), t["expires_in"].clone(), t["email"].clone()),
        (json!("Bearer"), json!(120), json!("bob@corp.example"))
    );
    // Single use.
    let again = poll(&h, &device_code).await;
    assert_eq!(again.json()["error"], "invalid_grant");

    // The token works like a stand-in key: attributed to the IdP user and the team of their group.
    let r = messages(&h, &access).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rows = h.spend(1).await;
    let row = rows
        .iter()
        .find(|r| r.owner == "bob@corp.example")
        .expect("bob's spend row");
    assert_eq!(row.team, "payments");
    assert!(
        row.key_id.starts_with("ses_"),
        "the ledger row is the session's: {}",
        row.key_id
    );

    // Managed settings of the team, with the checksum Claude Code computes; 304 on a match.
    let auth = format!("Bearer {access}");
    let r = h
        .send(Method::GET, "/managed/settings", &[("authorization", &auth)], "")
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(
        doc["settings"]["availableModels"],
        json!(["claude-sonnet-4-5", "claude-haiku-4-5"])
    );
    let mut canonical = String::new();
    conduit_gateway::idp::config::write_canonical(&doc["settings"], &mut canonical);
    let checksum = format!("sha256:{}", common::sha256_hex(canonical.as_bytes()));
    assert_eq!(doc["checksum"], checksum.as_str());
    assert_eq!(r.header("etag"), Some(format!("\"{checksum}\"").as_str()));
    let etag = format!("\"{checksum}\"");
    let r = h
        .send(
            Method::GET,
            "/managed/settings",
            &[("authorization", &auth), ("if-none-match", &etag)],
            "",
        )
        .await;
    assert_eq!(r.status, 304);
    // Usage (no budget: spend in cents, no limits) and the OTLP intake.
    let r = h
        .send(Method::GET, "/api/oauth/usage", &[("authorization", &auth)], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["limits"], json!([]));
    assert!(r.json()["extra_usage"]["daily"]["used_credits"].is_number());
    let r = h
        .send(
            Method::POST,
            "/v1/metrics",
            &[("authorization", &auth), ("content-type", "application/x-protobuf")],
            vec![0u8; 64],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .send(
            Method::GET,
            "/managed/settings",
            &[("authorization", "Bearer ck_nope")],
            "",
        )
        .await;
    assert_eq!(r.status, 401);

    // Refresh: a new pair; the presented refresh token is spent. Presented again at once (two
    // processes racing), it is refused without ending the session.
    let r = form(
        &h,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t2 = r.json();
    let (access2, refresh2) = (
        t2["access_token"].as_str().unwrap().to_string(),
        t2["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_ne!(access2, access);
    let r = form(
        &h,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (401, json!("invalid_grant"))
    );
    assert_eq!(
        messages(&h, &access2).await.status,
        200,
        "the session survives a racing refresh"
    );

    // `conduit users revoke`: the next request is refused, the refresh token too, and a new
    // sign-in is refused until restored.
    let ended = conduit_gateway::signin::revoke_user(&h.gateway().state, "bob@corp.example", "test")
        .await
        .unwrap();
    assert_eq!(ended.sessions_ended, 1);
    let r = messages(&h, &access2).await;
    r.assert_anthropic_error(401, "authentication_error", "revoked");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(
        messages(&h, &access).await.status,
        401,
        "the token before the refresh too"
    );
    let r = form(
        &h,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh2)],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (401, json!("invalid_grant"))
    );
    let d = device(&h).await;
    let page = browser(
        &browser_module,
        d["verification_uri_complete"].as_str().unwrap(),
        "bob",
        "approve",
    );
    assert!(page.contains("refused") && page.contains("administrator"), "{page}");
    assert_eq!(
        poll(&h, d["device_code"].as_str().unwrap()).await.json()["error"],
        "access_denied"
    );
    assert!(
        conduit_gateway::signin::restore_user(&h.gateway().state, "bob@corp.example")
            .await
            .unwrap()
    );
    let t3 = sign_in(&h, &browser_module, "bob").await;
    assert_eq!(messages(&h, t3["access_token"].as_str().unwrap()).await.status, 200);

    // A stolen refresh token used twice by the thief: the owner's later use of the original
    // (retired two rotations ago, past any grace) still ends the session.
    let refresh_of = |r: &Reply| r.json()["refresh_token"].as_str().unwrap().to_string();
    let stolen = t3["refresh_token"].as_str().unwrap().to_string();
    let grant = |t: String| {
        let h = &h;
        async move {
            form(
                h,
                "/oauth/token",
                &[("grant_type", "refresh_token"), ("refresh_token", &t)],
            )
            .await
        }
    };
    let r = grant(stolen.clone()).await;
    assert_eq!(r.status, 200);
    let r = grant(refresh_of(&r)).await;
    assert_eq!(r.status, 200);
    let (thief_access, thief_refresh) = (r.json()["access_token"].as_str().unwrap().to_string(), refresh_of(&r));
    assert_eq!(messages(&h, &thief_access).await.status, 200);
    let r = grant(stolen).await;
    assert!(
        String::from_utf8_lossy(&r.body).contains("session is ended"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        messages(&h, &thief_access).await.status,
        401,
        "the copy's session is over"
    );
    assert_eq!(grant(thief_refresh).await.status, 401);

    // Hygiene: no token, device code or refresh token in the store, the audit log or the logs'
    // files; the IdP's refresh token only sealed.
    let secrets = [
        access.as_str(),
        access2.as_str(),
        refresh.as_str(),
        refresh2.as_str(),
        device_code.as_str(),
    ];
    assert_nothing_holds(h.data.path(), &secrets);
}

/// Every file under `dir` is free of each of `secrets`.
fn assert_nothing_holds(dir: &std::path::Path, secrets: &[&str]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                files += 1;
                for s in secrets {
                    assert!(
                        !common::process::contains(&bytes, s),
                        "{} holds a secret ({}…)",
                        p.display(),
                        &s[..8]
                    );
                }
            }
        }
    }
    assert!(files > 3, "scanned {files} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idp_decides_who_gets_in_and_who_stays_in() {
    let Some((idp_module, browser_module)) = tools() else {
        return;
    };
    let idp = start_idp(&idp_module);
    let (h, _files) = gateway(&idp, "").await;

    // Another domain, and an unverified email: refused at the callback; the poll says access_denied.
    for (user, why) in [("carol", "other.example"), ("eve", "verified")] {
        let d = device(&h).await;
        let page = browser(
            &browser_module,
            d["verification_uri_complete"].as_str().unwrap(),
            user,
            "approve",
        );
        assert!(page.contains("refused") && page.contains(why), "{user}: {page}");
        let r = poll(&h, d["device_code"].as_str().unwrap()).await;
        assert_eq!(r.json()["error"], "access_denied", "{user}");
    }
    // The person chose Deny.
    let d = device(&h).await;
    let page = browser(
        &browser_module,
        d["verification_uri_complete"].as_str().unwrap(),
        "dana",
        "deny",
    );
    assert!(page.contains("stopped"), "{page}");
    assert_eq!(
        poll(&h, d["device_code"].as_str().unwrap()).await.json()["error"],
        "access_denied"
    );

    // Dana, in a group with no team mapping: signed in, no team, the default managed settings.
    let t = sign_in(&h, &browser_module, "dana").await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let r = h
        .send(
            Method::GET,
            "/managed/settings",
            &[("authorization", &format!("Bearer {access}"))],
            "",
        )
        .await;
    assert_eq!(r.json()["settings"]["availableModels"], json!(["claude-haiku-4-5"]));

    // Groups follow the IdP at each refresh: moved into payments-eng, dana's next token is payments'.
    let client = reqwest_like_post(&format!("{}/admin/groups?user=dana&groups=payments-eng", idp.url)).await;
    assert_eq!(client, "changed");
    let r = form(
        &h,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t2 = r.json();
    let key = h
        .gateway()
        .state
        .keys
        .by_hash(&conduit_gateway::keys::KeyHash::of(
            t2["access_token"].as_str().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.team.as_deref(), Some("payments"));

    // Deprovisioned at the IdP: the next refresh is refused, the session ends, its token with it.
    assert_eq!(
        reqwest_like_post(&format!("{}/admin/remove?user=dana", idp.url)).await,
        "removed"
    );
    let r = form(
        &h,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t2["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (401, json!("invalid_grant"))
    );
    assert_eq!(messages(&h, t2["access_token"].as_str().unwrap()).await.status, 401);
}

/// A POST with no body to the IdP's test hooks; the answer's text.
async fn reqwest_like_post(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::post(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forms_foreign_callbacks_and_revoked_tokens_are_refused() {
    let Some((idp_module, browser_module)) = tools() else {
        return;
    };
    let idp = start_idp(&idp_module);
    let (h, _files) = gateway(&idp, "").await;
    let d = device(&h).await;
    let code = d["user_code"].as_str().unwrap();

    // A form posted from elsewhere: no cookie, or a cookie without its token → 403, nothing approved.
    let body = conduit_gateway::idp::oidc::form(&[("user_code", code), ("action", "approve"), ("csrf", "x")]);
    for cookie in ["", "conduit_csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let r = h
            .send(
                Method::POST,
                "/device",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", cookie),
                ],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 403, "cookie {cookie:?}");
        assert!(r.header("location").is_none());
    }
    // The confirmation page: CSRF cookie SameSite=Strict, no framing, no script.
    let r = h.send(Method::GET, &format!("/device?user_code={code}"), &[], "").await;
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    // A callback that did not start in this browser: refused, even with the right state shape.
    let r = h
        .send(Method::GET, "/oauth/callback?code=abc&state=forged", &[], "")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        poll(&h, d["device_code"].as_str().unwrap()).await.json()["error"],
        "authorization_pending"
    );

    // Sign-out through the revocation endpoint (what Claude Code's /logout sends): refresh token.
    let t = sign_in(&h, &browser_module, "bob").await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(messages(&h, access).await.status, 200);
    let r = form(
        &h,
        "/oauth/revoke",
        &[
            ("token", t["refresh_token"].as_str().unwrap()),
            ("token_type_hint", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(messages(&h, access).await.status, 401);
    // Unknown tokens: 200 all the same (RFC 7009), and a stand-in key is not revocable this way.
    assert_eq!(form(&h, "/oauth/revoke", &[("token", "crt_unknown")]).await.status, 200);
    assert_eq!(form(&h, "/oauth/revoke", &[("token", &h.key)]).await.status, 200);
    assert_eq!(
        h.messages(r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#)
            .await
            .status,
        200
    );
}

/// A tmux server of its own, killed on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.0).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "cc"])
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", "cc", k]);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// `sh -c SCRIPT` in a private mount namespace where `policy` is /etc/claude-code: Claude Code's
/// machine-wide managed settings for this process only (this build reads no override variable).
fn in_policy_namespace(policy: &std::path::Path, script: &str) -> Command {
    std::fs::create_dir_all("/etc/claude-code").unwrap();
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c"]).arg(format!(
        "mount --bind '{}' /etc/claude-code && {script}",
        policy.display()
    ));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_claude_code_signs_in_with_login_and_its_requests_are_the_idp_users() {
    let Some((idp_module, browser_module)) = tools() else {
        return;
    };
    let claude = common::installed::require(
        "Claude Code 2.1.332 (claude-current)",
        common::installed::claude_current(),
    );
    let tmux = common::installed::require("tmux", common::installed::on_path("tmux"));
    let (Some(claude), Some(_)) = (claude, tmux) else {
        return;
    };
    let idp = start_idp(&idp_module);
    let (h, files) = gateway(&idp, "").await;
    let base = format!("http://{}", h.running.addr);
    let policy = files.path().join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("managed-settings.json"),
        json!({"forceLoginMethod": "gateway", "forceLoginGatewayUrl": base}).to_string(),
    )
    .unwrap();
    let home = files.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = format!(
        "cd '{}' && HOME='{}' exec '{}'",
        home.display(),
        home.display(),
        claude.display()
    );

    // Claude Code's own /login, in a terminal: the gateway screens, the device code, the browser.
    let t = Tmux(format!("conduit-signin-{}", std::process::id()));
    let cmd = in_policy_namespace(&policy, &run);
    let shell: Vec<String> = std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(
            cmd.get_args()
                .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"))),
        )
        .collect();
    t.run(&[
        "new-session",
        "-d",
        "-s",
        "cc",
        "-x",
        "180",
        "-y",
        "50",
        &shell.join(" "),
    ]);
    let mut approved = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let screen = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "Claude Code's sign-in did not finish:\n{}",
            t.screen()
        );
        std::thread::sleep(std::time::Duration::from_millis(700));
        let s = t.screen();
        if s.contains("Connected to Cloud gateway") {
            break s;
        } else if s.contains("Choose the text style") || s.contains("Enter to connect") {
            t.keys(&["Enter"]);
        } else if s.contains("Trust gateway") || s.contains("Signed in to Cloud gateway as") {
            assert!(!s.contains("Signed in") || s.contains("bob@corp.example"), "{s}");
            t.keys(&["Up", "Enter"]);
        } else if !approved && let Some(code) = s.split("Code:").nth(1).and_then(|r| r.split_whitespace().next()) {
            let page = browser(
                &browser_module,
                &format!("{base}/device?user_code={code}"),
                "bob",
                "approve",
            );
            assert!(page.contains("You are signed in"), "{page}");
            approved = true;
        }
    };
    assert!(approved, "{screen}");
    drop(t);
    let stored = std::fs::read_to_string(home.join(".claude/.credentials.json")).unwrap();
    assert!(
        stored.contains(&format!("\"url\":\"{base}\"")) && stored.contains("\"jwt\":\"ck_"),
        "Claude Code kept the gateway sign-in"
    );

    // `claude -p` goes through Conduit on the signed-in identity.
    let ask = |prompt: &str| {
        let out = in_policy_namespace(&policy, &format!("{run} -p '{prompt}' < /dev/null"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = ask("say hi");
    assert!(ok && said.contains("Conduit mock upstream"), "{said}");
    let rows = h.spend(1).await;
    let row = rows
        .iter()
        .find(|r| r.owner == "bob@corp.example")
        .unwrap_or_else(|| panic!("bob's row in {rows:?}"));
    assert_eq!(row.team, "payments");

    // Revoked: the next request is refused, at once.
    conduit_gateway::signin::revoke_user(&h.gateway().state, "bob@corp.example", "test")
        .await
        .unwrap();
    // Claude Code reads the 401 (x-should-retry: false) as the end of the session, and says so.
    let (ok, said) = ask("say hi again");
    assert!(!ok && said.contains("no longer accepts this session"), "{said}");
    assert_eq!(h.mock_log().await.len(), 1, "nothing more reached the provider");
}

/// Runs a client to completion (180 s at most); whether it succeeded, and what it printed.
fn run_client(mut cmd: Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conduit_login_and_token_sign_in_codex_and_claude_code() {
    let Some((idp_module, browser_module)) = tools() else {
        return;
    };
    let codex = common::installed::require("Codex (codex)", common::installed::node_bin("codex"));
    let claude = common::installed::require("Claude Code (claude)", common::installed::node_bin("claude"));
    let (Some(codex), Some(claude)) = (codex, claude) else {
        return;
    };
    let idp = start_idp(&idp_module);
    let (h, files) = gateway(&idp, "").await;
    let base = format!("http://{}", h.running.addr);
    let creds = files.path().join("cfg/conduit/credentials.json");
    let bin = common::process::BIN;

    // `conduit login`: prints the link and code on stderr, waits for the browser leg.
    let mut login = Command::new(bin)
        .args(["login", "--gateway", &base])
        .env("CONDUIT_CREDENTIALS", &creds)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(login.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("To sign in, open ") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "conduit login said nothing useful"
        );
    }
    let url = line.trim().trim_start_matches("To sign in, open ").to_string();
    let page = browser(&browser_module, &url, "bob", "approve");
    assert!(page.contains("You are signed in"), "{page}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = login.wait().unwrap();
    assert!(
        status.success() && rest.contains("Signed in to") && rest.contains("bob@corp.example"),
        "{rest}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);

    let token = || {
        let out = Command::new(bin)
            .arg("token")
            .env("CONDUIT_CREDENTIALS", &creds)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let first = token();
    assert!(first.starts_with("ck_"), "{first}");
    assert_eq!(token(), first, "a token with time left is reused");

    // Codex, its provider's key from `conduit token` (auth.command).
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(&codex);
    c.args(["exec", "--skip-git-repo-check"]);
    for a in [
        "model_provider=\"conduit\"".to_string(),
        "model_providers.conduit.name=\"Conduit\"".into(),
        format!("model_providers.conduit.base_url=\"{base}/v1\""),
        "model_providers.conduit.wire_api=\"responses\"".into(),
        format!("model_providers.conduit.auth.command=\"{bin}\""),
        "model_providers.conduit.auth.args=[\"token\"]".into(),
    ] {
        c.args(["-c", &a]);
    }
    c.arg("say hello")
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("CODEX_HOME", home.path())
        .env("CONDUIT_CREDENTIALS", &creds)
        .env("RUST_LOG", "warn");
    let (ok, said) = run_client(c);
    assert!(ok && said.contains("Conduit mock upstream"), "{said}");

    // Claude Code, its key from `conduit token` (apiKeyHelper).
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(&claude);
    c.args([
        "-p",
        "say hello",
        "--settings",
        &json!({"apiKeyHelper": format!("{bin} token")}).to_string(),
    ])
    .current_dir(home.path())
    .env("HOME", home.path())
    .env("ANTHROPIC_BASE_URL", &base)
    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    .env("CONDUIT_CREDENTIALS", &creds)
    .env_remove("ANTHROPIC_API_KEY");
    let (ok, said) = run_client(c);
    assert!(ok && said.contains("Conduit mock upstream"), "{said}");
    let rows = h.spend(2).await;
    let mine: Vec<_> = rows.iter().filter(|r| r.owner == "bob@corp.example").collect();
    assert!(
        mine.iter().any(|r| r.provider == "openai") && mine.iter().any(|r| r.provider == "anthropic"),
        "{rows:?}"
    );

    // Near expiry, `conduit token` refreshes (the gateway re-checks the IdP).
    let mut stored: Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    stored["expires_at"] = json!(conduit_gateway::clock::now_unix() + 30);
    std::fs::write(&creds, stored.to_string()).unwrap();
    let second = token();
    assert!(second.starts_with("ck_") && second != first, "refreshed");
    assert_eq!(messages(&h, &second).await.status, 200);

    // `conduit logout` revokes at the gateway.
    let out = Command::new(bin)
        .arg("logout")
        .env("CONDUIT_CREDENTIALS", &creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!creds.exists());
    assert_eq!(messages(&h, &second).await.status, 401);
}

fn dashboard_sso(module: &std::path::Path, h: &Harness, idp: &Idp, user: &str) -> Value {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signin/dashboard_sso.cjs"))
        .args([&format!("http://{}", h.running.admin_addr), &idp.url, user, &h.key_id])
        .env("PLAYWRIGHT_CORE", module)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "dashboard SSO failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sso_gives_each_idp_group_exactly_its_role() {
    let Some((idp_module, browser_module)) = tools() else {
        return;
    };
    let idp = start_idp(&idp_module);
    let roles =
        "[signin.admin_roles]\nadmin = [\"conduit-admins\"]\nfinance = [\"finance-team\"]\nsecurity = [\"sec-team\"]\n";
    let (h, _files) = gateway(&idp, roles).await;

    // Finance: sees the dashboard, sets a budget through its session; may not change a policy
    // mode; a change without the CSRF header is refused; the session cookie is HttpOnly, Strict.
    let fin = dashboard_sso(&browser_module, &h, &idp, "fin");
    assert_eq!(fin["who"], "sso:fin@corp.example · finance", "{fin}");
    assert_eq!(fin["cookie"], json!({"httpOnly": true, "sameSite": "Strict"}), "{fin}");
    assert_eq!(fin["promoteDisabled"], true);
    assert_eq!(
        fin["put"],
        json!({"budget": 200, "mode": 403, "budgetWithoutCsrf": 403}),
        "{fin}"
    );
    // A cross-origin POST riding the cookie did not revoke the key.
    let key = h.gateway().state.keys.by_id(&h.key_id).await.unwrap().unwrap();
    assert!(key.revoked_at.is_none(), "a cross-origin POST revoked a key");

    // Admin: everything.
    let ann = dashboard_sso(&browser_module, &h, &idp, "ann");
    assert_eq!(ann["roles"], "admin", "{ann}");
    assert_eq!(
        ann["put"],
        json!({"budget": 200, "mode": 200, "budgetWithoutCsrf": 403}),
        "{ann}"
    );

    // Someone in no admin group: refused at the callback.
    let bob = dashboard_sso(&browser_module, &h, &idp, "bob");
    assert_eq!(bob["refused"], "No dashboard role", "{bob}");

    // The audit names the SSO actors.
    h.gateway().audit.sync();
    let mut out = Vec::new();
    conduit_gateway::audit::export::export(
        h.gateway().audit.dir(),
        &Default::default(),
        conduit_gateway::audit::export::Format::Jsonl,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\"actor\":\"sso:fin@corp.example\"") && text.contains("\"actor\":\"sso:ann@corp.example\""));
}

/// Review of issue 20: a sign-in form (or telemetry batch) that never arrives is cut like any
/// request body, by `limits.body_read_timeout_secs` — before, its read had no deadline, so a few
/// connections posting to the unauthenticated `/oauth/token` could hold every place under
/// `limits.max_in_flight`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_form_that_never_arrives_is_cut_by_the_body_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((idp_module, _)) = tools() else {
        return;
    };
    let idp = start_idp(&idp_module);
    let (h, _files) = gateway(&idp, "\n[limits]\nbody_read_timeout_secs = 1\nmax_in_flight = 2\n").await;
    let mut held = Vec::new();
    for path in ["/oauth/token", "/oauth/revoke"] {
        let mut c = tokio::net::TcpStream::connect(h.running.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: conduit\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 65536\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.unwrap();
        held.push(c);
    }
    for c in &mut held {
        let mut got = [0u8; 512];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), c.read(&mut got))
            .await
            .expect("a form that never arrives is cut")
            .unwrap();
        let got = String::from_utf8_lossy(&got[..n]);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    }
    // Both places are back: the gateway serves.
    assert_eq!(h.send(Method::GET, "/", &[], "").await.status, 200);
}
