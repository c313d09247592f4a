//! The built-in rule set against gitleaks' own test cases (../shared/bench, MIT): recall on
//! `secret` cases and the share of `clean` cases flagged. Prints the misses per rule so a
//! regression shows where it is. The figures for the closing note come from
//! `cargo bench -p conduit --bench policies`, which runs the same set inside wasmtime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use conduit_policy_secrets::Scanner;

#[derive(serde::Deserialize)]
struct Case {
    rule_id: String,
    text: String,
    expect: String,
    #[serde(default)]
    path: Option<String>,
}

fn corpus() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/bench/gitleaks-cases.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("{path}: {e} — the gitleaks corpus lives in ../shared/bench next to the repository")
    });
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn recall_and_clean_flag_rate_on_gitleaks_cases() {
    let scanner = Scanner::builtin().unwrap();
    let cases = corpus();
    // Some texts carry both labels (a `clean` case of one rule is a `secret` case of another,
    // e.g. a Cloudflare global key under the origin-CA rule): they count as secrets only.
    let secret_texts: std::collections::HashSet<&str> = cases
        .iter()
        .filter(|c| c.expect == "secret")
        .map(|c| c.text.as_str())
        .collect();
    let (mut secrets, mut found, mut clean, mut flagged) = (0, 0, 0, 0);
    let mut misses: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut false_flags: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for case in &cases {
        // Cases that only make sense with a file path (e.g. a .p12 file) have no text to scan.
        if case.path.is_some() && case.text.trim().is_empty() {
            continue;
        }
        let findings = scanner.scan(&case.text);
        let hit = !findings.is_empty();
        if case.expect == "secret" {
            secrets += 1;
            if hit {
                found += 1;
            } else {
                misses.entry(&case.rule_id).or_default().push(&case.text);
            }
        } else if secret_texts.contains(case.text.as_str()) {
            continue;
        } else {
            clean += 1;
            if hit {
                flagged += 1;
                if std::env::var_os("SHOW_FLAGS").is_some() {
                    let f = &findings[0];
                    eprintln!(
                        "FLAG {} by {} on {:?}",
                        case.rule_id,
                        f.rule,
                        &case.text[f.start..f.end]
                    );
                }
                false_flags.entry(&case.rule_id).or_default().push(&case.text);
            }
        }
    }
    let recall = found as f64 / secrets as f64;
    let clean_rate = flagged as f64 / clean as f64;
    for (rule, texts) in &misses {
        eprintln!(
            "miss {rule} ({}): {:?}",
            texts.len(),
            &texts[0].chars().take(120).collect::<String>()
        );
    }
    for (rule, texts) in &false_flags {
        eprintln!(
            "flag {rule} ({}): {:?}",
            texts.len(),
            &texts[0].chars().take(120).collect::<String>()
        );
    }
    eprintln!("recall {found}/{secrets} = {recall:.4}; clean flagged {flagged}/{clean} = {clean_rate:.4}");
    assert!(recall >= 0.99, "recall {recall:.4} < 0.99");
    // The goal is 1 %; today's rate is ~12 %, most of it real-format keys that gitleaks
    // allowlists by value (15 Google API keys) and assignments gitleaks skips by rule-specific
    // context. This bound catches regressions; see docs/policies.md for the breakdown.
    assert!(clean_rate <= 0.14, "clean flag rate {clean_rate:.4} > 0.14");
}
