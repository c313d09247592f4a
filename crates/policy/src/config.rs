//! `[policies]` in the configuration file, and its validation.
//!
//! ```toml
//! [policies]
//! dir = "policies"                         # signed .wasm files (+ .wasm.sig, optional .toml)
//! trusted_keys = ["/etc/conduit/policy-signing.pub"]
//! allow_unsigned = false                   # development only; logged loudly
//! timeout_ms = 10                          # per call, plus per_mib_ms for each MiB of text
//! memory_mib = 64
//!
//! [policies.modes]                          # off | alert | block; exact category or prefix.*
//! "secret.*" = "block"
//!
//! [policies.builtin.entities]               # the built-ins: secrets, entities, models
//! on_error = "fail_closed"
//! config = { terms_file = "/etc/conduit/terms.json" }
//! ```
//! A `config` key ending in `_file` is read by the gateway (policies have no file access) and
//! passed as the same key without the suffix: `terms_file` → `terms`, holding the file's JSON
//! value when it parses as JSON, else its text.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::modes::Mode;
use conduit_core::error::{Error, Result};

/// What happens to a request when a policy fails (traps, times out, runs out of memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse the request (503): nothing leaves unchecked.
    FailClosed,
    /// Forward it and log the failure.
    FailOpen,
}

impl OnError {
    /// `fail_closed` / `fail_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::FailClosed => "fail_closed",
            OnError::FailOpen => "fail_open",
        }
    }
}

/// `[policies]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    /// Turn the whole policy stage off (default on).
    pub enabled: Option<bool>,
    /// Directory of policy components (env `CONDUIT_POLICY_DIR`; default `policies`).
    pub dir: Option<PathBuf>,
    /// PEM public keys (ECDSA P-256) whose signatures are accepted.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Accept unsigned policies from the directory. Development only.
    pub allow_unsigned: Option<bool>,
    /// How often the directory is checked for changes, in ms (default 1000).
    pub reload_interval_ms: Option<u64>,
    /// Deadline per call in ms before a policy is stopped (default 10).
    pub timeout_ms: Option<u64>,
    /// Extra deadline per MiB of text scanned (default 40).
    pub per_mib_ms: Option<u64>,
    /// Memory cap per policy instance in MiB (default 64).
    pub memory_mib: Option<u64>,
    /// Segment texts whose results are remembered (default 50,000).
    pub cache_entries: Option<usize>,
    /// Where compiled components are cached (env `CONDUIT_POLICY_CACHE_DIR`; default
    /// `<data_dir>/policy-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Default failure mode for policies that set none (default `fail_closed`).
    pub on_error: Option<OnError>,
    /// Mode per category or prefix (`secret.*`); default `alert`, `model.*` defaults to `block`.
    #[serde(default)]
    pub modes: BTreeMap<String, Mode>,
    /// Settings for the built-in policies, by name.
    #[serde(default)]
    pub builtin: HashMap<String, RawBuiltin>,
}

/// `[policies.builtin.<name>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    /// Load this built-in (default true).
    pub enabled: Option<bool>,
    /// Failure mode.
    pub on_error: Option<OnError>,
    /// The policy's configuration (passed as JSON).
    pub config: Option<toml::Table>,
}

pub use crate::runtime::Sandbox;

/// A built-in's validated settings.
#[derive(Debug, Clone)]
pub struct BuiltinConfig {
    /// `secrets`, `entities`, `models`.
    pub name: String,
    /// Failure mode.
    pub on_error: OnError,
    /// Configuration JSON handed to `configure`.
    pub config_json: String,
}

/// Validated `[policies]`.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The stage runs at all.
    pub enabled: bool,
    /// Directory of signed components; `None` when it does not exist and was not configured.
    pub dir: Option<PathBuf>,
    /// PEM public keys.
    pub trusted_keys: Vec<(PathBuf, String)>,
    /// Development switch.
    pub allow_unsigned: bool,
    /// Directory poll interval.
    pub reload_interval: Duration,
    /// Call limits.
    pub sandbox: Sandbox,
    /// Verdict cache size.
    pub cache_entries: usize,
    /// Compiled-component cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Authenticates the compiled artifacts there (the gateway derives it from the master key).
    pub cache_key: crate::runtime::CacheKey,
    /// Default failure mode.
    pub on_error: OnError,
    /// Configured modes.
    pub modes: BTreeMap<String, Mode>,
    /// The built-ins to load.
    pub builtins: Vec<BuiltinConfig>,
}

/// The names of the built-in policies.
pub const BUILTIN_NAMES: &[&str] = &["secrets", "entities", "models"];

impl RawPolicies {
    /// Validates; `data_dir` anchors the default cache dir.
    pub fn validate(self, data_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<PolicyConfig> {
        let configured_dir = env("CONDUIT_POLICY_DIR").map(PathBuf::from).or(self.dir);
        let dir = match configured_dir {
            Some(d) => Some(d),
            None => Some(PathBuf::from("policies")).filter(|d| d.is_dir()),
        };
        let mut trusted_keys = Vec::new();
        for path in self.trusted_keys {
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                Error::msg(format!(
                    "policies.trusted_keys: cannot read {}: {e}; give the path of a PEM public key (`conduit policy keygen` makes one)",
                    path.display()
                ))
            })?;
            crate::signature::parse_public_key(&pem)
                .map_err(|e| Error::msg(format!("policies.trusted_keys: {}: {e}", path.display())))?;
            trusted_keys.push((path, pem));
        }
        for category in self.modes.keys() {
            modes_key_ok(category)?;
        }
        let on_error = self.on_error.unwrap_or(OnError::FailClosed);
        let mut builtins = Vec::new();
        for name in self.builtin.keys() {
            if !BUILTIN_NAMES.contains(&name.as_str()) {
                return Err(Error::msg(format!(
                    "policies.builtin.{name}: there is no built-in policy {name:?}; the built-ins are {}",
                    BUILTIN_NAMES.join(", ")
                )));
            }
        }
        let mut raw_builtins = self.builtin;
        for name in BUILTIN_NAMES {
            let raw = raw_builtins.remove(*name).unwrap_or_default();
            if raw.enabled == Some(false) {
                continue;
            }
            let config_json = match raw.config {
                Some(table) => config_to_json(&format!("policies.builtin.{name}.config"), table)?,
                None => "{}".to_string(),
            };
            builtins.push(BuiltinConfig {
                name: name.to_string(),
                on_error: raw.on_error.unwrap_or(on_error),
                config_json,
            });
        }
        let memory_mib = self.memory_mib.unwrap_or(64);
        if !(4..=4096).contains(&memory_mib) {
            return Err(Error::msg(format!(
                "policies.memory_mib = {memory_mib}: give 4 to 4096 (MiB per policy instance)"
            )));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(10);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(Error::msg(format!(
                "policies.timeout_ms = {timeout_ms}: give 1 to 60000"
            )));
        }
        Ok(PolicyConfig {
            enabled: self.enabled.unwrap_or(true),
            dir,
            trusted_keys,
            allow_unsigned: self.allow_unsigned.unwrap_or(false),
            reload_interval: Duration::from_millis(self.reload_interval_ms.unwrap_or(1000).max(10)),
            sandbox: Sandbox {
                timeout: Duration::from_millis(timeout_ms),
                per_mib: Duration::from_millis(self.per_mib_ms.unwrap_or(40)),
                memory_bytes: (memory_mib as usize) << 20,
            },
            cache_entries: self.cache_entries.unwrap_or(50_000),
            cache_dir: Some(
                env("CONDUIT_POLICY_CACHE_DIR")
                    .map(PathBuf::from)
                    .or(self.cache_dir)
                    .unwrap_or_else(|| data_dir.join("policy-cache")),
            ),
            cache_key: Default::default(),
            on_error,
            modes: self.modes,
            builtins,
        })
    }
}

/// A mode key is a dotted category (`secret.aws-access-key`), a prefix (`secret.*`) or `*`,
/// optionally for one origin of the text (`secret.*@metadata`, see `segments::Origin`).
pub fn modes_key_ok(key: &str) -> Result<()> {
    let (key, origin) = match key.split_once('@') {
        Some((k, o)) => (k, Some(o)),
        None => (key, None),
    };
    if let Some(o) = origin
        && crate::segments::Origin::parse(o).is_none()
    {
        let all: Vec<&str> = crate::segments::Origin::ALL.iter().map(|o| o.as_str()).collect();
        return Err(Error::msg(format!(
            "policy mode for {key:?}@{o:?}: {o:?} is not an origin; one of: {}",
            all.join(", ")
        )));
    }
    let body = key.strip_suffix(".*").unwrap_or(key);
    let ok = key == "*"
        || (!body.is_empty()
            && body.len() <= 128
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "policy mode for {key:?}: name a category (`secret.aws-access-key`), a prefix (`secret.*`) or `*`, optionally @origin (`secret.*@metadata`)"
        )))
    }
}

/// Turns a policy's TOML config into JSON, reading `*_file` keys.
pub fn config_to_json(what: &str, table: toml::Table) -> Result<String> {
    let mut out = serde_json::Map::new();
    for (key, value) in table {
        match key.strip_suffix("_file") {
            Some(stem) if !stem.is_empty() => {
                let path = value
                    .as_str()
                    .ok_or_else(|| Error::msg(format!("{what}.{key}: give a file path as a string")))?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::msg(format!("{what}.{key}: cannot read {path}: {e}")))?;
                let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                out.insert(stem.to_string(), json);
            }
            _ => {
                let json = serde_json::to_value(&value)
                    .map_err(|e| Error::msg(format!("{what}.{key}: cannot be expressed as JSON: {e}")))?;
                out.insert(key, json);
            }
        }
    }
    Ok(serde_json::Value::Object(out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let c = RawPolicies::default().validate(dir.path(), &|_| None).unwrap();
        assert!(c.enabled);
        assert_eq!(c.builtins.len(), 3);
        assert_eq!(c.on_error, OnError::FailClosed);
        assert_eq!(c.sandbox.memory_bytes, 64 << 20);
        let raw: RawPolicies = toml::from_str("[builtin.nope]\n").unwrap();
        assert!(
            raw.validate(dir.path(), &|_| None)
                .unwrap_err()
                .to_string()
                .contains("no built-in policy")
        );
        let raw: RawPolicies = toml::from_str("[modes]\n\"Secret Stuff\" = \"block\"\n").unwrap();
        assert!(raw.validate(dir.path(), &|_| None).is_err());
        let err = toml::from_str::<RawPolicies>("[modes]\n\"secret.*\" = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sometimes") || err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn file_keys_are_read_for_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let terms = dir.path().join("terms.json");
        std::fs::write(&terms, r#"[{"id":"t1","term":"Orca-7"}]"#).unwrap();
        let table: toml::Table = toml::from_str(&format!(
            "terms_file = {:?}\nallow = [\"x\"]\n",
            terms.display().to_string()
        ))
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&config_to_json("c", table).unwrap()).unwrap();
        assert_eq!(json["terms"][0]["id"], "t1");
        assert_eq!(json["allow"][0], "x");
        let table: toml::Table = toml::from_str("gitleaks_file = \"/nonexistent/x.toml\"\n").unwrap();
        assert!(
            config_to_json("c", table)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/x.toml")
        );
    }
}
