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
//! `category` defaults to `entity.term` and must start with `entity.`. 100,000 terms are fine.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod component;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    terms: Vec<TermConfig>,
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
    /// Reported as the category.
    pub category: String,
    edges: (Class, Class),
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

/// The compiled term list.
pub struct Matcher {
    terms: Vec<Term>,
    automaton: Option<AhoCorasick>,
    allow: Option<AhoCorasick>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Letter,
    Digit,
    Other,
}

fn class(c: char) -> Class {
    if c.is_numeric() {
        Class::Digit
    } else if c.is_alphanumeric() {
        Class::Letter
    } else {
        Class::Other
    }
}

/// Text normalised for matching, with the original byte offset of every normalised byte.
struct Normalized {
    text: String,
    origin: Vec<u32>,
}

/// Lower-cases and folds every run of non-alphanumerics into one space. `origin[i]` is where the
/// i-th normalised byte came from; one extra entry holds the end of the text.
fn normalize(input: &str, keep_origin: bool) -> Normalized {
    let mut text = String::with_capacity(input.len());
    let mut origin = Vec::with_capacity(if keep_origin { input.len() + 1 } else { 0 });
    let mut in_gap = false;
    for (at, c) in input.char_indices() {
        if c.is_alphanumeric() {
            in_gap = false;
            let before = text.len();
            if c.is_ascii() {
                text.push(c.to_ascii_lowercase());
            } else {
                text.extend(c.to_lowercase());
            }
            if keep_origin {
                origin.extend(std::iter::repeat_n(at as u32, text.len() - before));
            }
        } else if !in_gap {
            in_gap = true;
            text.push(' ');
            if keep_origin {
                origin.push(at as u32);
            }
        }
    }
    if keep_origin {
        origin.push(input.len() as u32);
    }
    Normalized { text, origin }
}

fn build(patterns: &[String]) -> Result<Option<AhoCorasick>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    // A contiguous NFA keeps 100k terms in a few MB; a DFA would not fit the sandbox's memory.
    AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(patterns)
        .map(Some)
        .map_err(|e| format!("entities policy: cannot compile the term list: {e}"))
}

impl Matcher {
    /// Parses a configuration and compiles it.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config {
                terms: Vec::new(),
                allow: Vec::new(),
            }
        } else {
            serde_json::from_str(config).map_err(|e| format!("entities policy configuration: {e}"))?
        };
        let mut terms = Vec::with_capacity(config.terms.len());
        let mut patterns = Vec::with_capacity(config.terms.len());
        for (i, t) in config.terms.into_iter().enumerate() {
            let pattern = normalize(&t.term, false).text.trim().to_string();
            if pattern.is_empty() {
                return Err(format!(
                    "entities policy: term {} (id {:?}) has no letters or digits; remove it",
                    i + 1,
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
            let first = pattern.chars().next().map(class).unwrap_or(Class::Other);
            let last = pattern.chars().next_back().map(class).unwrap_or(Class::Other);
            terms.push(Term {
                id: t.id,
                category,
                edges: (first, last),
            });
            patterns.push(pattern);
        }
        let allow: Vec<String> = config
            .allow
            .iter()
            .map(|a| normalize(a, false).text.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        Ok(Self {
            automaton: build(&patterns)?,
            allow: build(&allow)?,
            terms,
        })
    }

    /// The configured terms, indexed by [`Match::term`].
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Every match of a configured term in `text`, outside allowed terms.
    pub fn find(&self, text: &str) -> Vec<Match> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let norm = normalize(text, true);
        let hay = norm.text.as_str();
        let allowed: Vec<(usize, usize)> = match &self.allow {
            Some(allow) => allow
                .find_iter(hay)
                .filter(|m| on_boundary(hay, m.start(), m.end()))
                .map(|m| (m.start(), m.end()))
                .collect(),
            None => Vec::new(),
        };
        let mut out = Vec::new();
        // Overlapping search is not available for leftmost-longest; scan from every boundary
        // instead would be quadratic, so take leftmost-longest matches and, where one fails the
        // boundary check, retry one position later.
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = automaton.find(aho_corasick::Input::new(hay).span(at..hay.len())) else {
                break;
            };
            let term = &self.terms[m.pattern().as_usize()];
            let ok = boundary_ok(hay, m.start(), m.end(), term.edges);
            let inside_allowed = allowed.iter().any(|&(s, e)| s <= m.start() && m.end() <= e);
            if ok && !inside_allowed {
                out.push(Match {
                    term: m.pattern().as_usize(),
                    start: norm.origin[m.start()] as usize,
                    end: original_end(text, &norm, m.end()),
                });
                at = m.end();
            } else {
                at = next_char(hay, m.start());
            }
        }
        out
    }
}

/// End offset in the original text of a match ending at normalised offset `end`.
fn original_end(text: &str, norm: &Normalized, end: usize) -> usize {
    // The last matched byte came from origin[end-1]; the match ends after that character.
    let last = norm.origin[end - 1] as usize;
    last + text[last..].chars().next().map(char::len_utf8).unwrap_or(0)
}

fn next_char(s: &str, at: usize) -> usize {
    at + s[at..].chars().next().map(char::len_utf8).unwrap_or(1)
}

fn on_boundary(hay: &str, start: usize, end: usize) -> bool {
    let first = hay[start..].chars().next().map(class).unwrap_or(Class::Other);
    let last = hay[..end].chars().next_back().map(class).unwrap_or(Class::Other);
    boundary_ok(hay, start, end, (first, last))
}

fn boundary_ok(hay: &str, start: usize, end: usize, (first, last): (Class, Class)) -> bool {
    let before = hay[..start].chars().next_back().map(class).unwrap_or(Class::Other);
    let after = hay[end..].chars().next().map(class).unwrap_or(Class::Other);
    (before == Class::Other || before != first) && (after == Class::Other || after != last)
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
        assert_eq!(m.terms()[0].category, "entity.codename");
        assert_eq!(m.terms()[1].category, "entity.term");
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
    fn a_hundred_thousand_terms() {
        let terms: Vec<String> = (0..100_000)
            .map(|i| format!(r#"{{"id":"t{i}","term":"Customer {i:05} Holdings"}}"#))
            .collect();
        let m = matcher(&format!(r#"{{"terms":[{}]}}"#, terms.join(",")));
        let text = "notes about customer-54321 holdings and Customer 99999 Holdingsx";
        assert_eq!(ids(&m, text), ["t54321"]);
    }
}
