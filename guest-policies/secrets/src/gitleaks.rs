//! Extra rules from a gitleaks-format TOML (an org's existing `.gitleaks.toml`): each `[[rules]]`
//! with `id`, `regex`, optional `secretGroup`, `entropy`, `keywords`, and rule-level allowlists
//! (`regexes`, `stopwords`). Path-only rules are skipped: a request has no file path.

use serde::Deserialize;

use crate::{Rule, compile};

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    rules: Vec<RuleToml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleToml {
    id: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f32>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlists: Vec<AllowToml>,
    #[serde(default)]
    allowlist: Option<AllowToml>,
}

#[derive(Deserialize)]
struct AllowToml {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

/// Parses the file into rules and their keywords.
pub(crate) fn parse(text: &str) -> Result<Vec<(Rule, Vec<String>)>, String> {
    let file: File =
        toml::from_str(text).map_err(|e| format!("secrets policy: the gitleaks TOML does not parse: {e}"))?;
    let mut out = Vec::new();
    for r in file.rules {
        let Some(pattern) = r.regex else { continue };
        // gitleaks regexes are RE2; Rust's regex accepts them, but `{{` must be escaped.
        let regex = compile(&pattern).map_err(|e| format!("secrets policy: gitleaks rule {:?}: {e}", r.id))?;
        let mut allow = Vec::new();
        let mut stopwords = Vec::new();
        for a in r.allowlists.iter().chain(r.allowlist.iter()) {
            for re in &a.regexes {
                allow
                    .push(compile(re).map_err(|e| format!("secrets policy: gitleaks rule {:?} allowlist: {e}", r.id))?);
            }
            stopwords.extend(a.stopwords.iter().cloned());
        }
        let keywords: Vec<String> = r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
        out.push((
            Rule {
                category: format!("secret.{}", r.id),
                id: r.id,
                regex,
                entropy: r.entropy.unwrap_or(0.0),
                group: Some(r.secret_group.unwrap_or(0)),
                before: 256,
                after: 1024,
                stopwords,
                allow,
                placeholder_check: false,
            },
            keywords,
        ));
    }
    Ok(out)
}
