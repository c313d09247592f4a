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
        let mut all = BTreeMap::new();
        all.insert("*".to_string(), Mode::Off);
        assert_eq!(
            Modes::layered(&all, &BTreeMap::new()).mode_for("custom.thing"),
            Mode::Off
        );
    }
}
