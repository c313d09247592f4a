//! Built-in **secrets** policy: finds credentials in what a request sends out — cloud keys, LLM
//! provider keys, VCS and CI tokens, chat and payment tokens, private keys, JWTs, bearer headers,
//! URLs with passwords, and `.env` / YAML / code assignments of high-entropy values.
//!
//! How it scans, so that 1 MiB of prompt costs a few milliseconds:
//! 1. one trigram-filter pass finds every rule keyword (`ghp_`, `AKIA`, `-----BEGIN`, `token`, …;
//!    see `prefilter.rs`);
//! 2. each rule's regex runs only on windows around its keyword hits;
//! 3. a candidate must pass the rule's entropy floor and the placeholder checks (`EXAMPLE`,
//!    `xxxx`, `${VAR}`, `<your-key>`, `sk-...`, alphabet runs, repeated characters);
//! 4. the generic assignment detector reads `name = value` pairs around secret-ish names
//!    (`token`, `secret`, `password`, `api_key`, …), skips names that only look like one
//!    (`public_key`, `token_url`, `key_id`, `keyboard`, …) and values that are code, versions or
//!    placeholders, and keeps what is long and random enough.
//!
//! Findings carry the rule, the family and the byte span — never the text. The logic is plain Rust
//! (unit-tested natively, measured against gitleaks' public test cases); `component.rs` is the
//! wasm binding. Extra rules can come from a gitleaks-format TOML (`gitleaks` in the config).

mod generic;
mod gitleaks;
mod prefilter;
pub mod rules;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod component;

/// One finding: where and what kind, never the matched text.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Rule id, e.g. `github-pat`.
    pub rule: String,
    /// Category, e.g. `secret.github-token`.
    pub category: String,
    /// Byte span of the secret in the scanned text.
    pub start: usize,
    pub end: usize,
}

/// A compiled rule.
struct Rule {
    id: String,
    category: String,
    /// Compiled when the scanner is built — in the policy's `configure`, never in `evaluate`: a
    /// prompt naming every rule's keyword must not spend a request's CPU deadline compiling.
    regex: Regex,
    entropy: f32,
    /// The capture group holding the secret; 0 = first group that matched, else the whole match.
    group: Option<usize>,
    /// How far before / after a keyword hit the regex may reach.
    before: usize,
    after: usize,
    stopwords: Vec<String>,
    allow: Vec<Regex>,
    /// Built-in rules skip candidates that look like documentation placeholders.
    placeholder_check: bool,
}

/// The policy's configuration (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The built-in rule table (default on); off leaves only the `gitleaks` file's rules.
    #[serde(default = "yes")]
    pub builtin: bool,
    /// Rule ids (or families, `secret.<family>`) to turn off.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Values (exact) that are never reported, e.g. a public demo key.
    #[serde(default)]
    pub allow_values: Vec<String>,
    /// A gitleaks-format TOML whose `[[rules]]` are added.
    #[serde(default)]
    pub gitleaks: Option<String>,
    /// Turn the generic assignment detector off (default on).
    #[serde(default = "yes")]
    pub generic: bool,
}

impl Default for Config {
    /// The built-in rules and the generic detector, nothing disabled.
    fn default() -> Self {
        Config {
            builtin: true,
            disable: Vec::new(),
            allow_values: Vec::new(),
            gitleaks: None,
            generic: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// The compiled rule set.
pub struct Scanner {
    rules: Vec<Rule>,
    keywords: prefilter::Keywords,
    /// For each keyword pattern, the rules it triggers.
    keyword_rules: Vec<Vec<usize>>,
    generic: Option<generic::Generic>,
    allow_values: Vec<String>,
}

const WINDOW_BEFORE: usize = 96;
/// Marks a keyword as one of the generic detector's name words.
const GENERIC: usize = usize::MAX;
const WINDOW_AFTER: usize = 512;

impl Scanner {
    /// The built-in rules with default settings.
    pub fn builtin() -> Result<Self, String> {
        Self::new(&Config::default())
    }

    /// Parses a JSON configuration and compiles.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("secrets policy configuration: {e}"))?
        };
        Self::new(&config)
    }

    /// Compiles the built-in table plus the configured extras.
    pub fn new(config: &Config) -> Result<Self, String> {
        let disabled = |id: &str, category: &str| config.disable.iter().any(|d| d == id || d == category);
        let mut specs: Vec<(Rule, Vec<String>)> = Vec::new();
        let builtin = if config.builtin { rules::RULES } else { &[] };
        for spec in builtin {
            let category = format!("secret.{}", spec.family);
            if disabled(spec.id, &category) {
                continue;
            }
            let regex = compile(spec.regex).map_err(|e| format!("built-in rule {}: {e}", spec.id))?;
            let long =
                spec.family == "private-key" || spec.id == "gcp-service-account" || spec.id == "kubernetes-secret";
            specs.push((
                Rule {
                    id: spec.id.to_string(),
                    category,
                    regex,
                    entropy: spec.entropy,
                    group: Some(0),
                    before: if long { 2048 } else { WINDOW_BEFORE },
                    after: if long { 16 * 1024 } else { WINDOW_AFTER },
                    stopwords: Vec::new(),
                    allow: Vec::new(),
                    // Formats that are unambiguous by shape (entropy 0) are reported even when
                    // they look like samples; AWS keys keep the `EXAMPLE` check.
                    placeholder_check: spec.entropy > 0.0 || spec.family.starts_with("aws"),
                },
                spec.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
            ));
        }
        if let Some(toml) = &config.gitleaks {
            for (rule, keywords) in gitleaks::parse(toml)? {
                if !disabled(&rule.id, &rule.category) {
                    specs.push((rule, keywords));
                }
            }
        }
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, (_, keywords)) in specs.iter().enumerate() {
            if keywords.is_empty() {
                always.push(i);
            }
            for k in keywords {
                match patterns.iter().position(|p| p == k) {
                    Some(at) => keyword_rules[at].push(i),
                    None => {
                        patterns.push(k.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        // The generic detector's name words ride in the same automaton: one pass over the text.
        for word in generic::NAME_WORDS {
            match patterns.iter().position(|p| p == word) {
                Some(at) => keyword_rules[at].push(GENERIC),
                None => {
                    patterns.push(word.to_string());
                    keyword_rules.push(vec![GENERIC]);
                }
            }
        }
        // Rules without keywords (possible in gitleaks files) run everywhere (see `scan`).
        let keywords = prefilter::Keywords::new(&patterns)?;
        let mut rules: Vec<Rule> = specs.into_iter().map(|(r, _)| r).collect();
        for i in always {
            rules[i].before = usize::MAX / 4;
        }
        Ok(Self {
            rules,
            keywords,
            keyword_rules,
            generic: if config.generic && !disabled("generic-api-key", "secret.generic") {
                Some(generic::Generic::new())
            } else {
                None
            },
            allow_values: config.allow_values.clone(),
        })
    }

    /// Number of compiled rules (plus one for the generic detector).
    pub fn rule_count(&self) -> usize {
        self.rules.len() + usize::from(self.generic.is_some())
    }

    /// How many keyword hits the prefilter reports in `text` (a profiling aid).
    #[doc(hidden)]
    pub fn prefilter_hits(&self, text: &str) -> usize {
        let mut n = 0;
        self.keywords.for_each(text.as_bytes(), |_, _, _| n += 1);
        n
    }

    /// Every secret in `text`.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let hay = text.as_bytes();
        // Windows per rule, in hit order.
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        let mut name_hits: Vec<(usize, usize)> = Vec::new();
        self.keywords.for_each(hay, |hit_start, hit_end, pattern| {
            for &r in &self.keyword_rules[pattern] {
                if r == GENERIC {
                    name_hits.push((hit_start, hit_end));
                    continue;
                }
                let rule = &self.rules[r];
                let start = hit_start.saturating_sub(rule.before);
                let end = hit_end.saturating_add(rule.after).min(hay.len());
                let w = &mut windows[r];
                match w.last_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(end),
                    _ => w.push((start, end)),
                }
            }
        });
        for (r, rule) in self.rules.iter().enumerate() {
            if rule.before >= usize::MAX / 4 {
                windows[r] = vec![(0, hay.len())];
            }
        }
        let mut found: Vec<Finding> = Vec::new();
        for (r, ws) in windows.iter().enumerate() {
            let rule = &self.rules[r];
            for &(ws, we) in ws {
                for caps in rule.regex.captures_iter(&hay[ws..we]) {
                    let m = match rule.group {
                        Some(0) => caps.iter().skip(1).flatten().next().or_else(|| caps.get(0)),
                        Some(g) => caps.get(g),
                        None => caps.get(0),
                    };
                    let Some(m) = m else { continue };
                    let (start, end) = (ws + m.start(), ws + m.end());
                    if self.accept(rule, &hay[start..end]) {
                        found.push(Finding {
                            rule: rule.id.clone(),
                            category: rule.category.clone(),
                            start,
                            end,
                        });
                    }
                }
            }
        }
        if let Some(generic) = &self.generic {
            name_hits.sort_unstable();
            for (start, end) in generic.scan(hay, &name_hits) {
                let overlaps = found.iter().any(|f| f.start < end && start < f.end);
                if !overlaps && !self.is_allowed_value(&hay[start..end]) {
                    found.push(Finding {
                        rule: "generic-assignment".into(),
                        category: "secret.generic".into(),
                        start,
                        end,
                    });
                }
            }
        }
        found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        // One finding per span: the first (most specific) rule wins, contained spans are dropped.
        let mut out: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            if out
                .last()
                .is_some_and(|last: &Finding| f.start < last.end && f.end <= last.end)
            {
                continue;
            }
            out.push(f);
        }
        out
    }

    fn is_allowed_value(&self, value: &[u8]) -> bool {
        self.allow_values.iter().any(|a| a.as_bytes() == value)
    }

    fn accept(&self, rule: &Rule, value: &[u8]) -> bool {
        if value.is_empty() || self.is_allowed_value(value) {
            return false;
        }
        // Kubernetes `data:` values are base64, whose length is a multiple of four.
        if rule.id == "kubernetes-secret" && !value.len().is_multiple_of(4) {
            return false;
        }
        if rule.entropy > 0.0 && entropy(value) < rule.entropy {
            return false;
        }
        if rule.placeholder_check && is_placeholder(value, rule.id.starts_with("aws-")) {
            return false;
        }
        if rule.stopwords.iter().any(|s| contains_ci(value, s.as_bytes())) {
            return false;
        }
        !rule.allow.iter().any(|a| a.is_match(value))
    }
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(16 << 20)
        .dfa_size_limit(16 << 20)
        .build()
}

/// Shannon entropy in bits per byte.
pub fn entropy(bytes: &[u8]) -> f32 {
    conduit_policy_sdk::entropy(bytes)
}

/// The lower-cased words of an identifier (`nonMatchingToken`, `FAKE_API_KEY`): runs of
/// letters, split at anything else and at camelCase humps.
pub(crate) fn words(name: &[u8]) -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for (i, &b) in name.iter().enumerate() {
        let hump = b.is_ascii_uppercase() && i > 0 && name[i - 1].is_ascii_lowercase();
        if (!b.is_ascii_alphabetic() || hump) && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        if b.is_ascii_alphabetic() {
            current.push(b.to_ascii_lowercase());
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Placeholder markers, lower-case.
const MARKERS: &[&[u8]] = &[
    b"xxxx",
    b"****",
    b"...",
    b"${",
    b"{{",
    b"$(",
    b"<your",
    b"your_",
    b"your-",
    b"yourkey",
    b"changeme",
    b"placeholder",
    b"redacted",
    b"insert",
    b"replace_me",
    b"replaceme",
    b"dummy",
    b"<token>",
    b"<secret>",
    b"%s",
    b"0000000000000000",
];

/// The bytes a marker starts with (either case): one load refuses most places in a value.
const MARKER_FIRST: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < MARKERS.len() {
        let b = MARKERS[i][0];
        table[b as usize] = true;
        table[b.to_ascii_uppercase() as usize] = true;
        i += 1;
    }
    table
};

fn has_marker(value: &[u8]) -> bool {
    (0..value.len()).any(|i| {
        MARKER_FIRST[usize::from(value[i])]
            && MARKERS
                .iter()
                .any(|m| value.len() - i >= m.len() && value[i..i + m.len()].eq_ignore_ascii_case(m))
    })
}

/// Documentation placeholders and obviously fake values.
pub fn is_placeholder(value: &[u8], aws_example: bool) -> bool {
    if has_marker(value) {
        return true;
    }
    if aws_example && contains_ci(value, b"example") {
        return true;
    }
    // A masked tail (`xoxp-5723…-####################`); `####` inside a value may be a password.
    if value.ends_with(b"####") {
        return true;
    }
    // `sk-...`, `ops_eyJ..`, and Windows `%VAR%` references.
    if value.ends_with(b"..") || (value.len() > 2 && value.starts_with(b"%") && value.ends_with(b"%")) {
        return true;
    }
    // Long runs of one character (when they dominate the value), or an alphabet / counting run:
    // a sample, not a key.
    let (mut same, mut longest_same) = (1, 1);
    let mut run = 1;
    for w in value.windows(2) {
        same = if w[0] == w[1] { same + 1 } else { 1 };
        longest_same = longest_same.max(same);
        run = if w[1] == w[0].wrapping_add(1) { run + 1 } else { 1 };
        if run >= 12 {
            return true;
        }
    }
    longest_same >= 24 || (longest_same >= 8 && longest_same * 3 >= value.len())
}

#[cfg(test)]
mod tests;
