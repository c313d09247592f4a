//! The spend ledger: counters per UTC day × key × model, carrying owner, team and provider —
//! requests, errors, estimated and unpriced requests, the four token classes, and cost in
//! micro-dollars.
//!
//! The request path only sends a [`SpendEntry`] into a channel; a dedicated writer thread folds
//! entries in memory by day × key × model and writes each changed row once per
//! [`FOLD_WINDOW`] (one sled update per row, not per request; sled work never runs on a request's
//! task). The thread polls rather than blocking on the channel, so sending never wakes it.
//! [`Ledger::flush`] waits until everything sent before it is in the tree (tests, shutdown, reports
//! from a running gateway). Budgets are enforced from memory (`admission`), not from these rows, and
//! every request is also in the audit log, so the fold window costs no enforcement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::usage::Usage;

/// What one finished request adds to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendEntry {
    /// UTC day (YYYY-MM-DD) the request started.
    pub day: String,
    /// Stand-in key id.
    pub key_id: String,
    /// Key owner.
    pub owner: String,
    /// Key team (`-` when none).
    pub team: String,
    /// Provider family.
    pub provider: String,
    /// Requested model (`-` when none).
    pub model: String,
    /// Tokens billed (reported, or estimated).
    pub usage: Usage,
    /// Cost in micro-dollars; `None` only when the provider has no price at all (no ceiling).
    pub cost_micros: Option<u64>,
    /// The model has no price: the cost is its provider's ceiling (`crate::prices::Basis::Ceiling`).
    #[serde(default)]
    pub ceiling: bool,
    /// Tokens are an estimate (the response carried no usage).
    pub estimated: bool,
    /// The request failed (gateway refusal after authentication, or upstream error).
    pub error: bool,
}

/// Accumulated counters for one day × key × model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendRow {
    /// UTC day.
    pub day: String,
    /// Key id.
    pub key_id: String,
    /// Owner.
    pub owner: String,
    /// Team.
    pub team: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests whose tokens were estimated.
    pub estimated: u64,
    /// Requests whose model had no price: billed at the provider's ceiling (included in
    /// `cost_micros`), or, without any ceiling, not priced at all.
    pub unpriced: u64,
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Cache-read tokens.
    pub cache_read: u64,
    /// Cache-write tokens.
    pub cache_write: u64,
    /// Of the cache-write tokens, those with the 1-hour TTL.
    #[serde(default)]
    pub cache_write_1h: u64,
    /// Server-side web searches.
    #[serde(default)]
    pub web_searches: u64,
    /// Cost of the priced requests, micro-dollars.
    pub cost_micros: u64,
}

impl SpendRow {
    /// The row's tokens.
    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            web_searches: self.web_searches,
        }
    }

    /// Folds one entry in.
    pub fn add(&mut self, e: &SpendEntry) {
        if self.requests == 0 {
            self.day.clone_from(&e.day);
            self.key_id.clone_from(&e.key_id);
            self.owner.clone_from(&e.owner);
            self.team.clone_from(&e.team);
            self.provider.clone_from(&e.provider);
            self.model.clone_from(&e.model);
        }
        self.requests += 1;
        self.errors += e.error as u64;
        self.estimated += e.estimated as u64;
        self.unpriced += (e.ceiling || e.cost_micros.is_none()) as u64;
        self.input += e.usage.input;
        self.output += e.usage.output;
        self.cache_read += e.usage.cache_read;
        self.cache_write += e.usage.cache_write;
        self.cache_write_1h += e.usage.cache_write_1h;
        self.web_searches += e.usage.web_searches;
        self.cost_micros += e.cost_micros.unwrap_or(0);
    }

    /// Adds another row's counters; takes its identity fields if this row is empty.
    pub fn merge_row(&mut self, o: &SpendRow) {
        if self.requests == 0 {
            self.day.clone_from(&o.day);
            self.key_id.clone_from(&o.key_id);
            self.owner.clone_from(&o.owner);
            self.team.clone_from(&o.team);
            self.provider.clone_from(&o.provider);
            self.model.clone_from(&o.model);
        }
        self.merge(o);
    }

    fn merge(&mut self, o: &SpendRow) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.estimated += o.estimated;
        self.unpriced += o.unpriced;
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.cache_write_1h += o.cache_write_1h;
        self.web_searches += o.web_searches;
        self.cost_micros += o.cost_micros;
    }
}

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
    Flush(mpsc::Sender<()>),
}

/// Handle to the ledger writer. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

impl Ledger {
    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<dyn Store>) -> Result<Ledger> {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("conduit-ledger".into())
            .spawn(move || {
                let mut pending: Pending = Default::default();
                let write = |pending: &mut Pending| {
                    if pending.is_empty() {
                        return;
                    }
                    for (_, row) in pending.drain() {
                        if let Err(err) = store.add_spend(&row) {
                            // Loud: a lost ledger write is lost money attribution.
                            tracing::error!(key_id = %row.key_id, model = %row.model, requests = row.requests, error = %err, "spend ledger write failed");
                        }
                    }
                    // One fsync per batch: what a flush returned for survives a crash or an exit.
                    if let Err(err) = store.sync_spend() {
                        tracing::error!(error = %err, "spend ledger sync failed");
                    }
                };
                loop {
                    let mut flushes = Vec::new();
                    let mut closed = false;
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Entry(e)) => fold(&mut pending, &e),
                            Ok(Msg::Flush(done)) => flushes.push(done),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    write(&mut pending);
                    for done in flushes {
                        let _ = done.send(());
                    }
                    if closed {
                        return;
                    }
                    // Sleeping (not blocking on the channel) keeps senders from waking this thread.
                    match rx.recv_timeout(FOLD_WINDOW) {
                        Ok(Msg::Flush(done)) => {
                            write(&mut pending);
                            let _ = done.send(());
                        }
                        Ok(Msg::Entry(e)) => {
                            fold(&mut pending, &e);
                            std::thread::sleep(FOLD_WINDOW);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            write(&mut pending);
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::msg(format!("starting the ledger writer: {e}")))?;
        Ok(Ledger { tx })
    }

    /// Queues an entry (never blocks the caller).
    pub fn record(&self, entry: SpendEntry) {
        if self.tx.send(Msg::Entry(Box::new(entry))).is_err() {
            tracing::error!("spend ledger writer is gone; entry dropped");
        }
    }

    /// Returns once every entry recorded before this call is in the store.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
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
            usage: Usage {
                input: 10,
                output: 5,
                cache_read: 100,
                cache_write: 1,
                ..Usage::default()
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
        assert_eq!(crate::money::usd(46_625), "0.046625");
        assert_eq!(crate::money::usd(12_000_000_001), "12000.000001");
        assert!(By::parse("teams").is_err());
    }
}
