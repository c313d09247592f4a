//! The admin API's roles: scoped admin tokens reach exactly their role's surface, expire and are
//! revocable; the bootstrap token can be turned off; every change is an audit record naming who
//! did what to which object, with a setting's before and after — and never a secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Harness};
use http::Method;
use serde_json::{Value, json};

async fn token_for(h: &Harness, roles: &[&str]) -> String {
    let expires = conduit_gateway::clock::now_unix() + 86_400;
    let r = h
        .admin_call(
            Method::POST,
            "/v1/admin-tokens",
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            &json!({"roles": roles, "expires_at": expires, "name": roles.join("+")}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert!(t.starts_with("cas_"));
    t
}

async fn call(h: &Harness, token: &str, method: Method, path: &str, body: &str) -> u16 {
    h.admin_call(
        method,
        path,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
    .status
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_exactly_its_surface_and_every_change_is_audited() {
    let h = Harness::start().await;
    let viewer = token_for(&h, &["viewer"]).await;
    let finance = token_for(&h, &["finance"]).await;
    let security = token_for(&h, &["security"]).await;
    let budget = r#"{"daily_micros": 5000000}"#;
    let mode = r#"{"mode": "block"}"#;
    let new_key = r#"{"owner": "zed@corp.example"}"#;
    // (method, path, body, [viewer, finance, security] allowed?)
    let table: &[(Method, &str, &str, [bool; 3])] = &[
        (Method::GET, "/v1/spend?by=team", "", [true, true, true]),
        (Method::GET, "/v1/budgets", "", [true, true, true]),
        (Method::GET, "/v1/keys", "", [true, true, true]),
        (Method::GET, "/v1/findings/stats", "", [true, true, true]),
        (Method::GET, "/v1/audit/verify", "", [false, false, true]),
        (Method::GET, "/v1/audit/export?format=jsonl", "", [false, false, true]),
        (Method::PUT, "/v1/budgets/team:payments", budget, [false, true, false]),
        (Method::PUT, "/v1/policies/modes/secrets", mode, [false, false, true]),
        (Method::POST, "/v1/keys", new_key, [false, false, false]),
        (
            Method::PUT,
            "/v1/credentials/openai",
            r#"{"secret": "sk-proj-NEWCANARY0000000000000000000000"}"#,
            [false, false, false],
        ),
        (Method::GET, "/v1/admin-tokens", "", [false, false, false]),
    ];
    for (method, path, body, allowed) in table {
        for (i, token) in [&viewer, &finance, &security].into_iter().enumerate() {
            let status = call(&h, token, method.clone(), path, body).await;
            let role = ["viewer", "finance", "security"][i];
            if allowed[i] {
                assert!(status < 400, "{role} {method} {path} → {status}");
            } else {
                assert_eq!(status, 403, "{role} {method} {path}");
            }
        }
    }
    // A refusal names the role it needs.
    let r = h
        .admin_call(
            Method::POST,
            "/v1/keys",
            &[("authorization", &format!("Bearer {finance}"))],
            new_key,
        )
        .await;
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("admin role") && msg.contains("finance"), "{msg}");

    // The audit: finance's budget change with before/after; the refused key creation too; no secret.
    h.gateway().audit.sync();
    let export = h
        .admin_call(
            Method::GET,
            "/v1/audit/export?format=jsonl",
            &[("authorization", &format!("Bearer {security}"))],
            "",
        )
        .await;
    let text = String::from_utf8_lossy(&export.body).into_owned();
    let admin: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["treatment"] == "admin")
        .collect();
    let set = admin
        .iter()
        .find(|r| r["admin"]["action"] == "budget.set" && r["status"] == 200)
        .unwrap_or_else(|| panic!("no budget.set record in {admin:?}"));
    assert!(
        set["admin"]["actor"].as_str().unwrap().starts_with("token:adm_"),
        "{set}"
    );
    assert_eq!(set["admin"]["roles"], "finance");
    assert_eq!(set["admin"]["object"], "team:payments");
    let change: Value = serde_json::from_str(set["admin"]["change"].as_str().unwrap()).unwrap();
    assert_eq!(change["before"], Value::Null);
    assert_eq!(change["after"]["daily_micros"], 5_000_000);
    let mode = admin
        .iter()
        .find(|r| r["admin"]["action"] == "policy.mode" && r["status"] == 200)
        .unwrap();
    assert_eq!(mode["admin"]["object"], "secrets");
    assert!(
        admin
            .iter()
            .any(|r| r["admin"]["action"] == "key.create" && r["status"] == 403),
        "refusals are recorded"
    );
    assert!(admin.iter().any(|r| r["admin"]["action"] == "admin-token.create"));
    for secret in [
        viewer.as_str(),
        finance.as_str(),
        security.as_str(),
        "NEWCANARY",
        ADMIN_TOKEN,
    ] {
        assert!(!text.contains(secret), "the audit holds a secret");
    }
    conduit_gateway::audit::chain::verify_against(h.gateway().audit.dir(), None).expect("the chain holds");

    // Revoked and expired tokens are refused.
    let list: Value = h.admin_get("/v1/admin-tokens").await.json();
    let finance_id = list["admin_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["roles"] == json!(["finance"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        call(
            &h,
            ADMIN_TOKEN,
            Method::POST,
            &format!("/v1/admin-tokens/{finance_id}/revoke"),
            ""
        )
        .await,
        200
    );
    let r = h.admin_get_with_token("/v1/budgets", &finance).await;
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("revoked"));
    let past = h
        .admin_call(
            Method::POST,
            "/v1/admin-tokens",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            &json!({"roles": ["viewer"], "expires_at": 1}).to_string(),
        )
        .await;
    assert_eq!(past.status, 400, "an expiry in the past is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_token_can_be_turned_off() {
    let h = Harness::builder()
        .toml("[admin]\nbootstrap_token = false\n")
        .start()
        .await;
    let r = h.admin_get("/v1/keys").await;
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("bootstrap_token = false"));
    // A scoped token created offline (`conduit admin-tokens create` against the store) works.
    let (token, _) = conduit_gateway::admin_auth::create_token(
        &h.gateway().state,
        vec![conduit_gateway::admin_auth::Role::Admin],
        conduit_gateway::clock::now_unix() + 3600,
        None,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(h.admin_get_with_token("/v1/keys", &token).await.status, 200);
}

/// Offboarding reaches the dashboard: revoking a person ends their SSO sessions, refuses any
/// session record of theirs that is left (blocked users are checked on every call), and revokes
/// the scoped admin tokens they created; an email with `+` is the person it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_person_ends_their_dashboard_sessions_and_tokens() {
    use conduit_gateway::admin_auth::{ADMIN_SESSION, AdminSession, Role};
    use conduit_state::signin::{Records, hash};
    let h = Harness::start().await;
    let email = "alice+ops@corp.example";
    let now = conduit_gateway::clock::now_unix();
    let session = AdminSession {
        email: email.into(),
        roles: vec![Role::Admin],
        created_at: now,
        expires_at: now + 3600,
    };
    let records = Records(h.gateway().state.signin.as_ref());
    let cookie = "dashboard-cookie-secret-value-0123456789abcdef";
    records
        .create(&format!("{ADMIN_SESSION}{}", hash(cookie)), &session)
        .await
        .unwrap();
    let with_cookie = |path: &'static str| {
        let h = &h;
        async move {
            h.admin_call(Method::GET, path, &[("cookie", &format!("conduit_admin={cookie}"))], "")
                .await
        }
    };
    assert_eq!(with_cookie("/v1/keys").await.status, 200);
    // A token they create from the dashboard session (as the page's CSRF header allows).
    let (created, _) = conduit_gateway::admin_auth::create_token(
        &h.gateway().state,
        vec![Role::Admin],
        now + 3600,
        None,
        &format!("sso:{email}"),
    )
    .await
    .unwrap();
    let bystander = token_for(&h, &["viewer"]).await;

    let r = h
        .admin_call(
            Method::POST,
            "/v1/users/alice+ops@corp.example/revoke",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["user"], email, "`+` is a plus in a path segment: {v}");
    assert_eq!(v["admin_sessions_ended"], 1, "{v}");
    assert_eq!(v["admin_tokens_revoked"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(with_cookie("/v1/keys").await.status, 401, "the session is gone");
    assert_eq!(h.admin_get_with_token("/v1/keys", &created).await.status, 401);
    assert_eq!(
        h.admin_get_with_token("/v1/keys", &bystander).await.status,
        200,
        "tokens others created stay"
    );
    // A session record that outlived the revocation (another replica wrote it) is still refused.
    records
        .create(&format!("{ADMIN_SESSION}{}", hash(cookie)), &session)
        .await
        .unwrap();
    let r = with_cookie("/v1/keys").await;
    assert_eq!(r.status, 401);
    assert!(
        String::from_utf8_lossy(&r.body).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let users = h.admin_get("/v1/users").await.json();
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == email && !u["blocked_at"].is_null()),
        "{users}"
    );
}
