//! Leases: slices of shared budgets (team, org) a replica holds and admits against locally, so a
//! request only a shared budget applies to makes no database round trip.
//!
//! A replica takes a slice with `conduit_lease` — counted in the counter's `leased`, so the
//! invariant `committed + reserved + leased ≤ cap` still holds — and keeps, per scope and period,
//! what it was granted, what requests in flight hold of it, and what they spent. Every
//! [`COMMIT_EVERY`] a task moves what was spent into `committed` and extends the lease
//! (`conduit_lease_settle`); a slice unused for [`IDLE_RETURN`] goes back, as does everything at
//! once when another replica runs short (it asks with a `lease-return` announcement before
//! refusing), when the scope's limit changes, at shutdown (`Budgets::drain`) or before a status report.
//!
//! Sizes are adaptive: a grant is at least what the request needs and at most the larger of that
//! and min(5 % of the cap, ¼ of the room left), so a nearly spent budget goes out in small pieces.
//! Budget held unused by other replicas is at most (replicas − 1) × that slice, and only until they
//! return it (idle, or asked).
//!
//! While PostgreSQL is unreachable a replica keeps admitting against what it holds, until the
//! lease is within [`EXPIRY_MARGIN`] of the expiry the database knows — after that any replica's
//! reaper may count it as spent, so admitting more from it could overshoot. Then it refuses (fail
//! closed). A lease its replica never settles counts as spent in full (`conduit_reap_leases`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conduit_core::error::Result;
use conduit_state::budget::{Hold, Period};

use crate::pg_err;

/// How often spent amounts are committed and leases extended.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// A slice no request took from for this long goes back.
pub const IDLE_RETURN: Duration = Duration::from_secs(1);
/// How long a lease lives in the database without being extended.
pub const LEASE_TTL: i64 = 60;
/// A lease this close to its expiry admits nothing more until it is extended.
pub const EXPIRY_MARGIN: i64 = 15;

pub(crate) type SlotKey = (String, Period);

/// One scope and period's lease in this process.
#[derive(Debug)]
struct Slot {
    /// Leased to this process in the database, not yet committed or returned.
    granted: u64,
    /// Worst cases of the requests in flight admitted from it.
    in_flight: u64,
    /// Real costs settled here, not yet committed.
    spent: u64,
    /// When the database may reap it (Unix seconds).
    expires_at: i64,
    last_take: Instant,
    /// Bumped when the database lost the lease (reaped): holds of an older generation are void.
    generation: u64,
}

impl Slot {
    /// A fresh slot; `generation` is unique across this process's slots, old and new, so a hold
    /// from a slot the database lost never matches a slot made later.
    fn new(generation: u64) -> Slot {
        Slot {
            granted: 0,
            in_flight: 0,
            spent: 0,
            expires_at: 0,
            last_take: Instant::now(),
            generation,
        }
    }

    fn available(&self, now: i64) -> u64 {
        if self.expires_at - EXPIRY_MARGIN <= now {
            return 0;
        }
        self.granted.saturating_sub(self.in_flight + self.spent)
    }
}

/// A grant refused: the counter's figures.
#[derive(Debug)]
pub(crate) struct NoRoom {
    pub(crate) committed: u64,
    pub(crate) held: u64,
    pub(crate) others_leased: u64,
}

/// This process's leases.
pub(crate) struct Leases {
    pg: crate::Pg,
    replica: String,
    slots: Mutex<HashMap<SlotKey, Slot>>,
    /// One top-up at a time per slot (concurrent requests short of room share one grant).
    topping: Mutex<HashMap<SlotKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Slots to give back at the next commit.
    give_back: Mutex<HashSet<SlotKey>>,
    pub(crate) commit_now: tokio::sync::Notify,
    generations: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn period_key(p: &Period) -> String {
    match p {
        Period::Day(d) => format!("d:{d}"),
        Period::Month(m) => format!("m:{m}"),
    }
}

pub(crate) fn period_of_key(k: &str) -> Option<Period> {
    let (kind, n) = k.split_once(':')?;
    let n: i64 = n.parse().ok()?;
    match kind {
        "d" => Some(Period::Day(n)),
        "m" => Some(Period::Month(n)),
        _ => None,
    }
}

impl Leases {
    pub(crate) fn new(pg: crate::Pg, replica: String) -> Arc<Leases> {
        Arc::new(Leases {
            pg,
            replica,
            slots: Mutex::new(HashMap::new()),
            topping: Mutex::new(HashMap::new()),
            give_back: Mutex::new(HashSet::new()),
            commit_now: tokio::sync::Notify::new(),
            generations: std::sync::atomic::AtomicU64::new(1),
        })
    }

    fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `worst` from the local slice, if it has room; returns the generation taken from.
    fn take_local(&self, key: &SlotKey, worst: u64) -> Option<u64> {
        let now = conduit_core::clock::now_unix();
        let mut slots = lock(&self.slots);
        let slot = slots.get_mut(key)?;
        if slot.available(now) < worst {
            return None;
        }
        slot.in_flight += worst;
        slot.last_take = Instant::now();
        Some(slot.generation)
    }

    /// Takes `worst` from the slice of `key`, topping it up from the database if it is short.
    /// `Ok(Err(_))`: the budget has no room for it.
    pub(crate) async fn take(&self, key: &SlotKey, cap: u64, worst: u64) -> Result<Result<u64, NoRoom>> {
        if let Some(g) = self.take_local(key, worst) {
            return Ok(Ok(g));
        }
        let gate = lock(&self.topping).entry(key.clone()).or_default().clone();
        let _one_at_a_time = gate.lock().await;
        // Other requests take from the slice while a top-up is awaited (only top-ups wait on the
        // gate): after each grant the take is tried again, and topped up again if it still
        // does not fit, so nothing is admitted past what was granted.
        loop {
            if let Some(g) = self.take_local(key, worst) {
                return Ok(Ok(g));
            }
            let now = conduit_core::clock::now_unix();
            let have = lock(&self.slots).get(key).map(|s| s.available(now)).unwrap_or(0);
            let need = worst - have.min(worst);
            let want = need.max(cap / 20);
            let row = self
                .pg
                .client()
                .await?
                .query_one(
                    "SELECT granted, committed, held, others_leased, lease_total FROM conduit_lease($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &key.0,
                        &period_key(&key.1),
                        &crate::big(cap),
                        &crate::big(need),
                        &crate::big(want),
                        &self.replica,
                        &self.pg.0.origin,
                        &(now + LEASE_TTL),
                    ],
                )
                .await
                .map_err(|e| pg_err(&format!("leasing from the {} budget", key.0), e))?;
            let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
            let granted = n(0);
            if granted == 0 {
                return Ok(Err(NoRoom {
                    committed: n(1),
                    held: n(2),
                    others_leased: n(3),
                }));
            }
            let lease_total = n(4);
            let mut slots = lock(&self.slots);
            let fresh = self.next_generation();
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot::new(fresh));
            if lease_total < slot.granted + granted {
                // A reaper took the lease (this process was taken for dead) and counted it as
                // spent: what this slot held is gone, and requests admitted from it are covered by
                // that count. Start afresh on what the database now holds, never on the old books.
                tracing::warn!(target: "conduit::budget", scope = %key.0, "a budget lease was reaped while this replica held it; it was counted as spent");
                *slot = Slot::new(self.next_generation());
                slot.granted = lease_total;
            } else {
                // The grant extended the whole lease in the database (an expiring slice is alive again).
                slot.granted += granted;
            }
            slot.expires_at = now + LEASE_TTL;
        }
    }

    /// A request admitted from `key` (generation `generation`) ended, costing `actual` (`None`:
    /// released unused).
    pub(crate) fn finish(&self, key: &SlotKey, generation: u64, worst: u64, actual: Option<u64>) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get_mut(key)
            && slot.generation == generation
        {
            slot.in_flight = slot.in_flight.saturating_sub(worst);
            slot.spent += actual.unwrap_or(0);
        }
    }

    /// Asks for `key`'s unused slice to be given back at once (another replica needs room, or
    /// the limit changed).
    pub(crate) fn give_back(&self, key: SlotKey) {
        lock(&self.give_back).insert(key);
        self.commit_now.notify_one();
    }

    /// Asks the other replicas to give back their unused slices of `key`.
    pub(crate) async fn ask_others(&self, key: &SlotKey) -> Result<()> {
        self.pg
            .announce(crate::Change::LeaseReturn(format!("{}|{}", key.0, period_key(&key.1))))
            .await
    }

    /// Commits what was spent and gives back what is idle (`everything`: every unused slice).
    pub(crate) async fn commit(&self, everything: bool) -> Result<()> {
        let now = conduit_core::clock::now_unix();
        let asked: HashSet<SlotKey> = std::mem::take(&mut *lock(&self.give_back));
        let mut work = Vec::new();
        {
            let mut slots = lock(&self.slots);
            for (key, slot) in slots.iter_mut() {
                let unused = slot.granted.saturating_sub(slot.in_flight + slot.spent);
                let expiring = slot.expires_at - EXPIRY_MARGIN <= now;
                let idle = slot.last_take.elapsed() >= IDLE_RETURN;
                let back = if everything || expiring || idle || asked.contains(key) {
                    unused
                } else {
                    0
                };
                let renew = slot.granted > 0 && slot.expires_at - now < LEASE_TTL / 2;
                let spent = slot.spent.min(slot.granted.saturating_sub(back));
                let spent_over = slot.spent - spent; // cost above what was leased: committed too
                if spent + spent_over == 0 && back == 0 && !renew {
                    continue;
                }
                // Optimistically off the local books (undone if the database refuses), so nothing
                // committed or returned can be lent again meanwhile.
                slot.granted -= spent + back;
                slot.spent = 0;
                work.push((key.clone(), slot.generation, spent + spent_over, spent, back));
            }
        }
        let mut first_error = None;
        for (key, generation, commit, from_lease, back) in work {
            // `Err((e, ambiguous))`: `ambiguous` when the statement may have committed with its
            // answer lost (the connection broke after sending); otherwise it surely did not.
            let result: std::result::Result<bool, (conduit_core::error::Error, bool)> = match self.pg.client().await {
                Err(e) => Err((e, false)),
                Ok(client) => client
                    .query_one(
                        "SELECT conduit_lease_settle($1, $2, $3, $4, $5, $6)",
                        &[
                            &key.0,
                            &period_key(&key.1),
                            &self.pg.0.origin,
                            &crate::big(commit),
                            &crate::big(back),
                            &(now + LEASE_TTL),
                        ],
                    )
                    .await
                    .map(|r| r.get::<_, bool>(0))
                    .map_err(|e| {
                        let ambiguous = e.as_db_error().is_none();
                        (
                            pg_err(&format!("settling the lease on the {} budget", key.0), e),
                            ambiguous,
                        )
                    }),
            };
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(&key) else { continue };
            if slot.generation != generation {
                continue;
            }
            match result {
                Ok(true) => slot.expires_at = now + LEASE_TTL,
                Ok(false) => {
                    // Reaped: all of it was counted as spent. Requests in flight from it are
                    // covered by that; start afresh.
                    tracing::warn!(target: "conduit::budget", scope = %key.0, "a budget lease expired before it was settled; it was counted as spent");
                    *slot = Slot::new(self.next_generation());
                }
                Err((e, ambiguous)) => {
                    // Not applied: everything goes back on the local books. Maybe applied (the
                    // answer was lost): what was returned is not lent again (at worst it stays
                    // leased, unused, until this life ends) and what was spent is committed again
                    // (at worst counted twice — never less).
                    slot.granted += from_lease + if ambiguous { 0 } else { back };
                    slot.spent += commit;
                    first_error.get_or_insert(e);
                }
            }
        }
        lock(&self.slots).retain(|_, s| s.granted > 0 || s.in_flight > 0 || s.spent > 0);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The slots this process holds for `scope` (every period).
    pub(crate) fn keys_of(&self, scope: &str) -> Vec<SlotKey> {
        lock(&self.slots).keys().filter(|k| k.0 == scope).cloned().collect()
    }

    /// What this process spent from `key`'s slice and has not committed yet.
    pub(crate) fn uncommitted(&self, key: &SlotKey) -> u64 {
        lock(&self.slots).get(key).map(|s| s.spent).unwrap_or(0)
    }
}

/// The commit loop: every [`COMMIT_EVERY`], or at once when asked; ends with the leases.
pub(crate) async fn committer(weak: std::sync::Weak<Leases>) {
    let mut failing = false;
    loop {
        let Some(leases) = weak.upgrade() else { return };
        let wait = if failing { COMMIT_EVERY * 5 } else { COMMIT_EVERY };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = leases.commit_now.notified() => {}
        }
        match leases.commit(false).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(target: "conduit::budget", error = %e, "committing budget leases failed; retrying");
                }
                failing = true;
            }
        }
    }
}

/// A reservation made from leases: what it took from each slice.
#[derive(Debug)]
pub(crate) struct LeaseHold {
    /// Weak: a hold outliving its process's budgets (a test's forgotten hold) settles nothing.
    pub(crate) leases: std::sync::Weak<Leases>,
    pub(crate) taken: Vec<(SlotKey, u64)>,
    pub(crate) worst: u64,
}

impl Hold for LeaseHold {
    fn settle(self: Box<Self>, actual_micros: u64) {
        let Some(leases) = self.leases.upgrade() else { return };
        for (key, generation) in &self.taken {
            leases.finish(key, *generation, self.worst, Some(actual_micros));
        }
    }

    fn release(self: Box<Self>) {
        let Some(leases) = self.leases.upgrade() else { return };
        for (key, generation) in &self.taken {
            leases.finish(key, *generation, self.worst, None);
        }
    }
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leases")
    }
}
