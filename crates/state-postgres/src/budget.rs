//! Budgets held by PostgreSQL, exact across replicas.
//!
//! One counter row per budget scope and period (`conduit_budget_counters`) with `committed`,
//! `reserved` and `leased` micro-dollars; the invariant `committed + reserved + leased ≤ cap` is
//! kept by `conduit_reserve` (migration 1), which locks the request's counters in a fixed order,
//! checks every one and raises them all — or none — in one round trip, and records the request's
//! hold. Settling (the real cost) and releasing (the request died) run on a worker off the request
//! path and retry until PostgreSQL answers; until then the hold keeps counting against the cap
//! (fail closed). A hold its process never settles — the process was killed — is counted as spent
//! by any replica's reaper once the process's heartbeat is stale (`heartbeat_stale`, 15 s) or the
//! hold expires; a late settle corrects it to the real cost.
//!
//! The limits in force (the config file's, overridden by those set at run time) are kept in
//! memory so [`Budgets::applies`] costs no round trip; other replicas' changes arrive through the
//! change listener, and every [`REFRESH`] the whole set is re-read (the bound on staleness if the
//! listener is down).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use conduit_core::error::{Error, Result};
use conduit_state::budget::{
    BudgetStatus, Budgets, Hold, Limits, OverBudget, Period, Refusal, Reservation, validate_scope,
};
use conduit_state::records::{BudgetLimit, Principal};
use conduit_state::store::{BudgetLimitStore, Watch};

use crate::lease::{LeaseHold, Leases, period_key, period_of_key};
use crate::{PgConfig, pg_err};

/// How often the limits are re-read and expired holds reaped.
pub const REFRESH: Duration = Duration::from_secs(30);

/// [`Budgets`] on PostgreSQL.
pub struct PgBudgets(Arc<Shared>);

struct Shared {
    pg: crate::Pg,
    replica: String,
    hold_ttl: i64,
    /// A life whose heartbeat is older than this is dead.
    stale: Duration,
    limits: RwLock<Limits>,
    /// Counter rows known to exist (created, or seen), so a reservation is one statement.
    known: Mutex<HashSet<(String, Period)>>,
    settles: mpsc::UnboundedSender<Settle>,
    /// Slices of shared budgets this process holds (`None`: `[store] leases = false`).
    leases: Option<Arc<Leases>>,
}

/// How long a replica short of room waits, after asking the others to give back unused slices,
/// before it tries once more.
const RETURN_WAIT: Duration = Duration::from_millis(50);

enum Settle {
    /// A hold to settle to a cost (`None`: released unused).
    Hold(String, Option<u64>),
    /// Answered once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

impl PgBudgets {
    /// Loads the limits, starts the settle worker and the refresher (which reaps at once: a
    /// restarted replica's previous life's holds count as spent).
    pub async fn open(pg: crate::Pg, config: &PgConfig, defaults: &[(String, BudgetLimit)]) -> Result<PgBudgets> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pg: pg.clone(),
            replica: config.replica_id.clone(),
            hold_ttl: config.hold_ttl.as_secs().max(1) as i64,
            stale: config.heartbeat_stale.max(Duration::from_secs(1)),
            limits: RwLock::new(Limits::new(defaults, Vec::new())),
            known: Mutex::new(HashSet::new()),
            settles: tx,
            leases: config
                .leases
                .then(|| Leases::new(pg.clone(), config.replica_id.clone())),
        });
        shared.reload().await?;
        // Alive before anything is held, so no reaper takes this life for a dead one.
        shared.heartbeat().await?;
        let reaped = shared.reap().await?;
        if reaped > 0 {
            tracing::warn!(
                target: "conduit::budget",
                holds = reaped,
                replica = %shared.replica,
                "budget holds and leases of stopped replicas (killed mid-request) now count as spent"
            );
        }
        tokio::spawn(settle_worker(pg.clone(), rx));
        tokio::spawn(refresher(Arc::downgrade(&shared)));
        if let Some(leases) = &shared.leases {
            tokio::spawn(crate::lease::committer(Arc::downgrade(leases)));
            // Other replicas short of room ask for unused slices back.
            let mut asks = pg.0.hubs.lease_returns.watch();
            let weak = Arc::downgrade(leases);
            tokio::spawn(async move {
                while let Ok(ask) = asks.recv().await {
                    let Some(leases) = weak.upgrade() else { return };
                    if let Some((scope, period)) = ask.rsplit_once('|')
                        && let Some(period) = period_of_key(period)
                    {
                        leases.give_back((scope.to_string(), period));
                    }
                }
            });
        }
        Ok(PgBudgets(shared))
    }
}

impl Shared {
    fn limits(&self) -> std::sync::RwLockReadGuard<'_, Limits> {
        self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads every stored limit over the config file's.
    async fn reload(&self) -> Result<()> {
        let stored = BudgetLimitStore::list(&self.pg).await?;
        let reloaded = self.limits().reloaded(stored);
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = reloaded;
        Ok(())
    }

    /// Counts expired holds (and this replica's from a previous life) as spent.
    async fn reap(&self) -> Result<i32> {
        let now = conduit_core::clock::now_unix();
        let alive_since = now - self.stale.as_secs() as i64;
        let client = self.pg.client().await?;
        let holds = client
            .query_one("SELECT conduit_reap($1, $2)", &[&now, &alive_since])
            .await
            .map_err(|e| pg_err("reaping budget holds of stopped replicas", e))?;
        let leases = client
            .query_one("SELECT conduit_reap_leases($1, $2)", &[&now, &alive_since])
            .await
            .map_err(|e| pg_err("reaping budget leases of stopped replicas", e))?;
        Ok(holds.get::<_, i32>(0) + leases.get::<_, i32>(0))
    }

    /// Tells the other replicas this life is alive (what it holds is not to be reaped).
    async fn heartbeat(&self) -> Result<()> {
        self.pg
            .client()
            .await?
            .execute(
                "INSERT INTO conduit_lives (life, replica, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (life) DO UPDATE SET seen_at = EXCLUDED.seen_at",
                &[&self.pg.0.origin, &self.replica, &conduit_core::clock::now_unix()],
            )
            .await
            .map_err(|e| pg_err("recording this replica's heartbeat", e))?;
        Ok(())
    }

    /// Creates the counter rows not yet known to exist, each seeded with what the spend ledger
    /// already holds for its scope and period (spend from before the budget was set, or copied
    /// from a single-node store). A row another replica created first is kept as it is.
    async fn ensure(&self, wanted: &[(String, Period)]) -> Result<()> {
        let missing: Vec<&(String, Period)> = {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            wanted.iter().filter(|k| !known.contains(*k)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let client = self.pg.client().await?;
        for (scope, period) in missing {
            let (since, until, _) = period.bounds();
            let (key, team) = match scope.split_once(':') {
                Some(("key", id)) => (Some(id), None),
                Some(("team", t)) => (None, Some(t)),
                _ => (None, None),
            };
            client
                .execute(
                    "INSERT INTO conduit_budget_counters (scope, period, committed) \
                     SELECT $1, $2, coalesce(sum(cost_micros), 0)::bigint FROM conduit_spend \
                     WHERE day >= $3 AND day <= $4 AND ($5::text IS NULL OR key_id = $5) AND ($6::text IS NULL OR team = $6) \
                     ON CONFLICT (scope, period) DO NOTHING",
                    &[scope, &period_key(period), &since, &until, &key, &team],
                )
                .await
                .map_err(|e| pg_err(&format!("creating the {scope} budget counter"), e))?;
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((scope.clone(), *period));
        }
        Ok(())
    }

    /// One round trip: `conduit_reserve` raises every counter of the request, or none.
    async fn reserve_held(
        &self,
        targets: &[(String, Period, u64)],
        worst: u64,
        at_unix: i64,
    ) -> Result<Option<Reservation>, Refusal> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| Refusal::Unavailable(Error::msg(format!("OS random source failed: {e}"))))?;
        let id = format!("h_{}", conduit_core::hex::encode(&id));
        let scopes: Vec<&str> = targets.iter().map(|t| t.0.as_str()).collect();
        let periods: Vec<String> = targets.iter().map(|t| period_key(&t.1)).collect();
        let caps: Vec<i64> = targets.iter().map(|t| crate::big(t.2)).collect();
        let now = conduit_core::clock::now_unix();
        let refused = self
            .pg
            .client()
            .await
            .map_err(Refusal::Unavailable)?
            .query_opt(
                "SELECT scope, period, cap, committed, held FROM conduit_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &id,
                    &self.replica,
                    &self.pg.0.origin,
                    &scopes,
                    &periods,
                    &caps,
                    &crate::big(worst),
                    &now,
                    &(now + self.hold_ttl),
                ],
            )
            .await
            .map_err(|e| Refusal::Unavailable(pg_err("reserving against budgets", e)))?;
        match refused {
            None => Ok(Some(Reservation::new(Box::new(PgHold {
                id,
                settles: self.settles.clone(),
            })))),
            Some(row) => {
                let scope: String = row.get(0);
                let period = period_of_key(row.get(1)).unwrap_or(Period::day_of(at_unix));
                let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
                Err(Refusal::Over(OverBudget {
                    scope,
                    period: period.name(),
                    limit: n(2),
                    spent: n(3),
                    reserved: n(4),
                    requested: worst,
                    resets_at: period.bounds().2,
                }))
            }
        }
    }

    /// No round trip while the slices held here have room: the worst case is taken from each
    /// target's slice (topped up from the database when short), all or nothing.
    async fn reserve_leased(
        &self,
        leases: &Arc<Leases>,
        targets: &[(String, Period, u64)],
        worst: u64,
    ) -> Result<Option<Reservation>, Refusal> {
        let mut taken: Vec<(crate::lease::SlotKey, u64)> = Vec::with_capacity(targets.len());
        let undo = |taken: &[(crate::lease::SlotKey, u64)]| {
            for (key, generation) in taken {
                leases.finish(key, *generation, worst, None);
            }
        };
        for (scope, period, cap) in targets {
            let key = (scope.clone(), *period);
            let mut asked = false;
            loop {
                match leases.take(&key, *cap, worst).await {
                    Err(e) => {
                        undo(&taken);
                        return Err(Refusal::Unavailable(e));
                    }
                    Ok(Ok(generation)) => {
                        taken.push((key, generation));
                        break;
                    }
                    Ok(Err(no)) if !asked && no.others_leased > 0 => {
                        // Other replicas hold slices of it: ask for what they do not use, once.
                        asked = true;
                        let _ = leases.ask_others(&key).await;
                        tokio::time::sleep(RETURN_WAIT).await;
                    }
                    Ok(Err(no)) => {
                        undo(&taken);
                        let local_spent = leases.uncommitted(&key);
                        return Err(Refusal::Over(OverBudget {
                            scope: scope.clone(),
                            period: period.name(),
                            limit: *cap,
                            spent: no.committed + local_spent,
                            reserved: no.held.saturating_sub(local_spent),
                            requested: worst,
                            resets_at: period.bounds().2,
                        }));
                    }
                }
            }
        }
        Ok(Some(Reservation::new(Box::new(LeaseHold {
            leases: Arc::downgrade(leases),
            taken,
            worst,
        }))))
    }

    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.settles.send(Settle::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Settles and releases holds in order, retrying each until PostgreSQL takes it (a hold not yet
/// settled keeps counting against its budgets: never less than what was spent).
async fn settle_worker(pg: crate::Pg, mut rx: mpsc::UnboundedReceiver<Settle>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Settle::Flush(done) => {
                let _ = done.send(());
            }
            Settle::Hold(id, actual) => {
                let mut backoff = Duration::from_millis(50);
                loop {
                    let result = async {
                        pg.client()
                            .await?
                            .query_one("SELECT conduit_settle($1, $2)", &[&id, &actual.map(crate::big)])
                            .await
                            .map_err(|e| pg_err("settling a budget hold", e))
                    }
                    .await;
                    match result {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(target: "conduit::budget", error = %e, "settling a budget hold failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}

/// Re-reads the limits on every change other replicas announce and every [`REFRESH`]; reaps
/// expired holds on the same tick.
async fn refresher(weak: std::sync::Weak<Shared>) {
    let (mut changes, beat) = match weak.upgrade() {
        Some(s) => (s.pg.0.hubs.budgets.watch(), s.stale / 5),
        None => return,
    };
    let mut tick = tokio::time::interval(beat);
    tick.tick().await;
    let mut last_reload = std::time::Instant::now();
    loop {
        let mut changed = Err(());
        let beat = tokio::select! {
            _ = tick.tick() => true,
            r = changes.recv() => {
                match r {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    Ok(scope) => changed = Ok(scope),
                    Err(_) => {}
                }
                false
            }
        };
        let Some(shared) = weak.upgrade() else { return };
        if beat {
            // Heartbeat, then reap the lives that stopped beating.
            if let Err(e) = shared.heartbeat().await {
                tracing::warn!(target: "conduit::budget", error = %e, "the replica heartbeat failed");
            } else if let Err(e) = shared.reap().await {
                tracing::warn!(target: "conduit::budget", error = %e, "reaping budget holds failed");
            }
            if last_reload.elapsed() < REFRESH {
                continue;
            }
        }
        if let (Some(leases), Ok(scope)) = (&shared.leases, &changed) {
            // A new limit: slices taken under the old one go back and are re-granted under it.
            for key in leases.keys_of(scope) {
                leases.give_back(key);
            }
        }
        last_reload = std::time::Instant::now();
        if let Err(e) = shared.reload().await {
            tracing::warn!(target: "conduit::budget", error = %e, "re-reading budget limits failed");
        }
    }
}

/// A reservation's hold: its id in `conduit_budget_holds`.
#[derive(Debug)]
struct PgHold {
    id: String,
    settles: mpsc::UnboundedSender<Settle>,
}

impl Hold for PgHold {
    fn settle(self: Box<Self>, actual_micros: u64) {
        let _ = self.settles.send(Settle::Hold(self.id, Some(actual_micros)));
    }

    fn release(self: Box<Self>) {
        let _ = self.settles.send(Settle::Hold(self.id, None));
    }
}

#[async_trait]
impl Budgets for PgBudgets {
    fn applies(&self, principal: &Principal) -> bool {
        self.0.limits().applies(principal)
    }

    async fn reserve(&self, principal: &Principal, at_unix: i64, worst: u64) -> Result<Option<Reservation>, Refusal> {
        let s = &self.0;
        let targets = s.limits().targets(principal, at_unix);
        if targets.is_empty() {
            return Ok(None);
        }
        let wanted: Vec<(String, Period)> = targets.iter().map(|(sc, p, _)| (sc.clone(), *p)).collect();
        s.ensure(&wanted).await.map_err(Refusal::Unavailable)?;
        let per_key = targets
            .iter()
            .any(|t| t.0.starts_with("key:") || t.0.starts_with("user:"));
        match &s.leases {
            // Only shared budgets apply: admit from slices held here.
            Some(leases) if !per_key => s.reserve_leased(leases, &targets, worst).await,
            _ => {
                let mut asked = false;
                loop {
                    match s.reserve_held(&targets, worst, at_unix).await {
                        // Short in a shared budget whose room other replicas may hold unused: ask
                        // for it back once before refusing.
                        Err(Refusal::Over(o))
                            if !asked
                                && !o.scope.starts_with("key:")
                                && !o.scope.starts_with("user:")
                                && o.reserved > 0 =>
                        {
                            asked = true;
                            if let Some(key) = targets.iter().find(|t| t.0 == o.scope).map(|t| (t.0.clone(), t.1)) {
                                if let Some(leases) = &s.leases {
                                    leases.give_back(key.clone());
                                    let _ = leases.ask_others(&key).await;
                                }
                                tokio::time::sleep(RETURN_WAIT).await;
                            }
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    async fn set(&self, scope: &str, limit: BudgetLimit) -> Result<()> {
        validate_scope(scope)?;
        BudgetLimitStore::put(&self.0.pg, scope, &limit).await?;
        self.0
            .limits
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(scope, limit);
        Ok(())
    }

    async fn status(&self, now_unix: i64) -> Result<Vec<BudgetStatus>> {
        let s = &self.0;
        s.flush().await;
        if let Some(leases) = &s.leases {
            // What this replica spent is committed and its unused slices go back, so the figures
            // are the database's own (other replicas' slices show as reserved).
            leases.commit(true).await?;
        }
        let in_force = s.limits().all_in_force(now_unix);
        let wanted: Vec<(String, Period)> = in_force.iter().map(|(sc, p, _)| (sc.clone(), *p)).collect();
        s.ensure(&wanted).await?;
        let scopes: Vec<&str> = in_force.iter().map(|t| t.0.as_str()).collect();
        let periods: Vec<String> = in_force.iter().map(|t| period_key(&t.1)).collect();
        let rows =
            s.pg.client()
                .await?
                .query(
                    "SELECT c.scope, c.period, c.committed, c.reserved + c.leased FROM conduit_budget_counters c \
                 JOIN unnest($1::text[], $2::text[]) AS w(s, p) ON c.scope = w.s AND c.period = w.p",
                    &[&scopes, &periods],
                )
                .await
                .map_err(|e| pg_err("reading budget counters", e))?;
        let counters: HashMap<(String, String), (u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    (r.get::<_, i64>(2).max(0) as u64, r.get::<_, i64>(3).max(0) as u64),
                )
            })
            .collect();
        let mut out: Vec<BudgetStatus> = in_force
            .into_iter()
            .map(|(scope, period, cap)| {
                let (spent, reserved) = counters
                    .get(&(scope.clone(), period_key(&period)))
                    .copied()
                    .unwrap_or_default();
                BudgetStatus {
                    scope,
                    period: period.name().into(),
                    limit_micros: cap,
                    spent_micros: spent,
                    reserved_micros: reserved,
                    resets_at: conduit_core::clock::format_rfc3339(period.bounds().2),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.scope, &a.period).cmp(&(&b.scope, &b.period)));
        Ok(out)
    }

    fn watch(&self) -> Watch<String> {
        self.0.pg.0.hubs.budgets.watch()
    }

    async fn drain(&self) -> Result<()> {
        self.0.flush().await;
        match &self.0.leases {
            Some(leases) => leases.commit(true).await,
            None => Ok(()),
        }
    }
}
