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
        let regex =
            compile(&re2_braces(&pattern)).map_err(|e| format!("secrets policy: gitleaks rule {:?}: {e}", r.id))?;
        let mut allow = Vec::new();
        let mut stopwords = Vec::new();
        for a in r.allowlists.iter().chain(r.allowlist.iter()) {
            for re in &a.regexes {
                allow.push(
                    compile(&re2_braces(re))
                        .map_err(|e| format!("secrets policy: gitleaks rule {:?} allowlist: {e}", r.id))?,
                );
            }
            stopwords.extend(a.stopwords.iter().cloned());
        }
        // An empty keyword matches everywhere, so a rule with one (`keywords = ["", "zzz"]`) has no
        // keyword to wait for: it runs on the whole text, as gitleaks runs it.
        let keywords: Vec<String> = if r.keywords.iter().any(String::is_empty) {
            Vec::new()
        } else {
            r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect()
        };
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

/// RE2 (gitleaks' dialect) reads a `{` that does not open a repetition (`{2}`, `{2,}`, `{2,5}`)
/// as a literal brace; Rust's regex refuses it. Escapes those braces, outside classes.
fn re2_braces(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let (mut i, mut in_class) = (0, false);
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            // `\x{7F}`, `\p{Greek}`, `\P{L}`: the braces belong to the escape.
            if matches!(b[i + 1], b'x' | b'p' | b'P')
                && b.get(i + 2) == Some(&b'{')
                && let Some(close) = b[i + 3..].iter().position(|&x| x == b'}')
            {
                let end = i + 3 + close + 1;
                out.push_str(&pattern[i..end]);
                i = end;
                continue;
            }
            out.push_str(&pattern[i..i + 2 + utf8_extra(b[i + 1])]);
            i += 2 + utf8_extra(b[i + 1]);
            continue;
        }
        match c {
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'{' if !in_class && !opens_repetition(&b[i + 1..]) => {
                out.push_str("\\{");
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = 1 + utf8_extra(c);
        out.push_str(&pattern[i..i + len]);
        i += len;
    }
    out
}

fn utf8_extra(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 1,
        0xE0..=0xEF => 2,
        0xF0..=0xF7 => 3,
        _ => 0,
    }
}

/// `2}`, `2,}`, `2,5}` (what follows a `{`).
fn opens_repetition(rest: &[u8]) -> bool {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    match rest.get(digits) {
        Some(b'}') => true,
        Some(b',') => {
            let more = rest[digits + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            rest.get(digits + 1 + more) == Some(&b'}')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_literal_braces_are_escaped_and_repetitions_kept() {
        assert_eq!(re2_braces(r"import[ \t]+{[ \w,]+}"), r"import[ \t]+\{[ \w,]+}");
        assert_eq!(re2_braces(r"a{2}b{2,}c{2,5}"), r"a{2}b{2,}c{2,5}");
        assert_eq!(re2_braces(r"^\{\{x}}$|[{]{{"), r"^\{\{x}}$|[{]\{\{");
        assert!(compile(&re2_braces(r"import[ \t]+{[ \t\w,]+}[ \t]+from")).is_ok());
        assert_eq!(re2_braces(r"\x{7F}{a\p{Greek}"), r"\x{7F}\{a\p{Greek}");
        assert!(compile(&re2_braces(r"[\x{20}-\x{7E}]\x{7F}")).is_ok());
    }
}
