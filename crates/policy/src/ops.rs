//! What the admin API and the CLI show of the policy set. (Mode changes persist through the
//! gateway, `Gateway::set_policy_mode`; findings feedback is `conduit_state::operator`'s.)

use serde_json::json;

use crate::Policies;

/// `GET /v1/policies`: every policy's status, the mode table and the set digest.
pub fn listing(p: &Policies) -> serde_json::Value {
    json!({
        "policies": p.statuses(),
        "modes": p.modes().entries(),
        "set": p.set_digest(),
    })
}
