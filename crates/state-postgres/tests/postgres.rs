//! The PostgreSQL backend against a real, throwaway PostgreSQL: the state conformance suite,
//! schema versions, changes relayed between processes, and budgets raced by several replicas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use conduit_core::error::Result;
use conduit_core::keys::KeyHash;
use conduit_state::State;
use conduit_state::budget::{Budgets, Refusal};
use conduit_state::records::{BudgetLimit, KeyRecord, Principal, RateLimits};
use conduit_state_postgres::testing::{Cluster, config};

struct AtUrl(String);

#[async_trait]
impl conduit_state::conformance::Backend for AtUrl {
    async fn open(&self, budget_defaults: &[(String, BudgetLimit)]) -> Result<State> {
        conduit_state_postgres::open(&config(&self.0, "conformance"), budget_defaults).await
    }
}

async fn migrated(cluster: &Cluster, db: &str) -> String {
    let url = cluster.database(db);
    let applied = conduit_state_postgres::migrate(&config(&url, "migrate")).await.unwrap();
    assert_eq!(applied.len() as i32, conduit_state_postgres::SCHEMA_VERSION);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_state_conformance_suite() {
    let Some(cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "conformance").await;
    conduit_state::conformance::run(&AtUrl(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_gateway_refuses_a_schema_it_does_not_know() {
    let Some(cluster) = Cluster::start() else { return };
    let url = cluster.database("schema");
    let err = conduit_state_postgres::open(&config(&url, "a"), &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("schema version 0") && err.contains("conduit migrate"),
        "an unmigrated database names what to run: {err}"
    );
    // Two replicas migrating at once: the advisory lock serialises them; each migration once.
    let (ca, cb) = (config(&url, "a"), config(&url, "b"));
    let (a, b) = tokio::join!(
        conduit_state_postgres::migrate(&ca),
        conduit_state_postgres::migrate(&cb)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        conduit_state_postgres::SCHEMA_VERSION as usize,
        "{a:?} {b:?}"
    );
    assert!(
        conduit_state_postgres::migrate(&config(&url, "a"))
            .await
            .unwrap()
            .is_empty()
    );
    conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
    // A newer release migrated it: this build refuses, naming both versions.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .execute("INSERT INTO conduit_migrations VALUES (99, 0)", &[])
        .await
        .unwrap();
    let err = conduit_state_postgres::open(&config(&url, "a"), &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("schema version 99")
            && err.contains(&format!("reads version {}", conduit_state_postgres::SCHEMA_VERSION)),
        "{err}"
    );
    let err = conduit_state_postgres::migrate(&config(&url, "a"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("schema version 99"),
        "migrate refuses to touch a newer schema: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_misconfigured_databases_are_named_without_the_password() {
    let Some(cluster) = Cluster::start() else { return };
    let port = cluster.port();
    drop(cluster);
    let url = format!("postgres://conduit:hunter2secret@127.0.0.1:{port}/gone");
    let err = conduit_state_postgres::open(&config(&url, "a"), &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}/gone")), "{err}");
    assert!(
        !err.contains("hunter2secret"),
        "the password must never be shown: {err}"
    );
    let err = conduit_state_postgres::tls::MakeRustls::new(Some(std::path::Path::new("/nonexistent/ca.pem")))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

fn daily(micros: u64) -> BudgetLimit {
    BudgetLimit {
        daily_micros: Some(micros),
        monthly_micros: None,
    }
}

/// Polls `f` until it holds, failing with `what` after 10 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(id: &str, team: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        hint: "abcd".into(),
        owner: format!("{id}@corp.example"),
        team: Some(team.into()),
        name: None,
        created_at: 1,
        expires_at: None,
        revoked_at: None,
        limits: RateLimits::default(),
        session: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_others_watchers() {
    let Some(cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "relay").await;
    let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
    let b = conduit_state_postgres::open(&config(&url, "b"), &[]).await.unwrap();
    let mut keys_b = b.keys.watch();
    let mut modes_b = b.policy_modes.watch();
    let mut budgets_b = b.budgets.watch();
    let hash = KeyHash::of("ck_relay");
    a.keys.insert(&hash, &key("key_relay", "risk")).await.unwrap();
    let mut revoked = key("key_relay", "risk");
    revoked.revoked_at = Some(2);
    let start = Instant::now();
    a.keys.update(&revoked).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), keys_b.recv())
        .await
        .expect("the insert is relayed")
        .unwrap();
    assert_eq!((first.id.as_str(), first.hash), ("key_relay", hash));
    tokio::time::timeout(Duration::from_secs(5), keys_b.recv())
        .await
        .expect("the revocation is relayed")
        .unwrap();
    println!("revocation relayed to another replica in {:?}", start.elapsed());
    assert_eq!(
        b.keys.by_hash(&hash).await.unwrap().unwrap().revoked_at,
        Some(2),
        "the other replica reads the revoked record"
    );
    a.policy_modes.set("secret.aws", Some("block")).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), modes_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m, "secret.aws");
    a.budgets.set("team:risk", daily(5)).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(5), budgets_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, "team:risk");
    // B's in-memory limits follow (its refresher re-reads on the change).
    let alice = Principal::of(key("key_alice", "risk"));
    eventually("replica B learns of the budget set on A", async || {
        b.budgets.applies(&alice)
    })
    .await;
    b.meta.ping().await.unwrap();
}

/// Replicas racing one team budget (and an org budget at once) admit exactly what fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_shared_budgets_admit_exactly_what_fits() {
    let Some(cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "race").await;
    let mut replicas = Vec::new();
    for r in ["r1", "r2", "r3"] {
        replicas.push(conduit_state_postgres::open(&config(&url, r), &[]).await.unwrap());
    }
    let now = conduit_core::clock::now_unix();
    let worst = 1_000;
    let k = 37;
    replicas[0]
        .budgets
        .set("team:risk", daily(worst * k + worst / 2))
        .await
        .unwrap();
    replicas[0].budgets.set("org", daily(worst * 1_000)).await.unwrap();
    // Each replica's limits must have heard of the budget before the race.
    for r in &replicas {
        let p = Principal::of(key("key_x", "risk"));
        eventually("every replica applies the budget", async || r.budgets.applies(&p)).await;
    }
    let mut tasks = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        for j in 0..50 {
            let budgets: Arc<dyn Budgets> = r.budgets.clone();
            let p = Principal::of(key(&format!("key_{i}_{j}"), "risk"));
            tasks.push(tokio::spawn(async move { budgets.reserve(&p, now, worst).await }));
        }
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(r)) => held.push(r),
            Ok(None) => panic!("the budget applies"),
            Err(Refusal::Over(o)) => {
                assert_eq!(o.scope, "team:risk", "the team budget is the one that runs out");
                refused += 1;
            }
            Err(Refusal::Unavailable(e)) => panic!("{e}"),
        }
    }
    assert_eq!(
        (held.len(), refused),
        (k as usize, 150 - k as usize),
        "exactly K admitted"
    );
    // Settle each at half its worst case: the real cost is what counts afterwards.
    for r in held {
        r.settle(worst / 2);
    }
    // Each replica commits what it spent from its slices when asked for its status (and every
    // 200 ms on its own).
    for r in &replicas {
        r.budgets.status(now).await.unwrap();
    }
    let status = replicas[1].budgets.status(now).await.unwrap();
    let status_0 = replicas[0].budgets.status(now).await.unwrap();
    let team = status_0.iter().find(|s| s.scope == "team:risk").unwrap();
    assert_eq!(
        (team.spent_micros, team.reserved_micros),
        (k * worst / 2, 0),
        "nothing left reserved after settling; spent is the real cost"
    );
    assert!(status.iter().all(|s| s.spent_micros <= s.limit_micros));
}

/// A process that dies holding reservations: once its heartbeat is stale they count as spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_holds_count_as_spent_and_are_reaped_on_restart() {
    let Some(cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "reap").await;
    let now = conduit_core::clock::now_unix();
    let p = Principal::of(key("key_dead", "risk"));
    {
        let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
        a.budgets.set("key:key_dead", daily(10_000)).await.unwrap();
        let r = a.budgets.reserve(&p, now, 4_000).await.unwrap().unwrap();
        // The process dies: nothing settles or releases the hold.
        std::mem::forget(r);
        let s = a.budgets.status(now).await.unwrap();
        assert_eq!(s[0].reserved_micros, 4_000);
    }
    let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
    let figures = async || {
        let s = a.budgets.status(now).await.unwrap();
        (s[0].spent_micros, s[0].reserved_micros)
    };
    assert_eq!(
        figures().await,
        (0, 4_000),
        "held while the dead life's heartbeat is fresh"
    );
    eventually("the dead life's holds are reaped", async || {
        figures().await == (4_000, 0)
    })
    .await;
    assert!(matches!(a.budgets.reserve(&p, now, 6_001).await, Err(Refusal::Over(_))));
    drop(a.budgets.reserve(&p, now, 6_000).await.unwrap());
}

/// A request only shared budgets apply to is admitted from the slice this replica holds: with
/// PostgreSQL gone it admits what that slice covers, then refuses (fail closed); nothing is lost
/// or overspent when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_gone_a_replica_admits_only_against_the_slice_it_holds() {
    let Some(mut cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "slice").await;
    let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
    let now = conduit_core::clock::now_unix();
    let worst = 1_000;
    a.budgets.set("team:risk", daily(100 * worst)).await.unwrap();
    let p = Principal::of(key("key_slice", "risk"));
    // The first reservation takes a slice: 5 % of the cap (less than a quarter of the room).
    let mut held = vec![a.budgets.reserve(&p, now, worst).await.unwrap().unwrap()];
    cluster.stop();
    loop {
        match a.budgets.reserve(&p, now, worst).await {
            Ok(Some(r)) => held.push(r),
            Err(Refusal::Unavailable(e)) => {
                assert!(e.to_string().contains("PostgreSQL"), "{e}");
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(held.len() <= 5, "admitted past the slice it holds");
    }
    assert_eq!(
        held.len(),
        5,
        "the slice (5 % of the cap) admits 5 worst cases while the database is away"
    );
    for r in held {
        r.settle(worst);
    }
    cluster.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        match a.budgets.status(now).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        (status[0].spent_micros, status[0].reserved_micros),
        (5 * worst, 0),
        "what was spent during the outage is committed once the database is back"
    );
}

/// A replica that dies holding a slice: the whole slice counts as spent when it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_slice_counts_as_spent() {
    let Some(cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "deadslice").await;
    let now = conduit_core::clock::now_unix();
    let p = Principal::of(key("key_ds", "risk"));
    {
        let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
        a.budgets.set("team:risk", daily(100_000)).await.unwrap();
        std::mem::forget(a.budgets.reserve(&p, now, 1_000).await.unwrap().unwrap());
    }
    let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
    // The slice the dead life held (5 % of the cap) counts as spent, in full.
    eventually("the dead life's slice is reaped", async || {
        let s = a.budgets.status(now).await.unwrap();
        (s[0].spent_micros, s[0].reserved_micros) == (5_000, 0)
    })
    .await;
}

/// A replica whose slice a reaper took while it was alive (taken for dead: a starved machine, a
/// partition) admits what the slice covered and no more, and starts afresh on its next top-up: the
/// counter ends at the reaped slice plus what was spent since, never the slice twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_reaped_from_a_live_replica_is_not_lent_twice() {
    let Some(cluster) = Cluster::start() else { return };
    let url = migrated(&cluster, "reaped").await;
    let a = conduit_state_postgres::open(&config(&url, "a"), &[]).await.unwrap();
    let now = conduit_core::clock::now_unix();
    let worst = 1_000;
    a.budgets.set("team:risk", daily(100 * worst)).await.unwrap();
    let p = Principal::of(key("key_reaped", "risk"));
    let mut held = vec![a.budgets.reserve(&p, now, worst).await.unwrap().unwrap()];
    // Another process's reaper takes the slice (5 worst cases) and counts it as spent.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let far = now + 100_000;
    let n: i32 = client
        .query_one("SELECT conduit_reap_leases($1, $2)", &[&far, &far])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // What the slice covered is still admitted here (the reaped count covers it) …
    for _ in 0..4 {
        held.push(a.budgets.reserve(&p, now, worst).await.unwrap().unwrap());
    }
    // … and the next one tops up, finding the lease gone.
    held.push(a.budgets.reserve(&p, now, worst).await.unwrap().unwrap());
    for r in held {
        r.settle(worst);
    }
    let s = a.budgets.status(now).await.unwrap();
    assert_eq!(
        (s[0].spent_micros, s[0].reserved_micros),
        (6 * worst, 0),
        "the reaped slice (5) plus the one spent from the new lease: the old slice never lent again"
    );
}
