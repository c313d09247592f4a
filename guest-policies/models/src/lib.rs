//! Built-in **models** policy: which models a request may name, by glob (`claude-sonnet-*`),
//! globally, per team and per key. A model outside the allow-list is refused with a 403 that names
//! the model and what is allowed — never silently replaced by another model.
//!
//! Configuration (JSON, or the TOML table the gateway turns into JSON):
//! ```json
//! {"allow": ["claude-sonnet-*", "claude-haiku-*"],
//!  "teams": {"research": ["claude-opus-*", "claude-sonnet-*"]},
//!  "keys":  {"k_2f9c1a": ["*"]}}
//! ```
//! The most specific list applies: the key's, else the team's, else the global one. No list (or
//! an empty configuration) allows every model. A request without a model field is not judged.

use std::collections::HashMap;

use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod component;

/// The category this policy emits.
pub const CATEGORY: &str = "model.not-allowed";

/// The allow-lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowLists {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    teams: HashMap<String, Vec<String>>,
    #[serde(default)]
    keys: HashMap<String, Vec<String>>,
}

/// Why a model was refused: which list applied and what it allows.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// `key k_…`, `team research` or `this gateway`.
    pub scope: String,
    /// The globs of the list that applied.
    pub allowed: Vec<String>,
}

impl AllowLists {
    /// Parses and checks a configuration.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let lists: AllowLists = if config.trim().is_empty() {
            AllowLists::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("models policy configuration: {e}"))?
        };
        let all = lists
            .allow
            .iter()
            .flatten()
            .chain(lists.teams.values().flatten())
            .chain(lists.keys.values().flatten());
        for glob in all {
            if glob.is_empty() || glob.len() > 200 {
                return Err(format!(
                    "models policy: {glob:?} is not a model glob (1–200 characters, `*` and `?` as wildcards)"
                ));
            }
        }
        Ok(lists)
    }

    /// `Ok` when `model` may be used by this key / team, else which list refused it.
    pub fn check(&self, model: &str, key_id: &str, team: Option<&str>) -> Result<(), Refusal> {
        let (scope, list) = if let Some(list) = self.keys.get(key_id) {
            (format!("key {key_id}"), list)
        } else if let Some((team, list)) = team.and_then(|t| self.teams.get_key_value(t)) {
            (format!("team {team}"), list)
        } else if let Some(list) = &self.allow {
            ("this gateway".to_string(), list)
        } else {
            return Ok(());
        };
        if list.iter().any(|g| glob_match(g.as_bytes(), model.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal {
                scope,
                allowed: list.clone(),
            })
        }
    }
}

impl Refusal {
    /// The message the engineer sees.
    pub fn message(&self, model: &str) -> String {
        let allowed = if self.allowed.is_empty() {
            "no model".to_string()
        } else {
            self.allowed.join(", ")
        };
        format!(
            "model `{model}` is not allowed for {}; allowed: {allowed}. Choose an allowed model (e.g. `--model` or ANTHROPIC_MODEL / the SDK's model argument); Conduit never substitutes one.",
            self.scope
        )
    }
}

/// Glob match with `*` (any run, also empty) and `?` (one byte); everything else is literal.
/// Iterative with one backtrack point, so linear-ish and never exponential.
pub fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    g = sg + 1;
                    t = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"claude-sonnet-*", b"claude-sonnet-4-5"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*-mini", b"gpt-5-mini"));
        assert!(glob_match(b"gpt-?", b"gpt-5"));
        assert!(!glob_match(b"gpt-?", b"gpt-55"));
        assert!(!glob_match(b"claude-sonnet-*", b"claude-opus-4"));
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ"));
        assert!(!glob_match(b"claude", b"claude-opus"));
        // No blow-up on adversarial input.
        let text = "a".repeat(10_000);
        assert!(!glob_match(b"*a*a*a*a*a*b", text.as_bytes()));
    }

    #[test]
    fn most_specific_list_applies() {
        let lists = AllowLists::from_json(
            r#"{"allow":["claude-sonnet-*","claude-haiku-*"],"teams":{"research":["claude-opus-*"]},"keys":{"k1":["*"]}}"#,
        )
        .unwrap();
        assert!(lists.check("claude-sonnet-4-5", "k9", None).is_ok());
        let refusal = lists.check("claude-opus-4-8", "k9", Some("payments")).unwrap_err();
        assert_eq!(refusal.scope, "this gateway");
        let msg = refusal.message("claude-opus-4-8");
        assert!(
            msg.contains("`claude-opus-4-8`") && msg.contains("claude-sonnet-*, claude-haiku-*"),
            "{msg}"
        );
        assert!(lists.check("claude-opus-4-8", "k9", Some("research")).is_ok());
        assert_eq!(
            lists
                .check("claude-sonnet-4-5", "k9", Some("research"))
                .unwrap_err()
                .scope,
            "team research"
        );
        assert!(lists.check("gpt-5", "k1", Some("research")).is_ok());
    }

    #[test]
    fn no_list_allows_everything_and_bad_config_is_refused() {
        let lists = AllowLists::from_json("{}").unwrap();
        assert!(lists.check("anything", "k", Some("t")).is_ok());
        assert!(AllowLists::from_json("").unwrap().check("x", "k", None).is_ok());
        assert!(
            AllowLists::from_json(r#"{"alow":["x"]}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(AllowLists::from_json(r#"{"allow":[""]}"#).is_err());
        let empty = AllowLists::from_json(r#"{"allow":[]}"#).unwrap();
        assert!(
            empty
                .check("claude", "k", None)
                .unwrap_err()
                .message("claude")
                .contains("allowed: no model")
        );
    }
}
