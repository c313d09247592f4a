//! Policy operations shared by the admin API and the CLI: listing, mode changes, findings
//! feedback and per-category statistics.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::policy::{Mode, Policies};
use crate::store::{FindingRecord, Store};

/// `GET /v1/policies`: every policy's status, the mode table and the set digest.
pub fn listing(p: &Policies) -> serde_json::Value {
    json!({
        "policies": p.statuses(),
        "modes": p.modes().entries(),
        "set": p.set_digest(),
    })
}

/// Parses and applies a mode change.
pub fn set_mode(p: &Policies, category: &str, mode: &str) -> Result<()> {
    let m = Mode::parse(mode).ok_or_else(|| Error::msg(format!("mode {mode:?}: give one of off, alert, block")))?;
    p.set_mode(category, m)
}

/// Marks a finding as a false positive.
pub fn mark_false_positive(store: &dyn Store, id: &str, by: &str) -> Result<FindingRecord> {
    store.mark_false_positive(id, by)?.ok_or_else(|| {
        Error::msg(format!(
            "there is no finding {id:?}; `conduit findings list` shows their ids (f_…)"
        ))
    })
}

/// Per-category feedback figures.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct CategoryStats {
    /// Findings in alert mode (forwarded).
    pub alerts: u64,
    /// Findings whose request was blocked.
    pub blocks: u64,
    /// Findings marked as false positives.
    pub false_positives: u64,
    /// false_positives / (alerts + blocks).
    pub false_positive_rate: f64,
}

/// Aggregates findings by category.
pub fn stats(findings: &[FindingRecord]) -> BTreeMap<String, CategoryStats> {
    let mut out: BTreeMap<String, CategoryStats> = BTreeMap::new();
    for f in findings {
        let s = out.entry(f.category.clone()).or_default();
        if f.action == "blocked" {
            s.blocks += 1;
        } else {
            s.alerts += 1;
        }
        if f.false_positive.is_some() {
            s.false_positives += 1;
        }
    }
    for s in out.values_mut() {
        let total = s.alerts + s.blocks;
        s.false_positive_rate = if total == 0 {
            0.0
        } else {
            s.false_positives as f64 / total as f64
        };
    }
    out
}
