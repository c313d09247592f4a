//! The state conformance suite: what every backend must do, checked through the traits alone.
//! A backend's tests call [`run`] with a [`Backend`] that opens its state at one location; the
//! suite reopens it to check durability, so a check fails when a write is lost, a watcher is not
//! told, an error is swallowed, or a budget admits more than its limit under concurrency.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn conformance() {
//!     let dir = tempfile::tempdir().unwrap();
//!     conduit_state::conformance::run(&MyBackend(dir.path().into())).await;
//! }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;

use conduit_core::error::Result;
use conduit_core::keys::KeyHash;
use conduit_core::seal::MasterKey;
use conduit_wire::prices::PriceRow;
use conduit_wire::protocol::Provider;

use crate::State;
use crate::budget::{Budgets, Refusal};
use crate::records::{BudgetLimit, FindingRecord, KeyRecord, Principal, RateLimits, SpendRow, UploadRecord};
use crate::store::Watch;

/// A backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the state at the backend's one location, with `budget_defaults` as the config
    /// file's budgets. Called again after the previous [`State`] was dropped: what was written
    /// must still be there.
    async fn open(&self, budget_defaults: &[(String, BudgetLimit)]) -> Result<State>;
}

/// Runs every check; panics, naming the check and what differed, on the first failure.
pub async fn run(backend: &dyn Backend) {
    keys(backend).await;
    credentials(backend).await;
    spend(backend).await;
    budgets(backend).await;
    concurrent_reservations(backend).await;
    findings(backend).await;
    policy_modes(backend).await;
    prices(backend).await;
    uploads_and_meta(backend).await;
    signin(backend).await;
}

async fn open(backend: &dyn Backend) -> State {
    backend.open(&[]).await.expect("opening the backend")
}

/// The next change on `w`, which must already have been sent.
fn heard<C: Clone + std::fmt::Debug>(w: &mut Watch<C>, what: &str) -> C {
    match w.try_recv() {
        Ok(c) => c,
        Err(e) => panic!("watchers were not told about {what} before the write returned: {e:?}"),
    }
}

fn key_record(id: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        hint: "wxyz".into(),
        owner: format!("{id}@corp.example"),
        team: Some("payments".into()),
        name: None,
        created_at,
        expires_at: None,
        revoked_at: None,
        limits: RateLimits::default(),
        session: None,
    }
}

async fn keys(backend: &dyn Backend) {
    let (h1, h2) = (KeyHash::of("ck_conformance_1"), KeyHash::of("ck_conformance_2"));
    {
        let s = open(backend).await;
        let mut w = s.keys.watch();
        s.keys.insert(&h2, &key_record("key_b", 20)).await.unwrap();
        assert_eq!(heard(&mut w, "an inserted key").id, "key_b");
        s.keys.insert(&h1, &key_record("key_a", 10)).await.unwrap();
        let _ = heard(&mut w, "an inserted key");
        let dup_id = s.keys.insert(&KeyHash::of("ck_other"), &key_record("key_a", 30)).await;
        assert!(
            dup_id.as_ref().is_err_and(|e| e.to_string().contains("key_a")),
            "a duplicate key id is refused, naming it: {dup_id:?}"
        );
        let dup_hash = s.keys.insert(&h1, &key_record("key_c", 30)).await;
        assert!(dup_hash.is_err(), "a duplicate key hash is refused");
        assert!(w.try_recv().is_err(), "a refused insert announces nothing");
        let mut revoked = s.keys.by_id("key_a").await.unwrap().expect("by id");
        revoked.revoked_at = Some(99);
        s.keys.update(&revoked).await.unwrap();
        let change = heard(&mut w, "a revocation");
        assert_eq!(
            (change.id.as_str(), change.hash),
            ("key_a", h1),
            "the change names the key and its hash"
        );
        let missing = s.keys.update(&key_record("key_nope", 1)).await;
        assert!(
            missing.as_ref().is_err_and(|e| e.to_string().contains("key_nope")),
            "updating an unknown key fails, naming it: {missing:?}"
        );
    }
    let s = open(backend).await;
    let a = s.keys.by_hash(&h1).await.unwrap().expect("durable across reopen");
    assert_eq!(a.revoked_at, Some(99), "the revocation is durable");
    assert!(s.keys.by_hash(&KeyHash::of("ck_unknown")).await.unwrap().is_none());
    assert!(s.keys.by_id("key_unknown").await.unwrap().is_none());
    let ids: Vec<String> = s.keys.list().await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, ["key_a", "key_b"], "listed oldest first");
    let entries: Vec<(KeyHash, String)> = s
        .keys
        .entries()
        .await
        .unwrap()
        .into_iter()
        .map(|(h, k)| (h, k.id))
        .collect();
    assert!(
        entries.len() == 2 && entries.contains(&(h1, "key_a".into())) && entries.contains(&(h2, "key_b".into())),
        "entries pair each hash with its record: {entries:?}"
    );
}

async fn credentials(backend: &dyn Backend) {
    let (_, old) = MasterKey::generate().unwrap();
    let old = MasterKey::from_base64(&old, "test").unwrap();
    let (_, new) = MasterKey::generate().unwrap();
    let new = MasterKey::from_base64(&new, "test").unwrap();
    {
        let s = open(backend).await;
        let mut w = s.credentials.watch();
        for (provider, version) in [("anthropic", 1), ("openai", 1), ("anthropic", 2)] {
            let sealed = old
                .seal(
                    provider,
                    "default",
                    version,
                    format!("secret-{provider}-{version}").as_bytes(),
                    1,
                )
                .unwrap();
            s.credentials.put(&sealed).await.unwrap();
            assert_eq!(heard(&mut w, "a credential set").provider, provider);
        }
        let got = s.credentials.get("anthropic", "default").await.unwrap().unwrap();
        assert_eq!(got.version, 2, "a put replaces");
        assert_eq!(&old.unseal(&got).unwrap()[..], b"secret-anthropic-2");
        assert!(s.credentials.get("bedrock", "default").await.unwrap().is_none());
        let resealed: Vec<_> = s
            .credentials
            .list()
            .await
            .unwrap()
            .iter()
            .map(|c| {
                new.seal(&c.provider, &c.id, c.version, &old.unseal(c).unwrap(), 2)
                    .unwrap()
            })
            .collect();
        assert_eq!(resealed.len(), 2);
        s.credentials.reseal_all(&resealed, new.id()).await.unwrap();
        let mut heard_providers = vec![heard(&mut w, "a re-seal").provider, heard(&mut w, "a re-seal").provider];
        heard_providers.sort();
        assert_eq!(heard_providers, ["anthropic", "openai"]);
    }
    let s = open(backend).await;
    for c in s.credentials.list().await.unwrap() {
        assert_eq!(
            c.master_key_id,
            new.id(),
            "every credential is sealed under the new key"
        );
        assert!(new.unseal(&c).is_ok());
    }
    assert_eq!(
        s.meta.get(crate::records::META_MASTER_KEY_ID).await.unwrap().as_deref(),
        Some(new.id()),
        "the re-seal records the new master key id with the credentials"
    );
}

fn row(day: &str, key: &str, team: &str, model: &str, cost: u64) -> SpendRow {
    SpendRow {
        day: day.into(),
        key_id: key.into(),
        owner: format!("{key}@corp.example"),
        team: team.into(),
        provider: "anthropic".into(),
        model: model.into(),
        requests: 1,
        input: 10,
        output: 5,
        cost_micros: cost,
        ..SpendRow::default()
    }
}

async fn spend(backend: &dyn Backend) {
    {
        let s = open(backend).await;
        let mut w = s.spend.watch();
        s.spend
            .add(&[
                row("2026-01-30", "key_s", "t", "m1", 1),
                row("2026-01-31", "key_s", "t", "m1", 2),
                row("2026-02-01", "key_s", "t", "m1", 4),
            ])
            .await
            .unwrap();
        let _ = heard(&mut w, "spend rows added");
        // The same day × key × model again: folded into the row, not a second row.
        s.spend.add(&[row("2026-01-31", "key_s", "t", "m1", 8)]).await.unwrap();
    }
    let s = open(backend).await;
    let rows = s.spend.range("2026-01-31", "2026-02-01").await.unwrap();
    let mut got: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| (r.day.clone(), r.requests, r.cost_micros))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("2026-01-31".into(), 2, 10), ("2026-02-01".into(), 1, 4)],
        "rows fold per day × key × model, the range is inclusive, and they survive a reopen"
    );
    assert!(s.spend.range("2026-03-01", "2026-03-31").await.unwrap().is_empty());
}

fn principal(key: &str, team: Option<&str>) -> Principal {
    Principal {
        key_id: key.into(),
        owner: format!("{key}@corp.example"),
        team: team.map(str::to_string),
        limits: RateLimits::default(),
        session: None,
    }
}

fn daily(micros: u64) -> BudgetLimit {
    BudgetLimit {
        daily_micros: Some(micros),
        monthly_micros: None,
    }
}

async fn budgets(backend: &dyn Backend) {
    let now = conduit_core::clock::now_unix();
    let today = conduit_core::clock::format_date(now);
    let alice = principal("key_alice", Some("risk"));
    {
        let s = backend.open(&[("team:risk".into(), daily(1_000))]).await.unwrap();
        let mut w = s.budgets.watch();
        assert!(s.budgets.applies(&alice), "the config file's budget applies");
        assert!(!s.budgets.applies(&principal("key_bob", None)));
        // Spend already in the ledger counts against the period.
        s.spend
            .add(&[row(&today, "key_alice", "risk", "m", 300)])
            .await
            .unwrap();
        let r = s
            .budgets
            .reserve(&alice, now, 700)
            .await
            .unwrap()
            .expect("a reservation");
        match s.budgets.reserve(&alice, now, 1).await {
            Err(Refusal::Over(o)) => assert_eq!(
                (o.scope.as_str(), o.spent, o.reserved, o.limit, o.requested),
                ("team:risk", 300, 700, 1_000, 1),
                "the refusal names the budget and its figures"
            ),
            other => panic!("a full budget must refuse: {other:?}"),
        }
        r.settle(200);
        // The gateway writes every settled request's cost to the ledger too.
        s.spend
            .add(&[row(&today, "key_alice", "risk", "m", 200)])
            .await
            .unwrap();
        let status = s.budgets.status(now).await.unwrap();
        assert_eq!(
            (status[0].spent_micros, status[0].reserved_micros),
            (500, 0),
            "settling replaces the worst case with the real cost"
        );
        drop(s.budgets.reserve(&alice, now, 400).await.unwrap());
        assert_eq!(
            s.budgets.status(now).await.unwrap()[0].reserved_micros,
            0,
            "a dropped reservation is released"
        );
        s.budgets.set("team:risk", daily(2_000)).await.unwrap();
        assert_eq!(heard(&mut w, "a budget set"), "team:risk");
        assert!(
            s.budgets.set("risk", daily(1)).await.is_err(),
            "a scope must be org, team:NAME or key:ID"
        );
    }
    let s = backend.open(&[("team:risk".into(), daily(1_000))]).await.unwrap();
    let status = s.budgets.status(now).await.unwrap();
    assert_eq!(
        status[0].limit_micros, 2_000,
        "a limit set at run time survives and overrides the file"
    );
    assert_eq!(
        status[0].spent_micros, 500,
        "what was spent survives a reopen, counted once (the ledger's and the settled costs are the same money)"
    );
    s.budgets.set("team:risk", BudgetLimit::default()).await.unwrap();
    assert_eq!(
        s.budgets.status(now).await.unwrap()[0].limit_micros,
        1_000,
        "clearing falls back to the config file's budget"
    );
}

async fn concurrent_reservations(backend: &dyn Backend) {
    let now = conduit_core::clock::now_unix();
    let s = open(backend).await;
    let budgets: Arc<dyn Budgets> = s.budgets.clone();
    budgets.set("org", daily(1)).await.unwrap();
    let spent_before = budgets.status(now).await.unwrap()[0].spent_micros;
    // Room for exactly 32 of the 64 requests.
    budgets.set("org", daily(spent_before + 3_250)).await.unwrap();
    let worst = 100;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let b = budgets.clone();
            tokio::spawn(async move { b.reserve(&principal(&format!("key_c{i}"), None), now, worst).await })
        })
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(r)) => held.push(r),
            Ok(None) => panic!("the org budget applies to every key"),
            Err(Refusal::Over(_)) => {}
            Err(Refusal::Unavailable(e)) => panic!("budgets unavailable: {e}"),
        }
    }
    assert_eq!(held.len(), 32, "concurrent reservations admit exactly what fits");
    drop(held);
    assert_eq!(budgets.status(now).await.unwrap()[0].reserved_micros, 0);
    budgets.set("org", BudgetLimit::default()).await.unwrap();
}

fn finding(id: &str, time: i64) -> FindingRecord {
    FindingRecord {
        id: id.into(),
        time,
        request_id: "req_1".into(),
        key_id: "key_f".into(),
        team: None,
        policy: "secrets".into(),
        category: "secret.aws".into(),
        rule_id: "aws-access-key".into(),
        location: "messages[0].content".into(),
        start: 1,
        end: 21,
        mode: "alert".into(),
        action: "forwarded".into(),
        false_positive: None,
    }
}

async fn findings(backend: &dyn Backend) {
    // Ids are `f_` + hex Unix nanoseconds: time-ordered.
    let id = |secs: u64| format!("f_{:016x}", secs * 1_000_000_000);
    {
        let s = open(backend).await;
        let mut w = s.findings.watch();
        s.findings
            .record(&[finding(&id(100), 100), finding(&id(200), 200), finding(&id(300), 300)])
            .await
            .unwrap();
        let _ = heard(&mut w, "findings recorded");
        let marked = s.findings.mark_false_positive(&id(200), "alice").await.unwrap();
        assert_eq!(marked.and_then(|f| f.false_positive).as_deref(), Some("alice"));
        assert!(
            s.findings
                .mark_false_positive("f_nope", "alice")
                .await
                .unwrap()
                .is_none()
        );
    }
    let s = open(backend).await;
    let newest: Vec<String> = s.findings.list(2).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(newest, [id(300), id(200)], "newest first, at most the limit");
    assert_eq!(
        s.findings.list(10).await.unwrap()[1].false_positive.as_deref(),
        Some("alice")
    );
    assert_eq!(s.findings.prune(250).await.unwrap(), 2, "pruning removes what is older");
    assert_eq!(s.findings.list(10).await.unwrap().len(), 1);
}

async fn policy_modes(backend: &dyn Backend) {
    {
        let s = open(backend).await;
        let mut w = s.policy_modes.watch();
        s.policy_modes.set("secret.aws", Some("block")).await.unwrap();
        assert_eq!(heard(&mut w, "a mode set"), "secret.aws");
        s.policy_modes.set("entity", Some("alert")).await.unwrap();
        s.policy_modes.set("entity", None).await.unwrap();
    }
    let s = open(backend).await;
    assert_eq!(
        s.policy_modes.list().await.unwrap(),
        [("secret.aws".to_string(), "block".to_string())],
        "set survives, cleared is gone"
    );
}

fn price(model: &str, input: u64) -> PriceRow {
    let mut row = conduit_wire::prices::parse_toml(
        "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 1.0\noutput = 2.0\neffective = \"2026-01-01\"\nsource = \"contract\"\n",
        "override",
    )
    .unwrap()
    .remove(0);
    row.model = model.into();
    row.rates.input = input;
    row
}

async fn prices(backend: &dyn Backend) {
    {
        let s = open(backend).await;
        let mut w = s.prices.watch();
        s.prices
            .put_overrides(&[price("gpt-x", 1), price("gpt-y", 2)])
            .await
            .unwrap();
        heard(&mut w, "price overrides");
        s.prices.put_overrides(&[price("gpt-x", 3)]).await.unwrap();
    }
    let s = open(backend).await;
    let mut got: Vec<(Provider, String, u64)> = s
        .prices
        .overrides()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.provider, r.model, r.rates.input))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (Provider::OpenAi, "gpt-x".into(), 3),
            (Provider::OpenAi, "gpt-y".into(), 2)
        ],
        "an override replaces the row of the same provider and model"
    );
}

async fn uploads_and_meta(backend: &dyn Backend) {
    {
        let s = open(backend).await;
        s.uploads
            .put(&UploadRecord {
                provider: "openai".into(),
                id: "file-abc".into(),
                purpose: "batch".into(),
                key_id: "key_u".into(),
                created: 1,
                bytes: 42,
                requests: Vec::new(),
            })
            .await
            .unwrap();
        let mut w = s.meta.watch();
        s.meta.set("conformance", "1").await.unwrap();
        assert_eq!(heard(&mut w, "a meta value set"), "conformance");
        s.meta.ping().await.unwrap();
    }
    let s = open(backend).await;
    let u = s
        .uploads
        .get("openai", "file-abc")
        .await
        .unwrap()
        .expect("durable upload");
    assert_eq!((u.bytes, u.purpose.as_str()), (42, "batch"));
    assert!(
        s.uploads.get("anthropic", "file-abc").await.unwrap().is_none(),
        "uploads are per provider"
    );
    assert_eq!(s.uploads.list().await.unwrap().len(), 1, "every upload is listed");
    assert_eq!(s.meta.get("conformance").await.unwrap().as_deref(), Some("1"));
    assert!(s.meta.get("nothing").await.unwrap().is_none());
}

/// Sign-in records: compare-and-swap semantics, one winner among concurrent swaps, durability,
/// prefix scans that do not leak across prefixes.
async fn signin(backend: &dyn Backend) {
    {
        let s = open(backend).await;
        let st = s.signin.as_ref();
        assert!(st.get("grant:a").await.unwrap().is_none());
        assert!(
            st.swap("grant:a", None, Some("v1")).await.unwrap(),
            "create when absent"
        );
        assert!(
            !st.swap("grant:a", None, Some("v9")).await.unwrap(),
            "create refused when present"
        );
        assert!(
            !st.swap("grant:a", Some("v0"), Some("v9")).await.unwrap(),
            "swap refused on a stale value"
        );
        assert_eq!(st.get("grant:a").await.unwrap().as_deref(), Some("v1"));
        assert!(st.swap("grant:a", Some("v1"), Some("v2")).await.unwrap());
        assert!(
            !st.swap("grant:b", Some("v1"), None).await.unwrap(),
            "delete of an absent name"
        );
        st.swap("grant:b", None, Some("b")).await.unwrap();
        st.swap("grantx", None, Some("x")).await.unwrap();
        st.swap("session:1", None, Some("s")).await.unwrap();
        // Many replicas consuming one device code: exactly one wins.
        let wins = futures_join(s.signin.clone(), 16).await;
        assert_eq!(wins, 1, "{wins} concurrent swaps of one value succeeded");
    }
    let s = open(backend).await;
    let st = s.signin.as_ref();
    assert_eq!(st.get("grant:a").await.unwrap().as_deref(), Some("v2"), "durable swap");
    let names: Vec<String> = st.scan("grant:").await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec!["grant:a".to_string(), "grant:b".to_string()],
        "a prefix scan"
    );
    assert!(st.swap("grant:a", Some("v2"), None).await.unwrap(), "delete");
    assert!(st.get("grant:a").await.unwrap().is_none());
}

async fn futures_join(st: Arc<dyn crate::store::SignInStore>, n: usize) -> usize {
    st.swap("race", None, Some("start")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            st.swap("race", Some("start"), Some(&format!("taken by {i}")))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    wins
}
