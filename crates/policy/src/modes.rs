//! What a finding does: `off` (dropped), `alert` (recorded, request forwarded) or `block`
//! (request refused). Set per exact category or per prefix (`secret.*`); the most specific entry
//! wins. Run-time changes (`conduit policy mode`, the admin API) are persisted in the store and
//! override the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A category's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Ignore.
    Off,
    /// Record and forward.
    Alert,
    /// Record and refuse.
    Block,
}

impl Mode {
    /// `off` / `alert` / `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Alert => "alert",
            Mode::Block => "block",
        }
    }

    /// Parses `off` / `alert` / `block`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "alert" => Some(Mode::Alert),
            "block" => Some(Mode::Block),
            _ => None,
        }
    }

    /// As [`Mode::parse`], for a value an operator typed: the error names it and the choices.
    pub fn parse_arg(s: &str) -> conduit_core::error::Result<Mode> {
        Mode::parse(s).ok_or_else(|| conduit_core::Error::msg(format!("mode {s:?}: give one of off, alert, block")))
    }
}

/// The mode table.
#[derive(Debug, Clone, PartialEq)]
pub struct Modes {
    entries: BTreeMap<String, Mode>,
}

impl Default for Modes {
    fn default() -> Self {
        let mut entries = BTreeMap::new();
        // A model outside the allow-list is refused unless an operator says otherwise.
        entries.insert("model.*".to_string(), Mode::Block);
        Self { entries }
    }
}

impl Modes {
    /// Defaults, then the file's entries, then the persisted run-time overrides.
    pub fn layered(file: &BTreeMap<String, Mode>, overrides: &BTreeMap<String, Mode>) -> Self {
        let mut m = Modes::default();
        m.entries.extend(file.iter().map(|(k, v)| (k.clone(), *v)));
        m.entries.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        m
    }

    /// The mode for `category`: exact entry, else the longest matching `prefix.*`, else `*`,
    /// else `alert`.
    pub fn mode_for(&self, category: &str) -> Mode {
        if let Some(m) = self.entries.get(category) {
            return *m;
        }
        let mut best: Option<(usize, Mode)> = None;
        for (key, mode) in &self.entries {
            if let Some(prefix) = key.strip_suffix(".*") {
                let matches = category.len() > prefix.len()
                    && category.starts_with(prefix)
                    && category.as_bytes()[prefix.len()] == b'.';
                if matches && best.is_none_or(|(len, _)| prefix.len() > len) {
                    best = Some((prefix.len(), *mode));
                }
            }
        }
        best.map(|(_, m)| m)
            .or_else(|| self.entries.get("*").copied())
            .unwrap_or(Mode::Alert)
    }

    /// The mode for `category` found in text of `origin`: an entry for that origin
    /// (`category@origin`, `prefix.*@origin`, `*@origin`; most specific wins), else [`mode_for`].
    ///
    /// [`mode_for`]: Modes::mode_for
    pub fn mode_at(&self, category: &str, origin: &str) -> Mode {
        let mut best: Option<(usize, Mode)> = None;
        for (key, mode) in &self.entries {
            let Some((cat, o)) = key.split_once('@') else { continue };
            if o != origin {
                continue;
            }
            let specificity = if cat == category {
                usize::MAX
            } else if cat == "*" {
                0
            } else if let Some(prefix) = cat.strip_suffix(".*")
                && category.len() > prefix.len()
                && category.starts_with(prefix)
                && category.as_bytes()[prefix.len()] == b'.'
            {
                prefix.len() + 1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, *mode));
            }
        }
        best.map_or_else(|| self.mode_for(category), |(_, m)| m)
    }

    /// Sets one entry.
    pub fn set(&mut self, key: &str, mode: Mode) {
        self.entries.insert(key.to_string(), mode);
    }

    /// All entries, for listing.
    pub fn entries(&self) -> &BTreeMap<String, Mode> {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_wins() {
        let mut file = BTreeMap::new();
        file.insert("secret.*".to_string(), Mode::Block);
        file.insert("secret.generic".to_string(), Mode::Alert);
        file.insert("entity.*".to_string(), Mode::Off);
        let mut overrides = BTreeMap::new();
        overrides.insert("entity.customer".to_string(), Mode::Block);
        let m = Modes::layered(&file, &overrides);
        assert_eq!(m.mode_for("secret.aws-access-key"), Mode::Block);
        assert_eq!(m.mode_for("secret.generic"), Mode::Alert);
        assert_eq!(m.mode_for("entity.codename"), Mode::Off);
        assert_eq!(m.mode_for("entity.customer"), Mode::Block);
        assert_eq!(m.mode_for("model.not-allowed"), Mode::Block);
        assert_eq!(m.mode_for("custom.thing"), Mode::Alert);
        assert_eq!(m.mode_for("secretive.x"), Mode::Alert, "a prefix ends at a dot");
        // Per origin: an origin's entry wins there, and only there.
        let mut by_origin = BTreeMap::new();
        by_origin.insert("secret.*".to_string(), Mode::Block);
        by_origin.insert("secret.*@metadata".to_string(), Mode::Alert);
        by_origin.insert("secret.github-token@header".to_string(), Mode::Off);
        let m = Modes::layered(&by_origin, &BTreeMap::new());
        assert_eq!(m.mode_at("secret.aws-access-key", "prompt"), Mode::Block);
        assert_eq!(m.mode_at("secret.aws-access-key", "metadata"), Mode::Alert);
        assert_eq!(m.mode_at("secret.github-token", "header"), Mode::Off);
        assert_eq!(m.mode_at("secret.aws-access-key", "header"), Mode::Block);
        assert_eq!(
            m.mode_for("secret.aws-access-key"),
            Mode::Block,
            "origin entries do not leak"
        );
        let mut all = BTreeMap::new();
        all.insert("*".to_string(), Mode::Off);
        assert_eq!(
            Modes::layered(&all, &BTreeMap::new()).mode_for("custom.thing"),
            Mode::Off
        );
    }
}
