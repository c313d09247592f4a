//! Admin roles and the route table that says which role each admin route needs, and what a
//! state-changing route records as its action and object. Pure: below the configuration that
//! maps IdP groups to roles and the admin API that enforces them.

use http::Method;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Spend, budgets, prices.
    Finance,
    /// Findings, policy modes, audit export, revocations.
    Security,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Finance, Role::Security, Role::Admin];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Finance => "finance",
            Role::Security => "security",
            Role::Admin => "admin",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::msg(format!("role {s:?} is not one of viewer, finance, security, admin")))
    }
}

/// The role an admin route needs.
pub fn needed(method: &Method, segments: &[&str]) -> Role {
    let read = method == Method::GET || method == Method::HEAD;
    match (read, segments) {
        (true, ["v1", "audit", ..]) => Role::Security,
        (true, ["v1", "admin-tokens", ..]) => Role::Admin,
        (true, _) => Role::Viewer,
        (false, ["v1", "budgets", _]) | (false, ["v1", "prices", "import"]) => Role::Finance,
        (false, ["v1", "policies", "modes", _])
        | (false, ["v1", "findings", _, "false-positive"])
        | (false, ["v1", "keys", _, "revoke"])
        | (false, ["v1", "users", _, _]) => Role::Security,
        _ => Role::Admin,
    }
}

/// The action and object a state-changing route records.
pub fn action(method: &Method, segments: &[&str]) -> (String, Option<String>) {
    let one = |s: &str| Some(crate::percent::decode(s));
    match (method.as_str(), segments) {
        ("PUT", ["v1", "budgets", scope]) => ("budget.set".into(), one(scope)),
        ("POST", ["v1", "prices", "import"]) => ("prices.import".into(), None),
        ("PUT", ["v1", "policies", "modes", c]) => ("policy.mode".into(), one(c)),
        ("POST", ["v1", "findings", id, "false-positive"]) => ("finding.false-positive".into(), one(id)),
        ("POST", ["v1", "keys"]) => ("key.create".into(), None),
        ("PATCH", ["v1", "keys", id]) => ("key.limits".into(), one(id)),
        ("POST", ["v1", "keys", id, "revoke"]) => ("key.revoke".into(), one(id)),
        ("PUT", ["v1", "credentials", p]) => ("credential.set".into(), one(p)),
        ("POST", ["v1", "credentials", "rotate-master"]) => ("master-key.rotate".into(), None),
        ("POST", ["v1", "users", e, verb]) => (format!("user.{verb}"), one(e)),
        ("POST", ["v1", "admin-tokens"]) => ("admin-token.create".into(), None),
        ("POST", ["v1", "admin-tokens", id, "revoke"]) => ("admin-token.revoke".into(), one(id)),
        (m, s) => (format!("{} /{}", m.to_ascii_lowercase(), s.join("/")), None),
    }
}
