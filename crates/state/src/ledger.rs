//! The spend ledger: counters per UTC day × key × model, carrying owner, team and provider —
//! requests, errors, estimated and unpriced requests, the four token classes, and cost in
//! micro-dollars — and the reports summed from them.
//!
//! The request path only sends a [`SpendEntry`] into a channel; a writer task folds entries in
//! memory by day × key × model and writes each changed row once per [`FOLD_WINDOW`] (one store
//! update per row, not per request, never on a request's task). While it folds it does not poll
//! the channel, so sending does not wake it. [`Ledger::flush`] waits until everything sent before
//! it is in the store (tests, shutdown, reports from a running gateway). Budgets are enforced from
//! the budget book, not from these rows, and every request is also in the audit log, so the fold
//! window costs no enforcement.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use conduit_core::error::{Error, Result};

pub use crate::records::{SpendEntry, SpendRow};
use crate::store::SpendStore;

/// Rows being folded, by day × key × model.
type Pending = std::collections::HashMap<(String, String, String), SpendRow>;

fn fold(pending: &mut Pending, e: &SpendEntry) {
    pending
        .entry((e.day.clone(), e.key_id.clone(), e.model.clone()))
        .or_default()
        .add(e);
}

/// How long entries are folded in memory before their rows are written.
pub const FOLD_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

enum Msg {
    Entry(Box<SpendEntry>),
    Flush(oneshot::Sender<()>),
    /// Not sent: what the writer acts on when a retry is due.
    Retry,
}

/// The first and the longest wait before writing again rows a store refused.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Handle to the ledger writer. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<Msg>,
    flush_now: Arc<Notify>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

impl Ledger {
    /// Starts the writer task over `spend` (on the current tokio runtime).
    pub fn start(spend: Arc<dyn SpendStore>) -> Ledger {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let flush_now = Arc::new(Notify::new());
        let woken = flush_now.clone();
        tokio::spawn(async move {
            let mut pending: Pending = Default::default();
            let mut flushes = Vec::new();
            let mut backoff = RETRY_FIRST;
            loop {
                // Idle: wait for the first message (its send wakes this task, once) — or, with rows
                // a failed write kept, for the retry.
                let first = if pending.is_empty() {
                    rx.recv().await
                } else {
                    tokio::select! {
                        m = rx.recv() => m,
                        _ = tokio::time::sleep(backoff) => Some(Msg::Retry),
                    }
                };
                let Some(first) = first else { break };
                let take = |m: Msg, pending: &mut Pending, flushes: &mut Vec<oneshot::Sender<()>>| match m {
                    Msg::Entry(e) => fold(pending, &e),
                    Msg::Flush(done) => flushes.push(done),
                    Msg::Retry => {}
                };
                let wait = matches!(first, Msg::Entry(_));
                take(first, &mut pending, &mut flushes);
                if wait {
                    // The fold window, cut short by a flush.
                    tokio::select! {
                        _ = tokio::time::sleep(FOLD_WINDOW) => {}
                        _ = woken.notified() => {}
                    }
                }
                while let Ok(m) = rx.try_recv() {
                    take(m, &mut pending, &mut flushes);
                }
                backoff = if write(spend.as_ref(), &mut pending).await {
                    RETRY_FIRST
                } else {
                    (backoff * 2).min(RETRY_MAX)
                };
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
            write(spend.as_ref(), &mut pending).await;
        });
        Ledger { tx, flush_now }
    }

    /// Queues an entry (never blocks the caller).
    pub fn record(&self, entry: SpendEntry) {
        if self.tx.send(Msg::Entry(Box::new(entry))).is_err() {
            tracing::error!("spend ledger writer is gone; entry dropped");
        }
    }

    /// Returns once every entry recorded before this call is in the store — or the store refused
    /// them once (an outage): they are kept and retried, never dropped.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            self.flush_now.notify_one();
            let _ = wait.await;
        }
    }
}

/// Writes the folded rows, one batch; `false` if the store refused them, which stay in `pending`
/// (merged with what arrives meanwhile) for the next attempt: a store outage delays the ledger,
/// it does not lose it.
async fn write(spend: &dyn SpendStore, pending: &mut Pending) -> bool {
    if pending.is_empty() {
        return true;
    }
    let rows: Vec<SpendRow> = pending.values().cloned().collect();
    match spend.add(&rows).await {
        Ok(()) => {
            pending.clear();
            true
        }
        Err(err) => {
            // Loud: until it is written, the ledger (spend reports) is behind the audit log.
            tracing::error!(rows = rows.len(), error = %err, "spend ledger write failed; keeping the rows to retry");
            false
        }
    }
}

/// A report dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Stand-in key.
    Key,
    /// Key owner.
    Owner,
    /// Team.
    Team,
    /// Model.
    Model,
    /// UTC day.
    Day,
}

impl By {
    /// Parses `key|owner|team|model|day`.
    pub fn parse(s: &str) -> Result<By> {
        Ok(match s {
            "key" => By::Key,
            "owner" => By::Owner,
            "team" => By::Team,
            "model" => By::Model,
            "day" => By::Day,
            other => {
                return Err(Error::msg(format!(
                    "--by {other:?}: expected key, owner, team, model or day"
                )));
            }
        })
    }

    fn of<'a>(&self, r: &'a SpendRow) -> &'a str {
        match self {
            By::Key => &r.key_id,
            By::Owner => &r.owner,
            By::Team => &r.team,
            By::Model => &r.model,
            By::Day => &r.day,
        }
    }
}

/// One line of a spend report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    /// The group's value (a key id, owner, team, model or day).
    pub group: String,
    /// Counters summed over the group.
    #[serde(flatten)]
    pub totals: SpendRow,
}

/// Sums rows by a dimension; most expensive first.
pub fn report(rows: &[SpendRow], by: By) -> Vec<ReportLine> {
    let mut groups: BTreeMap<&str, SpendRow> = BTreeMap::new();
    for r in rows {
        groups.entry(by.of(r)).or_default().merge(r);
    }
    let mut lines: Vec<ReportLine> = groups
        .into_iter()
        .map(|(g, mut totals)| {
            totals.day = String::new();
            ReportLine {
                group: g.to_string(),
                totals,
            }
        })
        .collect();
    lines.sort_by(|a, b| {
        b.totals
            .cost_micros
            .cmp(&a.totals.cost_micros)
            .then(a.group.cmp(&b.group))
    });
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, team: &str, model: &str, cost: Option<u64>) -> SpendEntry {
        SpendEntry {
            day: "2026-11-27".into(),
            key_id: key.into(),
            owner: format!("{key}@corp.example"),
            team: team.into(),
            provider: "anthropic".into(),
            model: model.into(),
            usage: conduit_wire::usage::Usage {
                input: 10,
                output: 5,
                cache_read: 100,
                cache_write: 1,
                ..Default::default()
            },
            cost_micros: cost,
            ceiling: false,
            estimated: cost.is_none(),
            error: false,
        }
    }

    #[test]
    fn rows_and_reports_add_up() {
        let mut a = SpendRow::default();
        a.add(&entry("k1", "payments", "m1", Some(1_500_000)));
        a.add(&entry("k1", "payments", "m1", None));
        assert_eq!(
            (a.requests, a.unpriced, a.estimated, a.cost_micros, a.cache_read),
            (2, 1, 1, 1_500_000, 200)
        );
        let mut b = SpendRow::default();
        b.add(&entry("k2", "payments", "m2", Some(2)));
        let mut c = SpendRow::default();
        c.add(&entry("k3", "risk", "m1", Some(7)));
        let by_team = report(&[a.clone(), b.clone(), c.clone()], By::Team);
        assert_eq!(by_team.len(), 2);
        assert_eq!(
            (
                by_team[0].group.as_str(),
                by_team[0].totals.cost_micros,
                by_team[0].totals.requests
            ),
            ("payments", 1_500_002, 3)
        );
        let by_model = report(&[a, b, c], By::Model);
        assert_eq!(by_model[0].group, "m1");
        assert_eq!(by_model[0].totals.requests, 3);
        assert_eq!(conduit_core::money::usd(46_625), "0.046625");
        assert_eq!(conduit_core::money::usd(12_000_000_001), "12000.000001");
        assert!(By::parse("teams").is_err());
    }

    /// A store that refuses the first `failures` writes.
    struct Flaky {
        failures: std::sync::atomic::AtomicUsize,
        rows: std::sync::Mutex<Vec<SpendRow>>,
        hub: crate::store::Hub<String>,
    }

    #[async_trait::async_trait]
    impl SpendStore for Flaky {
        async fn add(&self, deltas: &[SpendRow]) -> Result<()> {
            use std::sync::atomic::Ordering;
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Error::msg("injected: the store is down"));
            }
            self.rows.lock().unwrap().extend_from_slice(deltas);
            Ok(())
        }
        async fn range(&self, _: &str, _: &str) -> Result<Vec<SpendRow>> {
            Ok(self.rows.lock().unwrap().clone())
        }
        fn watch(&self) -> crate::store::Watch<String> {
            self.hub.watch()
        }
    }

    #[tokio::test]
    async fn a_store_outage_delays_the_ledger_and_loses_nothing() {
        let store = Arc::new(Flaky {
            failures: 3.into(),
            rows: Default::default(),
            hub: Default::default(),
        });
        let ledger = Ledger::start(store.clone());
        ledger.record(entry("k1", "payments", "m1", Some(100)));
        ledger.flush().await; // refused: kept
        ledger.record(entry("k1", "payments", "m1", Some(20)));
        ledger.record(entry("k2", "payments", "m1", Some(3)));
        ledger.flush().await; // refused again
        assert!(store.rows.lock().unwrap().is_empty());
        // The writer retries on its own (backoff: 0.2 s, 0.4 s, …), without new entries arriving.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.rows.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let rows = store.rows.lock().unwrap().clone();
        let total: u64 = rows.iter().map(|r| r.cost_micros).sum();
        let requests: u64 = rows.iter().map(|r| r.requests).sum();
        assert_eq!((total, requests), (123, 3), "every entry written once: {rows:?}");
    }
}
