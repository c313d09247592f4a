//! Built-in **entities** policy: the org's sensitive terms — customer names, project codenames,
//! deal codes — matched DLP-style, reported by term id, never by the term.
//!
//! Matching: case-insensitive; every run of characters that are not letters or digits counts as
//! one space (so "Orca-7", "orca 7" and "ORCA_7" are the same); a match must sit on a
//! character-class boundary: the characters around it are not letters or digits of the same class
//! as the term's edge ("Orca-7" does not match "Orca-70", "Halcyon" does not match "halcyonic").
//! Terms on the allow-list are permitted even where they contain a sensitive term ("Acme" is a
//! customer, "Acme Tower" a landmark).
//!
//! Configuration:
//! ```json
//! {"terms": [{"id": "cust-0001", "term": "Acme Corp", "category": "entity.customer"},
//!            {"id": "proj-orca", "term": "Orca-7", "category": "entity.codename"}],
//!  "allow": ["Acme Tower"]}
//! ```
//! `category` defaults to `entity.term` and must start with `entity.`. 100,000 terms are fine;
//! large lists can also come as CSV (`terms_csv`, lines `id,category,term`).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod component;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    terms: Vec<TermConfig>,
    /// `id,category,term` lines (a header line `id,category,term` is skipped); handy with
    /// `terms_csv_file` for large lists.
    #[serde(default)]
    terms_csv: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermConfig {
    id: String,
    term: String,
    #[serde(default)]
    category: Option<String>,
}

/// A configured term: what is reported when it matches.
#[derive(Debug, Clone)]
pub struct Term {
    /// Reported as the rule id.
    pub id: String,
    /// Index into the category table.
    category: u16,
}

/// One match in the original text.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Index into [`Matcher::terms`].
    pub term: usize,
    /// Byte span in the original text.
    pub start: usize,
    pub end: usize,
}

/// The compiled term list: terms as sequences of tokens, looked up by hash.
///
/// Text and terms are split into tokens: maximal runs of letters or of digits (lower-cased).
/// Anything that is not a letter or digit separates tokens, and so does a change between letters
/// and digits — which is exactly the character-class boundary rule. A term matches where its
/// token sequence appears. Memory is a hash entry per term plus its id; no automaton.
pub struct Matcher {
    terms: Vec<Term>,
    categories: Vec<String>,
    /// Hash of a token sequence → term index (collisions resolved against `keys`).
    by_hash: HashMap<u64, u32, Prehashed>,
    /// The normalised token sequence of each term, joined by `\u{1}`, for collision checks.
    keys: Vec<Box<str>>,
    /// Hashes of first tokens: a cheap filter before multi-token lookups.
    first: HashSet<u64, Prehashed>,
    max_tokens: usize,
    allow: HashSet<u64, Prehashed>,
    allow_first: HashSet<u64, Prehashed>,
    allow_max_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Letter,
    Digit,
}

fn class(c: char) -> Option<Class> {
    if c.is_numeric() {
        Some(Class::Digit)
    } else if c.is_alphanumeric() {
        Some(Class::Letter)
    } else {
        None
    }
}

/// The keys are already hashes: use them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Prehashed = BuildHasherDefault<Identity>;

/// Tokens of a text: one lower-cased buffer, and per token its span there and in the original.
struct Tokens {
    lower: String,
    /// (start, end) in `lower`, (start, end) in the original.
    spans: Vec<(u32, u32, u32, u32)>,
}

/// A token's span in the original text.
struct Token {
    start: usize,
    end: usize,
}

impl Tokens {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn get(&self, i: usize) -> Token {
        let (_, _, os, oe) = self.spans[i];
        Token {
            start: os as usize,
            end: oe as usize,
        }
    }

    fn texts(&self, from: usize, n: usize) -> impl Iterator<Item = &str> {
        self.spans[from..from + n]
            .iter()
            .map(|&(ls, le, _, _)| &self.lower[ls as usize..le as usize])
    }
}

fn tokenize(input: &str) -> Tokens {
    let mut lower = String::with_capacity(input.len());
    let mut spans = Vec::with_capacity(input.len() / 5);
    let mut current: Option<(Class, u32, u32)> = None; // class, lower start, original start
    let mut last_end = 0u32;
    for (at, c) in input.char_indices() {
        let k = class(c);
        if let Some((ck, ls, os)) = current
            && k != Some(ck)
        {
            spans.push((ls, lower.len() as u32, os, last_end));
            current = None;
        }
        if let Some(k) = k {
            if current.is_none() {
                current = Some((k, lower.len() as u32, at as u32));
            }
            push_lower(&mut lower, c);
            last_end = (at + c.len_utf8()) as u32;
        }
    }
    if let Some((_, ls, os)) = current {
        spans.push((ls, lower.len() as u32, os, last_end));
    }
    Tokens { lower, spans }
}

fn push_lower(s: &mut String, c: char) {
    if c.is_ascii() {
        s.push(c.to_ascii_lowercase());
    } else {
        s.extend(c.to_lowercase());
    }
}

/// FNV-1a over tokens with a separator, so ["ab","c"] and ["a","bc"] differ.
fn hash_tokens<'a>(tokens: impl Iterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, t) in tokens.enumerate() {
        if i > 0 {
            h = (h ^ 0x01).wrapping_mul(0x0100_0000_01b3);
        }
        for b in t.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn key_of<'a>(tokens: impl Iterator<Item = &'a str>) -> String {
    tokens.collect::<Vec<_>>().join("\u{1}")
}

const MAX_TERM_TOKENS: usize = 16;

impl Matcher {
    /// Parses a configuration and compiles it.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config {
                terms: Vec::new(),
                terms_csv: None,
                allow: Vec::new(),
            }
        } else {
            serde_json::from_str(config).map_err(|e| format!("entities policy configuration: {e}"))?
        };
        let mut m = Matcher {
            terms: Vec::new(),
            categories: Vec::new(),
            by_hash: HashMap::default(),
            keys: Vec::new(),
            first: HashSet::default(),
            max_tokens: 0,
            allow: HashSet::default(),
            allow_first: HashSet::default(),
            allow_max_tokens: 0,
        };
        let csv_terms = config
            .terms_csv
            .as_deref()
            .map(parse_csv)
            .transpose()?
            .unwrap_or_default();
        m.terms.reserve(config.terms.len() + csv_terms.len());
        for t in config.terms.into_iter().chain(csv_terms) {
            m.add(t)?;
        }
        for a in &config.allow {
            let tokens = tokenize(a);
            if tokens.is_empty() || tokens.len() > MAX_TERM_TOKENS {
                continue;
            }
            m.allow.insert(hash_tokens(tokens.texts(0, tokens.len())));
            m.allow_first.insert(hash_tokens(tokens.texts(0, 1)));
            m.allow_max_tokens = m.allow_max_tokens.max(tokens.len());
        }
        m.by_hash.shrink_to_fit();
        m.first.shrink_to_fit();
        Ok(m)
    }

    fn add(&mut self, t: TermConfig) -> Result<(), String> {
        let tokens = tokenize(&t.term);
        if tokens.is_empty() {
            return Err(format!(
                "entities policy: term {:?} (id {:?}) has no letters or digits; remove it",
                self.terms.len() + 1,
                t.id
            ));
        }
        if tokens.len() > MAX_TERM_TOKENS {
            return Err(format!(
                "entities policy: term id {:?} has more than {MAX_TERM_TOKENS} words; shorten it",
                t.id
            ));
        }
        let category = t.category.unwrap_or_else(|| "entity.term".into());
        if !category.starts_with("entity.") || category.len() > 64 {
            return Err(format!(
                "entities policy: term id {:?} has category {category:?}; categories start with `entity.`",
                t.id
            ));
        }
        let cat = match self.categories.iter().position(|c| *c == category) {
            Some(i) => i,
            None => {
                self.categories.push(category);
                self.categories.len() - 1
            }
        };
        let index = self.terms.len() as u32;
        let h = hash_tokens(tokens.texts(0, tokens.len()));
        // The first configuration of a term wins; a duplicate is ignored.
        self.by_hash.entry(h).or_insert(index);
        self.first.insert(hash_tokens(tokens.texts(0, 1)));
        self.max_tokens = self.max_tokens.max(tokens.len());
        self.keys.push(key_of(tokens.texts(0, tokens.len())).into_boxed_str());
        self.terms.push(Term {
            id: t.id,
            category: cat as u16,
        });
        Ok(())
    }

    /// The configured terms, indexed by [`Match::term`].
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The category of a term.
    pub fn category(&self, term: &Term) -> &str {
        &self.categories[term.category as usize]
    }

    /// Every match of a configured term in `text`, outside allowed terms.
    pub fn find(&self, text: &str) -> Vec<Match> {
        if self.terms.is_empty() {
            return Vec::new();
        }
        let tokens = tokenize(text);
        let allowed = self.allowed_spans(&tokens);
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            if !self.first.contains(&hash_tokens(tokens.texts(i, 1))) {
                i += 1;
                continue;
            }
            // Longest term starting here.
            let longest = (1..=self.max_tokens.min(tokens.len() - i)).rev().find_map(|n| {
                let h = hash_tokens(tokens.texts(i, n));
                let term = *self.by_hash.get(&h)?;
                let same = *self.keys[term as usize] == key_of(tokens.texts(i, n));
                same.then_some((n, term))
            });
            match longest {
                Some((n, term)) => {
                    let (start, end) = (tokens.get(i).start, tokens.get(i + n - 1).end);
                    if !allowed.iter().any(|&(s, e)| s <= start && end <= e) {
                        out.push(Match {
                            term: term as usize,
                            start,
                            end,
                        });
                    }
                    i += n;
                }
                None => i += 1,
            }
        }
        out
    }

    fn allowed_spans(&self, tokens: &Tokens) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        if self.allow.is_empty() {
            return spans;
        }
        for i in 0..tokens.len() {
            if !self.allow_first.contains(&hash_tokens(tokens.texts(i, 1))) {
                continue;
            }
            for n in 1..=self.allow_max_tokens.min(tokens.len() - i) {
                if self.allow.contains(&hash_tokens(tokens.texts(i, n))) {
                    spans.push((tokens.get(i).start, tokens.get(i + n - 1).end));
                }
            }
        }
        spans
    }
}

fn parse_csv(text: &str) -> Result<Vec<TermConfig>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.eq_ignore_ascii_case("id,category,term")) {
            continue;
        }
        let mut parts = line.splitn(3, ',');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(category), Some(term)) if !id.is_empty() && !term.is_empty() => out.push(TermConfig {
                id: id.trim().to_string(),
                category: Some(category.trim().to_string()).filter(|c| !c.is_empty()),
                term: term.trim().trim_matches('"').to_string(),
            }),
            _ => {
                return Err(format!(
                    "entities policy: terms_csv line {} is not `id,category,term`",
                    n + 1
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(json: &str) -> Matcher {
        Matcher::from_json(json).unwrap()
    }

    fn ids(m: &Matcher, text: &str) -> Vec<String> {
        m.find(text).iter().map(|x| m.terms()[x.term].id.clone()).collect()
    }

    #[test]
    fn dlp_style_matching() {
        let m = matcher(
            r#"{"terms":[{"id":"orca","term":"Orca-7","category":"entity.codename"},{"id":"hal","term":"Halcyon"},{"id":"acme","term":"ACME corp","category":"entity.customer"}]}"#,
        );
        assert_eq!(ids(&m, "we ship orca 7 next week"), ["orca"]);
        assert_eq!(ids(&m, "ORCA_7!"), ["orca"]);
        assert_eq!(ids(&m, "(Orca--7)"), ["orca"]);
        assert!(ids(&m, "Orca-70 is different").is_empty());
        assert!(ids(&m, "xorca 7").is_empty());
        assert_eq!(
            ids(&m, "Orca-7b"),
            ["orca"],
            "letter after a digit edge is a class boundary"
        );
        assert_eq!(ids(&m, "Project Halcyon."), ["hal"]);
        assert!(ids(&m, "a halcyonic summer").is_empty());
        assert_eq!(ids(&m, "Acme   Corp, and acme-corp"), ["acme", "acme"]);
        assert_eq!(m.category(&m.terms()[0]), "entity.codename");
        assert_eq!(m.category(&m.terms()[1]), "entity.term");
    }

    #[test]
    fn spans_point_into_the_original_text() {
        let m = matcher(r#"{"terms":[{"id":"d","term":"Deal 42"}]}"#);
        let text = "Über   das DEAL--42 reden";
        let found = m.find(text);
        assert_eq!(found.len(), 1);
        assert_eq!(&text[found[0].start..found[0].end], "DEAL--42");
        let m = matcher(r#"{"terms":[{"id":"u","term":"Straße"}]}"#);
        let text = "in der STRASSE? nein: straße!";
        let found = m.find(text);
        assert_eq!(found.len(), 1);
        assert_eq!(&text[found[0].start..found[0].end], "straße");
    }

    #[test]
    fn allow_list_and_retry_after_a_failed_boundary() {
        let m = matcher(r#"{"terms":[{"id":"a","term":"Acme"}],"allow":["Acme Tower"]}"#);
        assert!(ids(&m, "meet at the acme tower").is_empty());
        assert_eq!(
            ids(&m, "acme towers? no: Acme"),
            ["a", "a"],
            "'acme towers' is not the allowed term"
        );
        let m = matcher(r#"{"terms":[{"id":"x","term":"acme"},{"id":"y","term":"me 7"}]}"#);
        assert_eq!(
            ids(&m, "acmex, acme7 acme"),
            ["x", "x"],
            "a failed boundary retries one character on"
        );
    }

    #[test]
    fn bad_configs_are_refused_with_reasons() {
        assert!(
            Matcher::from_json(r#"{"terms":[{"id":"x","term":"--"}]}"#)
                .err()
                .unwrap()
                .contains("no letters")
        );
        assert!(Matcher::from_json(r#"{"terms":[{"id":"x","term":"a","category":"secret.x"}]}"#).is_err());
        assert!(Matcher::from_json(r#"{"term":[]}"#).is_err());
        assert!(Matcher::from_json("").unwrap().find("anything").is_empty());
    }

    #[test]
    fn csv_terms() {
        let m =
            matcher(r#"{"terms_csv":"id,category,term\ncust-1,entity.customer,Acme Holdings\nproj-2,,Blue Heron\n"}"#);
        assert_eq!(ids(&m, "acme holdings and blue-heron"), ["cust-1", "proj-2"]);
        assert_eq!(m.category(&m.terms()[1]), "entity.term");
        assert!(Matcher::from_json(r#"{"terms_csv":"just-one-field"}"#).is_err());
    }

    #[test]
    fn a_hundred_thousand_terms() {
        let terms: Vec<String> = (0..100_000)
            .map(|i| format!(r#"{{"id":"t{i}","term":"Customer {i:05} Holdings"}}"#))
            .collect();
        let m = matcher(&format!(r#"{{"terms":[{}]}}"#, terms.join(",")));
        let text = "notes about customer-54321 holdings and Customer 99999 Holdingsx";
        assert_eq!(ids(&m, text), ["t54321"]);
    }
}
