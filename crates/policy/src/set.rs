//! Loading policies into a set, running the set on a request, and hot reload.
//!
//! The set is the built-ins (embedded in the binary, signed at build time) plus every `.wasm` in
//! the policy directory whose signature verifies against a trusted key. A directory change is
//! picked up within `reload_interval`: a new or replaced file is verified, compiled and
//! configured before it replaces anything, so a broken new version leaves the old one serving
//! (the reason shows in `conduit policy list` and the log); a removed file leaves the set.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::SystemTime;

use p256::ecdsa::VerifyingKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::{self, CachedFinding, PartFinding, PartVerdict, VerdictCache};
use crate::config::{OnError, PolicyConfig};
use crate::modes::{Mode, Modes};
use crate::runtime::{self, Failure, Prepared, RequestInfo, Segment as WitSegment, Severity};
use crate::segments::Segment;
use crate::{builtin, signature};
use conduit_wire::content::{Part, PartKey, PartSummary, Recall};

/// One loaded policy.
pub struct LoadedPolicy {
    /// From `describe`.
    pub name: String,
    /// From `describe`.
    pub version: String,
    /// From `describe`.
    pub categories: Vec<String>,
    /// `builtin` or the file path.
    pub source: String,
    /// SHA-256 of the component and its configuration.
    pub digest: [u8; 32],
    /// Failure mode.
    pub on_error: OnError,
    /// Which trusted key signed it.
    pub signed_by: String,
    prepared: Prepared,
}

impl LoadedPolicy {
    /// Fills the instance pool on a thread of its own, one idle instance per core (four at most),
    /// off the request path: a snapshot's effect (no request waits for a `configure`) without one.
    /// The thread holds the policy weakly: one replaced by a reload, and dropped, stops it; and
    /// it makes at most that many instances, whatever happens to them.
    fn prewarm_in_background(self: &Arc<Self>) {
        let policy = Arc::downgrade(self);
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
        let spawned = std::thread::Builder::new()
            .name(format!("conduit-policy-prewarm-{}", self.name))
            .spawn(move || {
                for _ in 0..n {
                    let Some(policy) = policy.upgrade() else { return };
                    if !policy.prepared.prewarm_one(n) {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(policy = %self.name, error = %e, "cannot start the pre-configuring thread; instances are configured on demand");
        }
    }

    /// Idle configured instances of this policy (a test aid).
    pub fn idle_instances(&self) -> usize {
        self.prepared.idle()
    }
}

/// The policies in force.
pub struct PolicySet {
    policies: Vec<Arc<LoadedPolicy>>,
    digest: [u8; 32],
}

impl PolicySet {
    fn new(policies: Vec<Arc<LoadedPolicy>>) -> Self {
        let mut h = Sha256::new();
        for p in &policies {
            h.update(p.digest);
        }
        Self {
            digest: h.finalize().into(),
            policies,
        }
    }

    /// Hex digest of the set (recorded with findings; keys the verdict cache).
    pub fn digest_hex(&self) -> String {
        conduit_core::hex::encode(&self.digest[..8])
    }
}

/// What `conduit policy list` shows for one policy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyStatus {
    /// Policy name (file stem until loaded).
    pub name: String,
    /// `builtin` or the file.
    pub source: String,
    /// `loaded`, `refused`, or `loaded (new version refused)`.
    pub state: String,
    /// Version from `describe`.
    pub version: Option<String>,
    /// Categories it emits.
    pub categories: Vec<String>,
    /// Key that signed it (file name), `build` for built-ins, `unsigned (allow_unsigned)`.
    pub signed_by: Option<String>,
    /// `fail_closed` / `fail_open`.
    pub on_error: String,
    /// Why it was refused, if it was.
    pub error: Option<String>,
}

/// A finding after modes were applied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportedFinding {
    /// Policy name.
    pub policy: String,
    /// Category.
    pub category: String,
    /// Rule id.
    pub rule_id: String,
    /// Index of the segment in the request, if the finding is about one that was read this time
    /// (`None` for request-level findings and for findings in a remembered part: see
    /// [`ReportedFinding::in_text`]).
    pub segment: Option<usize>,
    /// JSON path of the segment, or `request`.
    pub location: String,
    /// Where the segment's text comes from (`prompt`, `tool-definition`, `header`, …); `request`
    /// for request-level findings.
    pub origin: &'static str,
    /// Byte span.
    pub start: u32,
    pub end: u32,
    /// Severity.
    pub severity: &'static str,
    /// The category's mode.
    pub mode: Mode,
}

impl ReportedFinding {
    /// About a place in the request's text (its `location` is a path and `start`..`end` a span
    /// in it), not about the request as a whole.
    pub fn in_text(&self) -> bool {
        self.origin != "request"
    }
}

/// The request's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Nothing to report.
    Allow,
    /// Findings recorded, request forwarded.
    Alert,
    /// Request refused.
    Block,
}

/// The result of running the set on one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Findings whose mode is not `off`.
    pub findings: Vec<ReportedFinding>,
    /// Overall decision.
    pub decision: Decision,
    /// A policy's own refusal (status, message, policy) that is in force.
    pub deny: Option<(u16, String, String)>,
    /// A fail-closed policy that failed (policy, reason).
    pub failure: Option<(String, String)>,
    /// Set digest (hex).
    pub set_digest: String,
    /// Segments answered from the cache / scanned.
    pub cached: usize,
    pub scanned: usize,
}

impl Outcome {
    /// Folds another run's outcome in (a batch's further models): findings appended, the stronger
    /// decision, the first refusal and failure.
    pub fn merge(&mut self, other: Outcome) {
        self.findings.extend(other.findings);
        self.decision = match (self.decision, other.decision) {
            (Decision::Block, _) | (_, Decision::Block) => Decision::Block,
            (Decision::Alert, _) | (_, Decision::Alert) => Decision::Alert,
            _ => Decision::Allow,
        };
        if self.deny.is_none() {
            self.deny = other.deny;
        }
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }
}

/// The policy runtime of one gateway.
pub struct Policies {
    config: PolicyConfig,
    set: RwLock<Arc<PolicySet>>,
    statuses: RwLock<Vec<PolicyStatus>>,
    modes: RwLock<Modes>,
    cache: VerdictCache,
    /// Whole request parts' verdicts (`conduit_wire::content::Part`).
    parts: VerdictCache<Arc<PartVerdict>>,
    trusted: Vec<(String, VerifyingKey)>,
    /// Directory state: file → (fingerprint, loaded version).
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    builtins: Vec<Arc<LoadedPolicy>>,
}

/// What identifies a version of a policy file on disk.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// A directory file's fingerprint and the version of it that serves (if any).
type FileState = (Fingerprint, Option<Arc<LoadedPolicy>>);

impl Policies {
    /// Loads the built-ins and the directory. A built-in that fails to load stops start-up; a
    /// directory policy that fails is refused and reported. `stored_modes` are the run-time mode
    /// overrides kept in the state store (`conduit policy test` passes none).
    pub fn open(config: PolicyConfig, stored_modes: &[(String, String)]) -> conduit_core::error::Result<Arc<Policies>> {
        let mut trusted = Vec::new();
        for (path, pem) in &config.trusted_keys {
            let key = signature::parse_public_key(pem).map_err(conduit_core::Error::msg)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            trusted.push((name, key));
        }
        if config.allow_unsigned {
            tracing::warn!(
                "policies.allow_unsigned = true: UNSIGNED policies from the policy directory will run. Development only — never in production."
            );
        }
        let overrides = parse_stored_modes(stored_modes);
        let policies = Policies {
            modes: RwLock::new(Modes::layered(&config.modes, &overrides)),
            cache: VerdictCache::new(config.cache_entries),
            parts: VerdictCache::new(config.cache_entries),
            set: RwLock::new(Arc::new(PolicySet::new(Vec::new()))),
            statuses: RwLock::new(Vec::new()),
            files: Mutex::new(BTreeMap::new()),
            builtins: Vec::new(),
            trusted,
            config,
        };
        let builtins = policies.load_builtins()?;
        let policies = Arc::new(Policies { builtins, ..policies });
        policies.reload();
        Ok(policies)
    }

    fn load_builtins(&self) -> conduit_core::error::Result<Vec<Arc<LoadedPolicy>>> {
        let build_key = signature::parse_public_key(builtin::BUILTIN_PUBLIC_KEY).map_err(conduit_core::Error::msg)?;
        let mut out = Vec::new();
        for b in &self.config.builtins {
            let Some((_, wasm, sig)) = builtin::BUILTIN.iter().find(|(n, _, _)| *n == b.name) else {
                return Err(conduit_core::Error::msg(format!(
                    "built-in policy {} is missing from this build",
                    b.name
                )));
            };
            let sig = signature::decode_signature(sig.as_bytes()).map_err(conduit_core::Error::msg)?;
            if signature::verify(wasm, &sig, &[build_key]).is_none() {
                return Err(conduit_core::Error::msg(format!(
                    "built-in policy {}: its build signature does not verify; the binary is damaged",
                    b.name
                )));
            }
            let loaded = self
                .prepare(wasm, &b.config_json, b.on_error, "builtin".into(), "build".into())
                .map_err(|e| {
                    conduit_core::Error::msg(format!(
                        "built-in policy {}: {e}; fix [policies.builtin.{}] in the configuration",
                        b.name, b.name
                    ))
                })?;
            let loaded = Arc::new(loaded);
            loaded.prewarm_in_background();
            out.push(loaded);
        }
        Ok(out)
    }

    fn prepare(
        &self,
        wasm: &[u8],
        config_json: &str,
        on_error: OnError,
        source: String,
        signed_by: String,
    ) -> Result<LoadedPolicy, String> {
        let cache = self.config.cache_dir.as_deref().map(|d| (d, &self.config.cache_key));
        let component = runtime::compile(wasm, cache)?;
        let (prepared, description) = Prepared::new(&component, config_json, self.config.sandbox)?;
        let mut h = Sha256::new();
        h.update(wasm);
        h.update(config_json.as_bytes());
        Ok(LoadedPolicy {
            name: description.name,
            version: description.version,
            categories: description.categories,
            source,
            digest: h.finalize().into(),
            on_error,
            signed_by,
            prepared,
        })
    }

    /// Starts the directory watcher (a thread polling every `reload_interval`).
    pub fn watch(self: &Arc<Self>) {
        if self.config.dir.is_none() {
            return;
        }
        let weak: Weak<Policies> = Arc::downgrade(self);
        let interval = self.config.reload_interval;
        let spawned = std::thread::Builder::new()
            .name("conduit-policy-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(p) = weak.upgrade() else { return };
                    p.reload();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the policy directory watcher; changes need a restart");
        }
    }

    /// Re-reads the policy directory and swaps in a new set if anything changed.
    pub fn reload(&self) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut statuses: Vec<PolicyStatus> = self.builtins.iter().map(|p| status_of(p, None)).collect();
        let found = self.config.dir.as_deref().map(scan_dir).unwrap_or_default();
        let mut changed = files.keys().any(|k| !found.contains_key(k));
        files.retain(|k, _| found.contains_key(k));
        for (wasm_path, fingerprint) in found {
            let previous = files.get(&wasm_path).cloned();
            let (status, loaded) = match previous {
                Some((fp, loaded)) if fp == fingerprint => {
                    // Unchanged: keep what we had (loaded or refused) and its status.
                    let prior = self.statuses.read().unwrap_or_else(|p| p.into_inner());
                    let status = prior
                        .iter()
                        .find(|s| s.source == wasm_path.display().to_string())
                        .cloned()
                        .unwrap_or_else(|| refused(&wasm_path, "unknown".into(), self.config.on_error));
                    (status, loaded)
                }
                previous => {
                    changed = true;
                    let old = previous.and_then(|(_, l)| l);
                    match self.load_file(&wasm_path) {
                        Ok(p) => {
                            tracing::info!(policy = %p.name, version = %p.version, file = %wasm_path.display(), signed_by = %p.signed_by, "policy loaded");
                            let p = Arc::new(p);
                            p.prewarm_in_background();
                            (status_of(&p, None), Some(p))
                        }
                        Err(reason) => {
                            tracing::error!(file = %wasm_path.display(), reason = %reason, kept_previous = old.is_some(), "policy refused");
                            match old {
                                Some(old) => (status_of(&old, Some(reason)), Some(old)),
                                None => (refused(&wasm_path, reason, self.config.on_error), None),
                            }
                        }
                    }
                }
            };
            statuses.push(status);
            files.insert(wasm_path, (fingerprint, loaded));
        }
        let first_load = self.set.read().unwrap_or_else(|p| p.into_inner()).policies.is_empty();
        if changed || first_load {
            let mut all: Vec<Arc<LoadedPolicy>> = self.builtins.clone();
            all.extend(files.values().filter_map(|(_, l)| l.clone()));
            let set = Arc::new(PolicySet::new(all));
            tracing::info!(policies = set.policies.len(), digest = %set.digest_hex(), "policy set in force");
            *self.set.write().unwrap_or_else(|p| p.into_inner()) = set;
        }
        *self.statuses.write().unwrap_or_else(|p| p.into_inner()) = statuses;
    }

    fn load_file(&self, wasm_path: &Path) -> Result<LoadedPolicy, String> {
        let wasm = std::fs::read(wasm_path).map_err(|e| format!("cannot read: {e}"))?;
        let signed_by = self.check_signature(wasm_path, &wasm)?;
        let settings_path = wasm_path.with_extension("toml");
        let (on_error, config_json) = if settings_path.is_file() {
            read_settings(&settings_path, self.config.on_error)?
        } else {
            (self.config.on_error, "{}".to_string())
        };
        self.prepare(
            &wasm,
            &config_json,
            on_error,
            wasm_path.display().to_string(),
            signed_by,
        )
    }

    fn check_signature(&self, wasm_path: &Path, wasm: &[u8]) -> Result<String, String> {
        let sig_path = sig_path(wasm_path);
        let sig = match std::fs::read(&sig_path) {
            Ok(s) => s,
            Err(_) if self.config.allow_unsigned => {
                tracing::warn!(file = %wasm_path.display(), "running an UNSIGNED policy (policies.allow_unsigned = true)");
                return Ok("unsigned (allow_unsigned)".into());
            }
            Err(_) => {
                return Err(format!(
                    "no signature: expected {} (sign with `conduit policy sign` or `cosign sign-blob`)",
                    sig_path.display()
                ));
            }
        };
        let sig = signature::decode_signature(&sig)?;
        let keys: Vec<VerifyingKey> = self.trusted.iter().map(|(_, k)| *k).collect();
        match signature::verify(wasm, &sig, &keys) {
            Some(i) => Ok(self.trusted[i].0.clone()),
            None if self.config.allow_unsigned => {
                tracing::warn!(file = %wasm_path.display(), "running a policy whose signature does not verify (policies.allow_unsigned = true)");
                Ok("unverified (allow_unsigned)".into())
            }
            None if self.trusted.is_empty() => Err(
                "signed, but no trusted key is configured: add the signer's public key to policies.trusted_keys".into(),
            ),
            None => Err(format!(
                "the signature does not verify against any trusted key ({}): the file was changed after signing or signed by another key",
                self.trusted
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Status of every policy, built-ins first.
    pub fn statuses(&self) -> Vec<PolicyStatus> {
        self.statuses.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The mode table in force.
    pub fn modes(&self) -> Modes {
        self.modes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes a mode at run time, in this process (`Gateway::set_policy_mode` persists it first).
    pub fn set_mode(&self, key: &str, mode: Mode) -> conduit_core::error::Result<()> {
        crate::config::modes_key_ok(key)?;
        self.modes.write().unwrap_or_else(|p| p.into_inner()).set(key, mode);
        tracing::info!(category = key, mode = mode.as_str(), "policy mode changed");
        Ok(())
    }

    /// `GET /v1/policies`: every policy's status, the mode table and the set digest.
    pub fn listing(&self) -> serde_json::Value {
        serde_json::json!({
            "policies": self.statuses(),
            "modes": self.modes().entries(),
            "set": self.set_digest(),
        })
    }

    /// Digest of the set in force.
    pub fn set_digest(&self) -> String {
        self.set.read().unwrap_or_else(|p| p.into_inner()).digest_hex()
    }

    /// Runs every policy on a request's segments.
    pub fn scan(&self, info: &RequestInfo, segments: &[Segment<'_>]) -> Outcome {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.scan_in(&set, info, segments, &[], Vec::new())
    }

    /// Runs every policy on a request read with this runtime as its [`Recall`]: `segments` are
    /// those of the parts that were read; a remembered part's verdict applies as it was given.
    /// `None` when a remembered verdict is gone by now (evicted, or the set was reloaded since
    /// the body was read): read the body again without recall and scan that.
    pub fn scan_parts(&self, info: &RequestInfo, segments: &[Segment<'_>], parts: &[Part]) -> Option<Outcome> {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut remembered = Vec::new();
        for part in parts.iter().filter(|p| p.remembered) {
            let verdict = self.parts.get(&part.key).filter(|v| v.set == set.digest)?;
            remembered.push((part, verdict));
        }
        Some(self.scan_in(&set, info, segments, parts, remembered))
    }

    fn scan_in(
        &self,
        set: &PolicySet,
        info: &RequestInfo,
        segments: &[Segment<'_>],
        parts: &[Part],
        remembered: Vec<(&Part, Arc<PartVerdict>)>,
    ) -> Outcome {
        let keys: Vec<cache::Key> = segments.iter().map(|s| cache::key(&set.digest, &s.text)).collect();
        let mut per_segment: Vec<Option<Vec<CachedFinding>>> = keys.iter().map(|k| self.cache.get(k)).collect();
        let fresh_idx: Vec<usize> = (0..segments.len()).filter(|&i| per_segment[i].is_none()).collect();
        let fresh: Vec<WitSegment> = fresh_idx
            .iter()
            .map(|&i| WitSegment {
                path: segments[i].path.clone(),
                text: segments[i].text.to_string(),
            })
            .collect();
        let mut new_findings: Vec<Vec<CachedFinding>> = vec![Vec::new(); fresh.len()];
        let mut request_level: Vec<(usize, runtime::Finding)> = Vec::new();
        let mut denies: Vec<(usize, u16, String)> = Vec::new();
        let mut failure = None;
        let mut any_failed = false;
        for (pi, policy) in set.policies.iter().enumerate() {
            match policy.prepared.evaluate(info, &fresh) {
                Ok(verdict) => {
                    for f in verdict.findings {
                        match f.segment.map(|s| s as usize) {
                            Some(s) if s < fresh.len() && f.start <= f.end => new_findings[s].push(CachedFinding {
                                policy: pi,
                                severity: severity_name(f.severity),
                                category: f.category,
                                rule_id: recordable_rule(f.rule_id),
                                start: f.start,
                                end: f.end,
                            }),
                            Some(s) => {
                                tracing::warn!(policy = %policy.name, segment = s, "policy reported a finding outside the segments it was given; ignored")
                            }
                            None => request_level.push((pi, f)),
                        }
                    }
                    if let Some(deny) = verdict.deny {
                        denies.push((pi, deny.status, deny.message));
                    }
                }
                Err(fail) => {
                    any_failed = true;
                    self.log_failure(policy, &fail);
                    if policy.on_error == OnError::FailClosed && failure.is_none() {
                        failure = Some((policy.name.clone(), fail.to_string()));
                    }
                }
            }
        }
        // Verdicts are remembered only from a scan every policy answered without refusing the
        // request as a whole: a policy's `deny` or a request-level finding may rest on text
        // that a resend would no longer show it (its segments answered from the cache).
        let rememberable = !any_failed && denies.is_empty() && request_level.is_empty();
        if rememberable {
            self.cache.put_all(
                fresh_idx
                    .iter()
                    .enumerate()
                    .map(|(slot, &i)| (keys[i], new_findings[slot].clone())),
            );
        }
        for (slot, &i) in fresh_idx.iter().enumerate() {
            per_segment[i] = Some(std::mem::take(&mut new_findings[slot]));
        }
        // Parts read this time are remembered with their findings (not when a policy failed:
        // its verdict is missing).
        if rememberable {
            self.parts.put_all(
                parts
                    .iter()
                    .filter(|p| !p.remembered)
                    .filter_map(|p| Some((p.key, Arc::new(part_verdict(set.digest, p, segments, &per_segment)?)))),
            );
        }
        let modes = self.modes.read().unwrap_or_else(|p| p.into_inner());
        let mut findings = Vec::new();
        let remembered_segments: usize = remembered.iter().map(|(p, _)| p.summary.segments as usize).sum();
        // Remembered parts' findings come where the part sits in the body, as if it were read.
        let mut pending = remembered.into_iter().peekable();
        let report_part = |findings: &mut Vec<ReportedFinding>, part: &Part, verdict: &PartVerdict| {
            for pf in &verdict.findings {
                let f = &pf.finding;
                let origin = pf.origin.as_str();
                let mode = modes.mode_at(&f.category, origin);
                if mode == Mode::Off || !valid_category(&f.category) {
                    continue;
                }
                findings.push(ReportedFinding {
                    policy: set.policies.get(f.policy).map(|p| p.name.clone()).unwrap_or_default(),
                    category: f.category.clone(),
                    rule_id: f.rule_id.clone(),
                    segment: None,
                    location: match (pf.relative, pf.shortened) {
                        (true, false) => conduit_wire::content::short_path(&format!("{}{}", part.path, pf.path)),
                        (true, true) => format!("{}{}", part.path, pf.path),
                        (false, _) => pf.path.clone(),
                    },
                    origin,
                    start: f.start,
                    end: f.end,
                    severity: f.severity,
                    mode,
                });
            }
        };
        for (i, cached) in per_segment.into_iter().enumerate() {
            while let Some((part, verdict)) = pending.next_if(|(p, _)| p.segments.start <= i) {
                report_part(&mut findings, part, &verdict);
            }
            for f in cached.unwrap_or_default() {
                let origin = segments[i].origin.as_str();
                let mode = modes.mode_at(&f.category, origin);
                if mode == Mode::Off || !valid_category(&f.category) {
                    continue;
                }
                findings.push(ReportedFinding {
                    policy: set.policies.get(f.policy).map(|p| p.name.clone()).unwrap_or_default(),
                    category: f.category,
                    rule_id: f.rule_id,
                    segment: Some(i),
                    location: segments[i].path.clone(),
                    origin,
                    start: f.start,
                    end: f.end,
                    severity: f.severity,
                    mode,
                });
            }
        }
        for (part, verdict) in pending {
            report_part(&mut findings, part, &verdict);
        }
        let mut deny_modes: HashMap<usize, Vec<Mode>> = HashMap::new();
        for (pi, f) in request_level {
            let mode = modes.mode_for(&f.category);
            deny_modes.entry(pi).or_default().push(mode);
            if mode == Mode::Off || !valid_category(&f.category) {
                continue;
            }
            findings.push(ReportedFinding {
                policy: set.policies[pi].name.clone(),
                category: f.category,
                rule_id: recordable_rule(f.rule_id),
                segment: None,
                location: "request".into(),
                origin: "request",
                start: 0,
                end: 0,
                severity: severity_name(f.severity),
                mode,
            });
        }
        // A policy's own refusal holds unless every finding it gave has been set to alert/off.
        let deny = denies.into_iter().find_map(|(pi, status, message)| {
            let modes = deny_modes.get(&pi);
            let in_force = modes.is_none_or(|m| m.contains(&Mode::Block));
            in_force.then(|| (status.clamp(400, 499), message, set.policies[pi].name.clone()))
        });
        let decision = if deny.is_some() || findings.iter().any(|f| f.mode == Mode::Block) {
            Decision::Block
        } else if findings.is_empty() {
            Decision::Allow
        } else {
            Decision::Alert
        };
        Outcome {
            findings,
            decision,
            deny,
            failure,
            set_digest: set.digest_hex(),
            cached: segments.len() - fresh.len() + remembered_segments,
            scanned: fresh.len(),
        }
    }

    fn log_failure(&self, policy: &LoadedPolicy, fail: &Failure) {
        tracing::error!(
            policy = %policy.name,
            on_error = policy.on_error.as_str(),
            reason = %fail,
            "policy failed; its instance was dropped"
        );
    }

    /// Linear memory per policy (largest pooled instance), bytes: what a policy costs to hold.
    pub fn memory_by_policy(&self) -> Vec<(String, usize)> {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner()).clone();
        set.policies
            .iter()
            .map(|p| (p.name.clone(), p.prepared.memory_bytes()))
            .collect()
    }

    /// Linear memory of the largest idle instance of any policy, in bytes.
    pub fn largest_instance_memory(&self) -> usize {
        self.memory_by_policy().into_iter().map(|(_, m)| m).max().unwrap_or(0)
    }

    /// Idle configured instances per policy (pre-configured after a load, returned after calls).
    pub fn idle_instances(&self) -> Vec<(String, usize)> {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner()).clone();
        set.policies
            .iter()
            .map(|p| (p.name.clone(), p.idle_instances()))
            .collect()
    }

    /// Forgets every cached verdict (benchmarks measure first turns with it).
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.parts.clear();
    }
}

/// The runtime remembers parts it judged under the set now in force.
impl Recall for Policies {
    fn recall(&self, key: &PartKey) -> Option<PartSummary> {
        let verdict = self.parts.get(key)?;
        let current = self.set.read().unwrap_or_else(|p| p.into_inner()).digest;
        (verdict.set == current).then_some(verdict.summary)
    }
}

/// Findings one remembered part may carry; a part with more is read each time (its segments'
/// verdicts still come from the segment cache), so no one entry grows without bound.
const MAX_PART_FINDINGS: usize = 64;

/// A part's verdict from its segments' findings: paths relative to the part's own.
fn part_verdict(
    set: [u8; 32],
    part: &Part,
    segments: &[Segment<'_>],
    per_segment: &[Option<Vec<CachedFinding>>],
) -> Option<PartVerdict> {
    let mut findings = Vec::new();
    for i in part.segments.clone() {
        let (Some(segment), Some(Some(found))) = (segments.get(i), per_segment.get(i)) else {
            continue;
        };
        for f in found {
            let (path, relative) = match segment.path.strip_prefix(part.path.as_str()) {
                Some(rest) => (rest.to_string(), true),
                None => (segment.path.clone(), false),
            };
            findings.push(PartFinding {
                path,
                relative,
                shortened: segment.path.contains('…'),
                origin: segment.origin,
                finding: f.clone(),
            });
        }
    }
    (findings.len() <= MAX_PART_FINDINGS).then_some(PartVerdict {
        set,
        summary: part.summary,
        findings,
    })
}

/// A policy's rule id as the host records it (store, audit, logs, block message): anything not
/// shaped like an id is replaced, so a policy cannot put the text it matched into a record.
fn recordable_rule(id: String) -> String {
    let id_like =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if id_like { id } else { "(invalid rule id)".into() }
}

fn valid_category(c: &str) -> bool {
    c.contains('.') && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn parse_stored_modes(stored: &[(String, String)]) -> BTreeMap<String, Mode> {
    let mut out = BTreeMap::new();
    for (k, v) in stored {
        match Mode::parse(v) {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => tracing::warn!(category = %k, mode = %v, "ignoring an unknown stored policy mode"),
        }
    }
    out
}

fn status_of(p: &LoadedPolicy, new_version_error: Option<String>) -> PolicyStatus {
    PolicyStatus {
        name: p.name.clone(),
        source: p.source.clone(),
        state: if new_version_error.is_some() {
            "loaded (new version refused)".into()
        } else {
            "loaded".into()
        },
        version: Some(p.version.clone()),
        categories: p.categories.clone(),
        signed_by: Some(p.signed_by.clone()),
        on_error: p.on_error.as_str().into(),
        error: new_version_error,
    }
}

fn refused(path: &Path, reason: String, on_error: OnError) -> PolicyStatus {
    PolicyStatus {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: path.display().to_string(),
        state: "refused".into(),
        version: None,
        categories: Vec::new(),
        signed_by: None,
        on_error: on_error.as_str().into(),
        error: Some(reason),
    }
}

/// `<file>.wasm.sig`, else `<file>.sig`.
fn sig_path(wasm: &Path) -> PathBuf {
    let mut long = wasm.as_os_str().to_owned();
    long.push(".sig");
    let long = PathBuf::from(long);
    if long.exists() {
        long
    } else {
        wasm.with_extension("sig")
    }
}

fn scan_dir(dir: &Path) -> BTreeMap<PathBuf, Fingerprint> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            let mut fp = Vec::new();
            for p in [path.clone(), sig_path(&path), path.with_extension("toml")] {
                if let Ok(meta) = std::fs::metadata(&p) {
                    fp.push((p, meta.len(), meta.modified().ok()));
                }
            }
            out.insert(path, fp);
        }
    }
    out
}

/// `<name>.toml` next to a policy: `[policy] on_error = …` and `[config]` (passed as JSON).
fn read_settings(path: &Path, default: OnError) -> Result<(OnError, String), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        policy: Option<PolicySection>,
        #[serde(default)]
        config: Option<toml::Table>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PolicySection {
        on_error: Option<OnError>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s: Settings = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = match s.config {
        Some(t) => crate::config::config_to_json(&path.display().to_string(), t).map_err(|e| e.to_string())?,
        None => "{}".into(),
    };
    Ok((s.policy.and_then(|p| p.on_error).unwrap_or(default), config))
}
