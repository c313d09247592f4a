//! Several gateway replicas on one PostgreSQL database (a real, throwaway cluster; skipped
//! without PostgreSQL unless `CONDUIT_REQUIRE_PEERS=1`), each over its own mock provider:
//! budgets raced across replicas admit exactly what fits, a revocation on one replica refuses the
//! key on the others, modes and prices follow, PostgreSQL going away fails closed and recovers,
//! and `conduit store copy` moves a single-node install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, Reply};
use conduit_gateway::records::BudgetLimit;
use conduit_state_postgres::testing::Cluster;

/// One test at a time: each starts a PostgreSQL cluster and up to three gateways, which on two
/// cores beside each other would measure CPU starvation, not Conduit.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use common::CHAT_WORST as WORST;

fn body() -> String {
    common::chat_body(400, 1000)
}

async fn post(h: &Harness, key: &str) -> Reply {
    h.chat_at_worst(key, &body()).await
}

/// `n` replicas on a freshly migrated database of `cluster`, sharing one master key.
async fn replicas(cluster: &Cluster, db: &str, n: usize) -> Vec<Arc<Harness>> {
    let url = cluster.database(db);
    conduit_state_postgres::migrate(&conduit_state_postgres::testing::config(&url, "migrate"))
        .await
        .unwrap();
    let (_, master) = conduit_gateway::seal::MasterKey::generate().unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let h = Harness::builder()
            .env("CONDUIT_STORE_URL", &url)
            .env("CONDUIT_REPLICA_ID", &format!("replica-{i}"))
            .env("CONDUIT_MASTER_KEY", &master)
            .toml("[store]\ntls = \"disable\"\nstatement_timeout_ms = 10000\n[policies]\ntimeout_ms = 2000")
            .start()
            .await;
        out.push(Arc::new(h));
    }
    out
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn set(h: &Harness, scope: &str, monthly: u64) {
    let limit = BudgetLimit {
        daily_micros: None,
        monthly_micros: Some(monthly),
    };
    h.gateway().state.budgets.set(scope, limit).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_racing_key_and_team_budgets_forward_exactly_what_fits() {
    let _one = SERIAL.lock().await;
    let Some(cluster) = Cluster::start() else { return };
    let rs = replicas(&cluster, "race", 3).await;
    // Replica 0's key may spend 3 worst cases; the team (every replica's key) 11.
    set(&rs[0], &format!("key:{}", rs[0].key_id), 3 * WORST).await;
    set(&rs[0], "team:payments", 11 * WORST).await;
    for r in &rs {
        let p =
            conduit_gateway::records::Principal::of(r.gateway().state.keys.by_id(&r.key_id).await.unwrap().unwrap());
        until("every replica applies the team budget", async || {
            r.gateway().state.budgets.applies(&p)
        })
        .await;
    }
    let mut tasks = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        for _ in 0..50 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move { (i, post(&r, &r.key).await.status.as_u16()) }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok = |i: Option<usize>| {
        results
            .iter()
            .filter(|(r, s)| *s == 200 && i.is_none_or(|i| i == *r))
            .count()
    };
    let refused = results.iter().filter(|(_, s)| *s == 402).count();
    assert!(ok(Some(0)) <= 3, "replica 0's key budget: {results:?}");
    assert_eq!(
        (ok(None), refused),
        (11, 139),
        "exactly K forwarded across replicas: {results:?}"
    );
    let mut forwarded = 0;
    for r in &rs {
        forwarded += r.mock_log().await.len();
        r.gateway().ledger.flush().await;
    }
    assert_eq!(forwarded, 11, "exactly the admitted requests reached the providers");
    let spent: u64 = rs[2]
        .gateway()
        .state
        .spend
        .range("2000-01-01", "2999-12-31")
        .await
        .unwrap()
        .iter()
        .map(|r| r.cost_micros)
        .sum();
    assert_eq!(
        spent,
        11 * WORST,
        "the shared ledger records every replica's spend, never more than the cap"
    );
    let now = conduit_gateway::clock::now_unix();
    // Each replica settles on its own worker: asking each for its status waits for its settles.
    for r in &rs {
        r.gateway().state.budgets.status(now).await.unwrap();
    }
    for r in &rs {
        let status = r.gateway().state.budgets.status(now).await.unwrap();
        let team = status.iter().find(|s| s.scope == "team:payments").unwrap();
        assert_eq!(
            (team.spent_micros, team.reserved_micros),
            (11 * WORST, 0),
            "every replica sees the same figures, nothing left reserved"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_replica_is_refused_on_the_others_and_changes_follow() {
    let _one = SERIAL.lock().await;
    let Some(cluster) = Cluster::start() else { return };
    let rs = replicas(&cluster, "revoke", 3).await;
    let key = rs[0].new_key("mallory@corp.example").await;
    for r in &rs {
        assert_eq!(post(r, &key.key).await.status, 200, "the key works on every replica");
    }
    let revoked_at = Instant::now();
    conduit_gateway::operator::revoke_key(rs[0].gateway().state.keys.as_ref(), &key.record.id)
        .await
        .unwrap();
    // The other replicas cache the key; the revocation reaches them through NOTIFY.
    for (i, r) in rs.iter().enumerate().skip(1) {
        loop {
            let reply = post(r, &key.key).await;
            if reply.status == 401 {
                reply.assert_openai_error(401, "revoked");
                break;
            }
            assert_eq!(reply.status, 200);
            // The goal is under a second (measured: a few ms, printed below); the bound asserted
            // leaves room for a starved CI machine, not for a missed invalidation (the TTL is 10 s).
            assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "replica {i} still admits a key revoked 5 s ago"
            );
        }
        println!(
            "revoked on replica 0, refused on replica {i} {:?} after the revocation returned",
            revoked_at.elapsed()
        );
    }
    assert_eq!(
        post(&rs[0], &key.key).await.status,
        401,
        "at once on the replica that revoked it"
    );
    // A policy mode and a price override set on replica 0 reach the others' memory.
    rs[0].gateway().set_policy_mode("secret.aws", "block").await.unwrap();
    for r in &rs[1..] {
        until("the mode reaches the other replica", async || {
            r.gateway()
                .policies
                .as_ref()
                .unwrap()
                .modes()
                .entries()
                .get("secret.aws")
                == Some(&conduit_gateway::policy::Mode::Block)
        })
        .await;
    }
    let rows = conduit_gateway::prices::parse_toml(
        "[[price]]\nprovider = \"openai\"\nmodel = \"gpt-replica-test\"\ninput = 1.0\noutput = 2.0\neffective = \"2026-01-01\"\nsource = \"contract\"\n",
        "override",
    )
    .unwrap();
    rs[0].gateway().add_price_overrides(rows).await.unwrap();
    for r in &rs[1..] {
        until("the price override reaches the other replica", async || {
            r.gateway()
                .prices()
                .rows()
                .iter()
                .any(|p| p.model == "gpt-replica-test")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_fails_closed_and_recovers() {
    let _one = SERIAL.lock().await;
    let Some(mut cluster) = Cluster::start() else { return };
    let rs = replicas(&cluster, "outage", 1).await;
    let r = &rs[0];
    // 40 worst cases: a replica's slice is 2 of them (5 % of the cap).
    set(r, "team:payments", 40 * WORST).await;
    // A key no budget applies to (team risk), looked up once so its replica has it cached.
    let unbudgeted = conduit_gateway::operator::create_key(
        r.gateway().state.keys.as_ref(),
        conduit_gateway::operator::NewKeyRequest {
            owner: "erin@corp.example".into(),
            team: Some("risk".into()),
            name: None,
            expires_at: None,
            limits: Default::default(),
        },
    )
    .await
    .unwrap()
    .key;
    assert_eq!(post(r, &unbudgeted).await.status, 200);
    assert_eq!(r.admin_get("/readyz").await.status, 200);
    r.gateway().ledger.flush().await;
    assert_eq!(post(r, &r.key).await.status, 200, "takes a slice of the team budget");
    cluster.stop();
    // Nothing to enforce for this key, and its record is cached: served, and its spend is kept
    // until the ledger can write it.
    for _ in 0..3 {
        assert_eq!(post(r, &unbudgeted).await.status, 200);
    }
    // The team budget: admitted against what is left of the slice held here (none if it already
    // went back, idle), then refused — never forwarded unchecked.
    let mut from_slice = 0;
    let reply = loop {
        let reply = post(r, &r.key).await;
        if reply.status != 200 {
            break reply;
        }
        from_slice += 1;
        assert!(from_slice <= 1, "admitted past the slice held while PostgreSQL is away");
    };
    assert_eq!(
        reply.status,
        503,
        "refused once the slice is used: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let ready = r.admin_get("/readyz").await;
    assert_eq!(ready.status, 503);
    let why = String::from_utf8_lossy(&ready.body).to_string();
    assert!(why.contains("PostgreSQL"), "readiness says why: {why}");
    let forwarded = r.mock_log().await.len();
    assert_eq!(
        forwarded,
        5 + from_slice,
        "no budgeted request beyond the slice was forwarded while PostgreSQL was away"
    );
    cluster.resume();
    until("requests are admitted again", async || {
        post(r, &r.key).await.status == 200
    })
    .await;
    until("the replica is ready again", async || {
        r.admin_get("/readyz").await.status == 200
    })
    .await;
    // The ledger rows refused during the outage were kept and written after it.
    let today = conduit_gateway::clock::format_date(conduit_gateway::clock::now_unix());
    until("the outage's spend reaches the ledger", async || {
        r.gateway().ledger.flush().await;
        let rows = r.gateway().state.spend.range(&today, &today).await.unwrap();
        rows.iter()
            .filter(|row| row.team == "risk")
            .map(|row| row.requests)
            .sum::<u64>()
            == 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_single_node_install_and_refuses_a_non_empty_target() {
    let _one = SERIAL.lock().await;
    let Some(cluster) = Cluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let secret;
    let hash;
    {
        let sled = conduit_state_sled::open(dir.path(), &[]).await.unwrap();
        let created = conduit_gateway::operator::create_key(
            sled.keys.as_ref(),
            conduit_gateway::operator::NewKeyRequest {
                owner: "dana@corp.example".into(),
                team: Some("risk".into()),
                name: None,
                expires_at: None,
                limits: Default::default(),
            },
        )
        .await
        .unwrap();
        secret = created.key;
        hash = conduit_gateway::keys::KeyHash::of(&secret);
        let (master, _) = conduit_gateway::seal::MasterKey::generate().unwrap();
        sled.meta
            .set(conduit_gateway::records::META_MASTER_KEY_ID, master.id())
            .await
            .unwrap();
        conduit_gateway::operator::set_credential(
            sled.credentials.as_ref(),
            &master,
            "anthropic",
            zeroize::Zeroizing::new("sk-ant-copy-test".into()),
        )
        .await
        .unwrap();
        sled.budgets
            .set(
                "team:risk",
                BudgetLimit {
                    daily_micros: Some(5_000),
                    monthly_micros: None,
                },
            )
            .await
            .unwrap();
        let mut row = conduit_gateway::ledger::SpendRow {
            day: conduit_gateway::clock::format_date(conduit_gateway::clock::now_unix()),
            key_id: created.record.id.clone(),
            owner: "dana@corp.example".into(),
            team: "risk".into(),
            provider: "anthropic".into(),
            model: "claude-x".into(),
            requests: 3,
            cost_micros: 1_200,
            ..Default::default()
        };
        sled.spend.add(std::slice::from_ref(&row)).await.unwrap();
        row.model = "claude-y".into();
        sled.spend.add(&[row]).await.unwrap();
        sled.policy_modes.set("entity", Some("block")).await.unwrap();
    }
    let url = cluster.database("copy");
    conduit_state_postgres::migrate(&conduit_state_postgres::testing::config(&url, "copy"))
        .await
        .unwrap();
    let source = conduit_state_sled::open(dir.path(), &[]).await.unwrap();
    let target = conduit_state_postgres::open(&conduit_state_postgres::testing::config(&url, "copy"), &[])
        .await
        .unwrap();
    let counts = conduit::store_copy::copy_state(&source, &target).await.unwrap();
    assert_eq!(
        (
            counts.keys,
            counts.credentials,
            counts.budgets,
            counts.spend_rows,
            counts.spend_micros,
            counts.policy_modes
        ),
        (1, 1, 1, 2, 2_400, 1),
        "{counts:?}"
    );
    let moved = target
        .keys
        .by_hash(&hash)
        .await
        .unwrap()
        .expect("the key engineers hold still resolves");
    assert_eq!(moved.owner, "dana@corp.example");
    let now = conduit_gateway::clock::now_unix();
    let status = target.budgets.status(now).await.unwrap();
    assert_eq!(
        (status[0].scope.as_str(), status[0].spent_micros),
        ("team:risk", 2_400),
        "the copied ledger counts against the copied budget"
    );
    let again = conduit::store_copy::copy_state(&source, &target)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(again.contains("not empty"), "{again}");
}

/// Rate limits are per replica (token buckets in each process): the documented bound is that a
/// client spread over N replicas reaches at most N × its limit — and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_replica_so_n_replicas_allow_at_most_n_times_the_limit() {
    let _one = SERIAL.lock().await;
    let Some(cluster) = Cluster::start() else { return };
    let rs = replicas(&cluster, "rates", 2).await;
    let limited = conduit_gateway::operator::create_key(
        rs[0].gateway().state.keys.as_ref(),
        conduit_gateway::operator::NewKeyRequest {
            owner: "frank@corp.example".into(),
            team: Some("risk".into()),
            name: None,
            expires_at: None,
            limits: conduit_gateway::records::RateLimits {
                rpm: Some(3),
                ..Default::default()
            },
        },
    )
    .await
    .unwrap()
    .key;
    let mut admitted = 0;
    for r in &rs {
        for _ in 0..5 {
            match post(r, &limited).await.status.as_u16() {
                200 => admitted += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!(
        admitted,
        2 * 3,
        "each replica admits the key's rpm, no more: N × the limit in all"
    );
}

/// Replicas as processes: one is killed with SIGKILL mid-load and restarted under the same
/// replica id. What it held (its lease, its unsettled holds) counts as spent, so the team budget
/// is never overshot; nothing stays reserved or leased once the load ends; every response that
/// completed at a client is in its replica's audit log (strict durability).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_overshoots_nothing_and_loses_no_record() {
    use common::process::{BIN, free_port, policy_cache_dir, wait_listening};
    use std::process::{Command, Stdio};

    let _one = SERIAL.lock().await;
    let Some(cluster) = Cluster::start() else { return };
    let url = cluster.database("kill");
    conduit_state_postgres::migrate(&conduit_state_postgres::testing::config(&url, "migrate"))
        .await
        .unwrap();
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let (_, master) = conduit_gateway::seal::MasterKey::generate().unwrap();
    let k: u64 = 60;
    let cap = k * WORST + WORST / 2;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[store]\ntls = \"disable\"\nheartbeat_stale_secs = 2\n[policies]\ntimeout_ms = 2000\n[budgets.\"team:risk\"]\nmonthly_usd = \"{}\"\n{}",
            conduit_gateway::money::usd(cap),
            conduit_gateway::mock::CONTROL_HEADERS_TOML
        ),
    )
    .unwrap();
    struct Replica {
        data: tempfile::TempDir,
        listen: String,
        admin: String,
        id: String,
    }
    let replicas: Vec<Replica> = ["kill-a", "kill-b"]
        .iter()
        .map(|id| Replica {
            data: tempfile::tempdir().unwrap(),
            listen: format!("127.0.0.1:{}", free_port()),
            admin: format!("127.0.0.1:{}", free_port()),
            id: id.to_string(),
        })
        .collect();
    let cmd = |r: &Replica, args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("CONDUIT_CONFIG", config.path())
            .env("CONDUIT_POLICY_CACHE_DIR", policy_cache_dir())
            .env("CONDUIT_DATA_DIR", r.data.path())
            .env("CONDUIT_LISTEN", &r.listen)
            .env("CONDUIT_ADMIN_LISTEN", &r.admin)
            .env("CONDUIT_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .env("CONDUIT_MASTER_KEY", &master)
            .env("CONDUIT_STORE_URL", &url)
            .env("CONDUIT_REPLICA_ID", &r.id)
            .env("CONDUIT_AUDIT_DURABILITY", "strict")
            .env("UPSTREAM_OPENAI_URL", mock.url());
        c
    };
    let out = cmd(
        &replicas[0],
        &[
            "keys",
            "create",
            "--owner",
            "k9@corp.example",
            "--team",
            "risk",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let out = cmd(&replicas[0], &["credentials", "set", "openai", "--from-env", "CRED"])
        .env("CRED", "sk-proj-kill9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let serve = |r: &Replica| {
        let child = cmd(r, &["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(&r.listen);
        child
    };
    let mut a = serve(&replicas[0]);
    let b = serve(&replicas[1]);

    // Four clients per replica, each sending until its replica refuses (or dies).
    type Done = std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>;
    let completed: Done = Default::default();
    let load = |completed: Done| {
        let mut workers = Vec::new();
        for w in 0..8 {
            let (listen, key, completed) = (replicas[w % 2].listen.clone(), key.clone(), completed.clone());
            workers.push(tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new());
                loop {
                    let req = http::Request::post(format!("http://{listen}/v1/chat/completions"))
                        .header("authorization", format!("Bearer {key}"))
                        .header("content-type", "application/json")
                        .header("x-mock-usage", "max")
                        .header("x-mock-delay-ms", "200")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body())))
                        .unwrap();
                    let Ok(resp) = client.request(req).await else { break };
                    let status = resp.status().as_u16();
                    let id = resp
                        .headers()
                        .get("x-conduit-request-id")
                        .map(|v| v.to_str().unwrap().to_string());
                    use http_body_util::BodyExt;
                    match (status, resp.into_body().collect().await) {
                        (200, Ok(_)) => completed.lock().unwrap().push((w % 2, id.unwrap())),
                        // Out of budget, or the replica died mid-response: this client is done.
                        (402, _) | (_, Err(_)) => break,
                        // Anything else (a starved machine's 503): try again shortly.
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        workers
    };
    let workers = load(completed.clone());
    until("a third of the budget is used", async || {
        completed.lock().unwrap().len() as u64 >= k / 3
    })
    .await;
    let before_kill = completed.lock().unwrap().len();
    Command::new("kill").args(["-9", &a.id().to_string()]).status().unwrap();
    let _ = a.wait();
    for w in workers {
        let _ = w.await;
    }
    // A restarts under the same id: its previous life's slice and holds count as spent at once.
    let a = serve(&replicas[0]);
    for w in load(completed.clone()) {
        let _ = w.await;
    }
    let completed = completed.lock().unwrap().clone();
    let forwarded = {
        use http_body_util::BodyExt;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let resp = client
            .request(
                http::Request::get(format!("{}/__mock/requests", mock.url()))
                    .body(http_body_util::Full::<bytes::Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let log: Vec<serde_json::Value> =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        log.len()
    };
    assert!(
        before_kill > 0 && (before_kill as u64) < k,
        "the replica was killed mid-load: {before_kill} of {k} had completed"
    );
    assert!(
        completed.len() as u64 <= k && forwarded as u64 <= k,
        "the team budget fits {k}: {} completed, {forwarded} forwarded",
        completed.len()
    );

    // Once idle, every replica gives its slice back: nothing reserved or leased remains, and
    // what was committed is within the cap.
    let file_budget = BudgetLimit {
        daily_micros: None,
        monthly_micros: Some(cap),
    };
    let observer = conduit_state_postgres::open(
        &conduit_state_postgres::testing::config(&url, "observer"),
        &[("team:risk".to_string(), file_budget)],
    )
    .await
    .unwrap();
    let now = conduit_gateway::clock::now_unix();
    until("nothing is left reserved or leased", async || {
        let s = observer.budgets.status(now).await.unwrap();
        s.iter().all(|b| b.reserved_micros == 0)
    })
    .await;
    let s = observer.budgets.status(now).await.unwrap();
    let team = s.iter().find(|b| b.scope == "team:risk").unwrap();
    assert!(team.spent_micros <= cap, "{team:?}");
    assert!(
        team.spent_micros >= completed.len() as u64 * WORST,
        "every completed request is counted: {team:?} for {}",
        completed.len()
    );

    // Every completed response is on record in its replica's audit log.
    for (i, r) in replicas.iter().enumerate() {
        let out = cmd(r, &["audit", "export", "--format", "jsonl"]).output().unwrap();
        let recorded = common::process::exported_request_ids(&out.stdout);
        let missing: Vec<&String> = completed
            .iter()
            .filter(|(w, id)| *w == i && !recorded.contains(id))
            .map(|(_, id)| id)
            .collect();
        assert!(
            missing.is_empty(),
            "replica {i}: completed responses without a record: {missing:?}"
        );
    }
    println!(
        "kill -9 of a replica mid-load: {} completed ({before_kill} before the kill), {forwarded} forwarded, {} µ$ counted of a {cap} µ$ cap",
        completed.len(),
        team.spent_micros
    );
    for mut c in [a, b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
