//! Policy operations shared by the admin API and the CLI: listing and mode changes. (Findings
//! feedback and per-category statistics are `conduit_state::operator`'s.)

use serde_json::json;

use crate::error::{Error, Result};
use crate::policy::{Mode, Policies};
use crate::store::PolicyModeStore;

/// `GET /v1/policies`: every policy's status, the mode table and the set digest.
pub fn listing(p: &Policies) -> serde_json::Value {
    json!({
        "policies": p.statuses(),
        "modes": p.modes().entries(),
        "set": p.set_digest(),
    })
}

/// Parses a mode change, persists it, then applies it to the running set.
pub async fn set_mode(p: &Policies, modes: &dyn PolicyModeStore, category: &str, mode: &str) -> Result<()> {
    let m = Mode::parse(mode).ok_or_else(|| Error::msg(format!("mode {mode:?}: give one of off, alert, block")))?;
    crate::policy::config::modes_key_ok(category)?;
    modes.set(category, Some(m.as_str())).await?;
    p.set_mode(category, m)
}
