//! The admin API, on its own listener (default 127.0.0.1:8081), behind a bearer admin token
//! compared in constant time. JSON in and out; the CLI is a client of exactly these endpoints.
//!
//! ```text
//! GET  /livez, /healthz                  the process answers (no token; liveness)
//! GET  /readyz                           the state backend answers, the audit log is writable and no shutdown
//!                                          has begun (no token)
//! GET  /v1/keys                          list keys (never secrets)
//! POST /v1/keys                          create {owner, team?, name?, expires_at?} → {key, record}
//! GET  /v1/keys/{id}                     one key
//! POST /v1/keys/{id}/revoke              revoke; effective on the next request
//! GET  /v1/credentials                   credential metadata (write-only: no plaintext, ever)
//! PUT  /v1/credentials/{provider}        set {secret}
//! POST /v1/credentials/rotate-master     re-seal everything under {master_key} (base64)
//! GET  /v1/spend?by=team&since=&until=   spend report (by key|owner|team|model|day, UTC days)
//! PATCH /v1/keys/{id}                    {limits: {rpm?, tpm?, max_streams?}} (0 clears a limit)
//! GET  /v1/budgets                       budgets with spent and reserved in the current periods
//! PUT  /v1/budgets/{scope}               {daily_micros?, monthly_micros?} for org, team:NAME, key:ID
//! GET  /v1/prices                        the price table in force (shipped + overrides)
//! POST /v1/prices/import                 {content} LiteLLM JSON or [[price]] TOML → overrides
//! GET  /v1/audit/export?format=csv|json|jsonl&since=&until=&team=&key=   streamed
//! GET  /v1/audit/verify                  re-walk the hash chain; names the first broken record
//! GET  /v1/rot?by=model|team|key|all&since=&until=   context rot by input-token bucket
//! GET  /v1/sessions?since=&until=&limit= sessions by hashed id; context growth and cost
//! GET  /v1/policies                     every policy's status, the mode table, the set digest
//! PUT  /v1/policies/modes/{category}     {mode: off|alert|block}; persisted, applied at once
//! GET  /v1/findings?limit=               policy findings, newest first (metadata, never the text)
//! GET  /v1/findings/stats                per category: alerts, blocks, false positives, mode now
//! POST /v1/findings/{id}/false-positive  {by?}: feedback for tuning a category
//! GET  /metrics                          Prometheus text format
//! GET  /dashboard                        the dashboard page (its data calls carry the token)
//! ```

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use zeroize::Zeroizing;

use crate::body::GatewayBody;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::operator;
use crate::seal::MasterKey;

const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// Handles one admin request.
pub async fn handle(gw: &Gateway, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<GatewayBody> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        // Alive: the process answers. Never touches the store or the audit log, so a liveness
        // probe does not restart a gateway that is only waiting for PostgreSQL or disk space.
        (&Method::GET, "/healthz" | "/livez") => return reply(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if gw.draining.load(std::sync::atomic::Ordering::Relaxed) {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining: this gateway is shutting down; in-flight requests are finishing",
                );
            }
            if let Some(why) = gw.audit.failing() {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the audit log cannot be written: {why}"),
                );
            }
            return match gw.state.meta.ping().await {
                Ok(()) => reply(StatusCode::OK, json!({"status": "ready"})),
                Err(e) => problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the store is not usable: {e}"),
                ),
            };
        }
        _ => {}
    }
    if let Some(page) = crate::dashboard::asset(&method, &path) {
        // The page holds no data; every call it makes carries the admin token.
        return page;
    }
    if crate::signin::admin::serves(&path) {
        return crate::signin::admin::handle(gw, req, peer).await;
    }
    let caller = match crate::admin_auth::caller(gw, req.headers()).await {
        Ok(c) => c,
        Err(why) => return problem(StatusCode::UNAUTHORIZED, &why),
    };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let need = crate::admin_auth::needed(&method, &segments);
    let changes = !(method == Method::GET || method == Method::HEAD);
    let refusal = if !caller.may(need) {
        Some(format!(
            "{} (roles {}) may not {method} {path}: it needs the {} role; ask a Conduit administrator",
            caller.actor,
            caller.roles_text(),
            need.as_str()
        ))
    } else if changes
        && let Some(session) = &caller.session
        && !crate::signin::admin::csrf_ok(gw, req.headers(), session)
    {
        Some(
            "a change made with the dashboard's session needs its x-conduit-csrf header (from GET /auth/whoami)".into(),
        )
    } else {
        None
    };
    let attempt = Attempt {
        gw,
        caller: &caller,
        peer,
        method: &method,
        segments: &segments,
        started_ms: crate::clock::now_ms(),
    };
    if let Some(why) = refusal {
        // A refused attempt to change something is on the record too.
        if changes {
            attempt.record(StatusCode::FORBIDDEN, None, None).await;
        }
        return problem(StatusCode::FORBIDDEN, &why);
    }
    if !changes {
        return serve(gw, req, &method, &path, &segments, &caller).await;
    }
    // Every change is an audit record: who, what, which object, and a setting's before/after.
    let before = crate::admin_auth::setting(gw, &segments).await;
    let response = serve(gw, req, &method, &path, &segments, &caller).await;
    let after = crate::admin_auth::setting(gw, &segments).await;
    attempt.record(response.status(), before, after).await;
    response
}

/// An admin call that changes (or tried to change) something: what its audit record names.
struct Attempt<'a> {
    gw: &'a Gateway,
    caller: &'a crate::admin_auth::Caller,
    peer: std::net::SocketAddr,
    method: &'a Method,
    segments: &'a [&'a str],
    started_ms: i64,
}

impl Attempt<'_> {
    /// Writes the audit record of the change, with a setting's before and after.
    async fn record(&self, status: StatusCode, before: Option<serde_json::Value>, after: Option<serde_json::Value>) {
        let Attempt {
            gw,
            caller,
            peer,
            method,
            segments,
            started_ms,
        } = *self;
        let (action, object) = crate::admin_auth::action(method, segments);
        let change = match (before, after) {
            (Some(b), Some(a)) => Some(json!({"before": b, "after": a}).to_string()),
            _ => None,
        };
        let template = segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i >= 2
                    && !matches!(
                        *s,
                        "revoke" | "restore" | "import" | "modes" | "false-positive" | "rotate-master"
                    )
                {
                    "{id}"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let record = crate::audit::AuditRecord {
            request_id: gw.request_ids.next(),
            start_ms: started_ms,
            end_ms: crate::clock::now_ms(),
            owner: Some(caller.actor.clone()),
            client: "admin".into(),
            client_ip: peer.ip().to_string(),
            method: method.to_string(),
            path: format!("/{template}"),
            treatment: "admin".into(),
            status: status.as_u16(),
            outcome: if status.is_success() {
                "complete".into()
            } else {
                "refused".into()
            },
            admin: Some(crate::audit::AdminAction {
                actor: caller.actor.clone(),
                roles: caller.roles_text(),
                action,
                object,
                change,
            }),
            ..Default::default()
        };
        if let Some(pending) = gw.audit.record(record) {
            let _ = pending.await;
        }
    }
}

/// Serves an authenticated, authorized admin request.
async fn serve(
    gw: &Gateway,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
    segments: &[&str],
    caller: &crate::admin_auth::Caller,
) -> Response<GatewayBody> {
    let method = method.clone();
    match (&method, segments) {
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(GatewayBody::full(gw.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return r;
        }
        (&Method::GET, ["v1", "audit", "export"]) => return audit_export(gw, req.uri().query()).await,
        _ => {}
    }
    let result = match (&method, segments) {
        (&Method::GET, ["v1", "audit", "verify"]) => {
            let (log, dir) = (gw.audit.clone(), gw.audit.dir().to_path_buf());
            let checkpoint = match crate::gateway::audit_checkpoint(&gw.state, gw.config.replica_id()).await {
                Ok(c) => c,
                Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            };
            blocking(move || {
                log.sync();
                crate::audit::chain::verify_against(&dir, checkpoint.as_ref()).map(|v| json!(v))
            })
            .await
            .map(|v| (StatusCode::OK, v))
        }
        (&Method::GET, ["v1", "rot"]) => {
            let q = query_pairs(req.uri().query());
            let (log, dir) = (gw.audit.clone(), gw.audit.dir().to_path_buf());
            blocking(move || {
                let by = crate::audit::rot::By::parse(q.get("by").map(String::as_str).unwrap_or("model"))?;
                let filter = crate::audit::time_filter(
                    q.get("since").map(String::as_str),
                    q.get("until").map(String::as_str),
                    Some(30),
                )?;
                log.sync();
                crate::audit::rot_report(&dir, &filter, by)
            })
            .await
            .map(|v| (StatusCode::OK, v))
        }
        (&Method::GET, ["v1", "sessions"]) => {
            let q = query_pairs(req.uri().query());
            let (log, dir) = (gw.audit.clone(), gw.audit.dir().to_path_buf());
            blocking(move || {
                let filter = crate::audit::time_filter(
                    q.get("since").map(String::as_str),
                    q.get("until").map(String::as_str),
                    Some(30),
                )?;
                let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50usize);
                log.sync();
                crate::audit::sessions_report(&dir, &filter, limit).map(|s| json!(s))
            })
            .await
            .map(|v| (StatusCode::OK, v))
        }
        (&Method::GET, ["v1", "keys"]) => gw.state.keys.list().await.map(|k| (StatusCode::OK, json!({"keys": k}))),
        (&Method::POST, ["v1", "keys"]) => match body::<operator::NewKeyRequest>(req).await {
            Ok(r) => operator::create_key(gw.state.keys.as_ref(), r)
                .await
                .map(|c| (StatusCode::CREATED, json!(c))),
            Err(e) => Err(e),
        },
        (&Method::GET, ["v1", "keys", id]) => operator::key(gw.state.keys.as_ref(), id)
            .await
            .map(|k| (StatusCode::OK, json!(k))),
        (&Method::POST, ["v1", "keys", id, "revoke"]) => {
            operator::revoke_key(gw.state.keys.as_ref(), id).await.map(|k| {
                tracing::info!(key_id = %k.id, owner = %k.owner, "key revoked");
                (StatusCode::OK, json!(k))
            })
        }
        (&Method::GET, ["v1", "admin-tokens"]) => crate::admin_auth::tokens(&gw.state)
            .await
            .map(|t| (StatusCode::OK, json!({"admin_tokens": t}))),
        (&Method::POST, ["v1", "admin-tokens"]) => match body::<NewAdminToken>(req).await {
            Ok(r) => crate::admin_auth::create_token(&gw.state, r.roles, r.expires_at, r.name, &caller.actor)
                .await
                .map(|(token, record)| (StatusCode::OK, json!({"token": token, "record": record}))),
            Err(e) => Err(e),
        },
        (&Method::POST, ["v1", "admin-tokens", id, "revoke"]) => crate::admin_auth::revoke_token(&gw.state, id)
            .await
            .map(|t| (StatusCode::OK, json!(t))),
        (&Method::GET, ["v1", "users"]) => crate::signin::users(&gw.state)
            .await
            .map(|u| (StatusCode::OK, json!({"users": u}))),
        (&Method::POST, ["v1", "users", email, "revoke"]) => {
            let email = crate::percent::decode(email);
            crate::signin::revoke_user(&gw.state, &email, &caller.actor)
                .await
                .map(|r| {
                    (
                        StatusCode::OK,
                        json!({
                            "user": email.to_ascii_lowercase(),
                            "sessions_ended": r.sessions_ended,
                            "admin_sessions_ended": r.admin_sessions_ended,
                            "admin_tokens_revoked": r.admin_tokens_revoked,
                            "blocked": true,
                        }),
                    )
                })
        }
        (&Method::POST, ["v1", "users", email, "restore"]) => {
            let email = crate::percent::decode(email);
            crate::signin::restore_user(&gw.state, &email).await.map(|was| {
                (
                    StatusCode::OK,
                    json!({"user": email.to_ascii_lowercase(), "was_blocked": was}),
                )
            })
        }
        (&Method::GET, ["v1", "credentials"]) => operator::credentials(gw.state.credentials.as_ref())
            .await
            .map(|c| (StatusCode::OK, json!({"credentials": c}))),
        (&Method::POST, ["v1", "credentials", "rotate-master"]) => match body::<RotateRequest>(req).await {
            Ok(r) => match MasterKey::from_base64(&r.master_key, "master_key") {
                Ok(new) => {
                    let id = new.id().to_string();
                    gw.rotate_master_key(new).await.map(|n| {
                        tracing::warn!(resealed = n, master_key_id = %id, "master key rotated");
                        (StatusCode::OK, json!({"resealed": n, "master_key_id": id}))
                    })
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (&Method::PATCH, ["v1", "keys", id]) => {
            let id = id.to_string();
            match body::<KeyUpdate>(req).await {
                Ok(u) => operator::update_key_limits(gw.state.keys.as_ref(), &id, u.limits)
                    .await
                    .map(|k| (StatusCode::OK, json!(k))),
                Err(e) => Err(e),
            }
        }
        (&Method::GET, ["v1", "budgets"]) => gw
            .state
            .budgets
            .status(crate::clock::now_unix())
            .await
            .map(|b| (StatusCode::OK, json!({"budgets": b}))),
        (&Method::PUT, ["v1", "budgets", scope]) => {
            // A path segment: `%40` is `@`, and `+` is a plus (as in `user:a+ci@corp.example`).
            let scope = crate::percent::decode(scope);
            match body::<crate::records::BudgetLimit>(req).await {
                Ok(limit) => gw.state.budgets.set(&scope, limit).await.map(|()| {
                    tracing::info!(scope = %scope, "budget set");
                    (StatusCode::OK, json!({"scope": scope, "limit": limit}))
                }),
                Err(e) => Err(e),
            }
        }
        (&Method::GET, ["v1", "spend"]) => {
            let q = query_pairs(req.uri().query());
            let by = crate::ledger::By::parse(q.get("by").map(String::as_str).unwrap_or("team"));
            let range = operator::spend_range(q.get("since").map(String::as_str), q.get("until").map(String::as_str));
            match (by, range) {
                (Ok(by), Ok((since, until))) => {
                    gw.ledger.flush().await;
                    operator::spend(gw.state.spend.as_ref(), by, &since, &until)
                        .await
                        .map(|r| (StatusCode::OK, json!(r)))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        (&Method::GET, ["v1", "policies"]) => match &gw.policies {
            Some(p) => Ok((StatusCode::OK, p.listing())),
            None => Err(Error::msg("the policy stage is disabled ([policies] enabled = false)")),
        },
        (&Method::PUT, ["v1", "policies", "modes", category]) => {
            let category = category.to_string();
            match body::<SetMode>(req).await {
                Ok(m) => gw
                    .set_policy_mode(&category, &m.mode)
                    .await
                    .map(|()| (StatusCode::OK, json!({"category": category, "mode": m.mode}))),
                Err(e) => Err(e),
            }
        }
        (&Method::GET, ["v1", "findings"]) => {
            let q = query_pairs(req.uri().query());
            let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100usize);
            gw.state
                .findings
                .list(limit)
                .await
                .map(|f| (StatusCode::OK, json!({"findings": f})))
        }
        (&Method::GET, ["v1", "findings", "stats"]) => gw.state.findings.list(usize::MAX).await.map(|f| {
            let stats = operator::finding_stats(&f);
            // The mode each category runs in now, so a reader can promote alert → block.
            let modes: serde_json::Map<String, serde_json::Value> = match &gw.policies {
                Some(p) => {
                    let m = p.modes();
                    stats
                        .keys()
                        .map(|c| (c.clone(), json!(m.mode_for(c).as_str())))
                        .collect()
                }
                None => serde_json::Map::new(),
            };
            (StatusCode::OK, json!({"categories": stats, "modes": modes}))
        }),
        (&Method::POST, ["v1", "findings", id, "false-positive"]) => {
            let id = id.to_string();
            match body::<FalsePositive>(req).await {
                Ok(fp) => operator::mark_false_positive(gw.state.findings.as_ref(), &id, &fp.by)
                    .await
                    .map(|r| (StatusCode::OK, json!(r))),
                Err(e) => Err(e),
            }
        }
        (&Method::GET, ["v1", "prices"]) => Ok((StatusCode::OK, json!({"prices": gw.prices().rows()}))),
        (&Method::POST, ["v1", "prices", "import"]) => match body::<ImportPrices>(req).await {
            Ok(r) => match operator::parse_price_file(&r.content) {
                Ok(imported) => {
                    let skipped = imported.skipped.clone();
                    gw.add_price_overrides(imported.rows)
                        .await
                        .map(|n| (StatusCode::OK, json!({"imported": n, "skipped": skipped})))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (&Method::PUT, ["v1", "credentials", provider]) => {
            let provider = provider.to_string();
            match body::<SetCredential>(req).await {
                Ok(r) => gw.set_credential(&provider, r.secret).await.map(|c| {
                    tracing::info!(provider = %c.provider, version = c.version, "credential set");
                    (StatusCode::OK, json!(c))
                }),
                Err(e) => Err(e),
            }
        }
        _ => {
            return problem(StatusCode::NOT_FOUND, &format!("no admin endpoint {method} {path}"));
        }
    };
    match result {
        Ok((status, value)) => reply(status, value),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// Runs store or file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::msg(format!("admin task failed: {e}")))?
}

/// Streams an audit export: written on a blocking thread into the response body, a chunk at a time.
async fn audit_export(gw: &Gateway, query: Option<&str>) -> Response<GatewayBody> {
    let q = query_pairs(query);
    let format = match crate::audit::export::Format::parse(q.get("format").map(String::as_str).unwrap_or("jsonl")) {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut filter = match crate::audit::time_filter(
        q.get("since").map(String::as_str),
        q.get("until").map(String::as_str),
        None,
    ) {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    filter.team = q.get("team").cloned();
    filter.key = q.get("key").cloned();
    let (log, dir) = (gw.audit.clone(), gw.audit.dir().to_path_buf());
    let (mut writer, body) = crate::body::ChannelWriter::new();
    tokio::task::spawn_blocking(move || {
        log.sync();
        match crate::audit::export::export(&dir, &filter, format, &mut writer) {
            Ok(n) => tracing::info!(records = n, "audit exported"),
            Err(e) => {
                tracing::warn!(error = %e, "audit export stopped");
                writer.fail(e.to_string());
            }
        }
    });
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
struct NewAdminToken {
    roles: Vec<crate::admin_auth::Role>,
    expires_at: i64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct SetMode {
    mode: String,
}

#[derive(Deserialize)]
struct FalsePositive {
    #[serde(default = "admin_marker")]
    by: String,
}

fn admin_marker() -> String {
    "admin".into()
}

#[derive(Deserialize)]
struct SetCredential {
    secret: Zeroizing<String>,
}

#[derive(Deserialize)]
struct KeyUpdate {
    limits: crate::records::RateLimits,
}

#[derive(Deserialize)]
struct ImportPrices {
    content: String,
}

/// `a=1&b=2` → map (no percent-decoding needed for the values the API takes).
fn query_pairs(q: Option<&str>) -> std::collections::HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (crate::percent::decode_query(k), crate::percent::decode_query(v)))
        .collect()
}

#[derive(Deserialize)]
struct RotateRequest {
    master_key: Zeroizing<String>,
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Error> {
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| Error::msg(format!("reading the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| Error::msg(format!("request body: {e}")))
}

fn reply(status: StatusCode, value: serde_json::Value) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::full(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn problem(status: StatusCode, message: &str) -> Response<GatewayBody> {
    reply(status, json!({"error": {"message": message}}))
}
