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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

#[cfg(target_arch = "wasm32")]
mod component;

/// One term as it stands in the configuration, borrowed from the configuration text where it can
/// be: 100,000 terms are read one at a time into the matcher, never held as a list of strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermConfig<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    term: Cow<'a, str>,
    #[serde(default, borrow)]
    category: Option<Cow<'a, str>>,
}

/// A configured term: what is reported when it matches.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    /// The id's place in the matcher's id arena.
    id: (u32, u32),
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
/// token sequence appears.
///
/// Memory, for 100,000 terms: a hash entry and a check hash per term, the ids in one arena (one
/// allocation, not one per string), and a bitset of first tokens. The text is never copied:
/// each token is hashed as it is read, with two independent hashes.
pub struct Matcher {
    terms: Vec<Term>,
    categories: Vec<String>,
    ids: String,
    /// Hash of a token sequence → term index.
    by_hash: HashMap<u64, u32, Prehashed>,
    /// Per term, a second, independent hash of its token sequence: a match needs both (128 bits),
    /// which stands in for comparing the text — a chance false match is ~2^-64 per lookup
    /// even after the first hash collided, and would err toward reporting.
    check: Vec<u64>,
    /// Bit per first-token hash (low bits): most tokens of a text are refused with one load.
    first: Vec<u64>,
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
    if c.is_ascii() {
        return if c.is_ascii_digit() {
            Some(Class::Digit)
        } else if c.is_ascii_alphabetic() {
            Some(Class::Letter)
        } else {
            None
        };
    }
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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// A token: two independent hashes of its lower-cased text (FNV-1a and a multiply-rotate
/// hash) and its span in the original.
#[derive(Clone, Copy)]
struct Token {
    hash: u64,
    check: u64,
    start: u32,
    end: u32,
}

const CHECK_SEED: u64 = 0x243f_6a88_85a3_08d3;

fn mix_check(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29)
}

/// Splits `input` into tokens, hashing each as it is read (no lower-cased copy of the text).
fn tokenize(input: &str) -> Vec<Token> {
    let mut out = Vec::new();
    Tokens { input, at: 0 }.fill(&mut out, usize::MAX);
    out
}

/// The tokens of a text, a batch at a time: scanning keeps only a window of them.
struct Tokens<'a> {
    input: &'a str,
    /// Where the next token's search starts (a token never spans two batches).
    at: usize,
}

impl Tokens<'_> {
    /// Appends up to `want` tokens to `out`; false once the text is used up.
    fn fill(&mut self, out: &mut Vec<Token>, want: usize) -> bool {
        let bytes = self.input.as_bytes();
        let mut at = self.at;
        let mut pushed = 0;
        let mut current: Option<(Class, u32, u64, u64)> = None; // class, start, hashes so far
        while at < bytes.len() {
            let b = bytes[at];
            let (c, len) = if b.is_ascii() {
                (char::from(b), 1)
            } else {
                let c = self.input[at..].chars().next().unwrap_or('\u{fffd}');
                (c, c.len_utf8())
            };
            let k = class(c);
            if let Some((ck, start, hash, check)) = current
                && k != Some(ck)
            {
                out.push(Token {
                    hash,
                    check,
                    start,
                    end: at as u32,
                });
                current = None;
                pushed += 1;
                if pushed == want {
                    self.at = at;
                    return true;
                }
            }
            if let Some(k) = k {
                let (_, _, hash, check) = current.get_or_insert((k, at as u32, FNV_OFFSET, CHECK_SEED));
                if b.is_ascii() {
                    let x = b.to_ascii_lowercase();
                    *hash = (*hash ^ u64::from(x)).wrapping_mul(FNV_PRIME);
                    *check = mix_check(*check, x);
                } else {
                    let mut buf = [0u8; 4];
                    for l in c.to_lowercase() {
                        for &x in l.encode_utf8(&mut buf).as_bytes() {
                            *hash = (*hash ^ u64::from(x)).wrapping_mul(FNV_PRIME);
                            *check = mix_check(*check, x);
                        }
                    }
                }
            }
            at += len;
        }
        self.at = at;
        if let Some((_, start, hash, check)) = current {
            out.push(Token {
                hash,
                check,
                start,
                end: bytes.len() as u32,
            });
        }
        false
    }
}

/// The hash of a token sequence, from its tokens' hashes (order matters).
fn sequence_hash<'t>(tokens: impl IntoIterator<Item = &'t Token>) -> u64 {
    tokens.into_iter().fold(FNV_OFFSET, |h, t| {
        (h.rotate_left(23) ^ t.hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    })
}

/// The second hash of a token sequence, independent of [`sequence_hash`].
fn sequence_check<'t>(tokens: impl IntoIterator<Item = &'t Token>) -> u64 {
    tokens.into_iter().fold(CHECK_SEED, |h, t| {
        (h ^ t.check).wrapping_mul(0xc4ce_b9fe_1a85_ec53).rotate_left(31)
    })
}

const MAX_TERM_TOKENS: usize = 16;

impl Matcher {
    fn empty() -> Self {
        Matcher {
            terms: Vec::new(),
            categories: Vec::new(),
            ids: String::new(),
            by_hash: HashMap::default(),
            check: Vec::new(),
            first: vec![0; 1],
            max_tokens: 0,
            allow: HashSet::default(),
            allow_first: HashSet::default(),
            allow_max_tokens: 0,
        }
    }

    /// Parses a configuration and compiles it.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let mut m = Matcher::empty();
        if !config.trim().is_empty() {
            // Room for what a term list of this size needs, so the arenas do not double past it.
            let guess = config.len() / 80;
            m.terms.reserve(guess);
            m.check.reserve(guess);
            m.by_hash.reserve(guess);
            // About 20 bits per term: one load refuses nearly every other token.
            m.first = vec![0; (config.len() / 8).next_power_of_two().max(64) / 64];
            let mut de = serde_json::Deserializer::from_str(config);
            ConfigSeed(&mut m)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|e| format!("entities policy configuration: {e}"))?;
        }
        // Nothing is shrunk to fit: a shrink copies, and the copy would be the configuration's peak.
        Ok(m)
    }

    fn first_bit(&self, h: u64) -> (usize, u64) {
        let slot = (h as usize) & (self.first.len() * 64 - 1);
        (slot / 64, 1 << (slot % 64))
    }

    fn set_first(&mut self, h: u64) {
        let (word, bit) = self.first_bit(h);
        self.first[word] |= bit;
    }

    fn may_start(&self, h: u64) -> bool {
        let (word, bit) = self.first_bit(h);
        self.first[word] & bit != 0
    }

    fn add(&mut self, t: TermConfig<'_>) -> Result<(), String> {
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
        let category = t.category.as_deref().unwrap_or("entity.term");
        if !category.starts_with("entity.") || category.len() > 64 {
            return Err(format!(
                "entities policy: term id {:?} has category {category:?}; categories start with `entity.`",
                t.id
            ));
        }
        let cat = match self.categories.iter().position(|c| c == category) {
            Some(i) => i,
            None => {
                self.categories.push(category.to_string());
                self.categories.len() - 1
            }
        };
        let index = self.terms.len() as u32;
        // The first configuration of a term wins; a duplicate is ignored.
        self.by_hash.entry(sequence_hash(&tokens)).or_insert(index);
        self.set_first(sequence_hash(&tokens[..1]));
        self.max_tokens = self.max_tokens.max(tokens.len());
        self.check.push(sequence_check(&tokens));
        let id_start = self.ids.len() as u32;
        self.ids.push_str(&t.id);
        self.terms.push(Term {
            id: (id_start, self.ids.len() as u32),
            category: cat as u16,
        });
        Ok(())
    }

    fn add_allowed(&mut self, a: &str) {
        let tokens = tokenize(a);
        if tokens.is_empty() || tokens.len() > MAX_TERM_TOKENS {
            return;
        }
        self.allow.insert(sequence_hash(&tokens));
        self.allow_first.insert(sequence_hash(&tokens[..1]));
        self.allow_max_tokens = self.allow_max_tokens.max(tokens.len());
    }

    /// The configured terms, indexed by [`Match::term`].
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The id of a term (reported as the finding's rule).
    pub fn id(&self, term: &Term) -> &str {
        &self.ids[term.id.0 as usize..term.id.1 as usize]
    }

    /// The category of a term.
    pub fn category(&self, term: &Term) -> &str {
        &self.categories[term.category as usize]
    }

    /// Every match of a configured term in `text`, outside allowed terms.
    ///
    /// The text's tokens stream through a window: the longest term (or allowed term) ahead of
    /// the cursor and the longest allowed term behind it — memory does not grow with the text.
    pub fn find(&self, text: &str) -> Vec<Match> {
        if self.terms.is_empty() {
            return Vec::new();
        }
        let mut stream = Tokens { input: text, at: 0 };
        let ahead = self.max_tokens.max(self.allow_max_tokens);
        let behind = self.allow_max_tokens;
        // `window[k]` is token `base + k`; `i` is the cursor, as a token index. Tokens are read in
        // batches and the ones the cursor left behind dropped a batch at a time, so the window
        // stays a contiguous slice. (Tiny batches in tests, so the drains are exercised.)
        const BATCH: usize = if cfg!(test) { 3 } else { 512 };
        let mut window: Vec<Token> = Vec::with_capacity(2 * BATCH + ahead + behind);
        let (mut base, mut i, mut exhausted) = (0usize, 0usize, false);
        let mut out = Vec::new();
        loop {
            if !exhausted && base + window.len() < i + ahead {
                if i - base > behind + BATCH {
                    window.drain(..i - base - behind);
                    base = i - behind;
                }
                let want = i + ahead + BATCH - (base + window.len());
                exhausted = !stream.fill(&mut window, want);
            }
            let known = base + window.len();
            if i >= known {
                return out;
            }
            let seq = |from: usize, n: usize| &window[from - base..from - base + n];
            if !self.may_start(sequence_hash(seq(i, 1))) {
                i += 1;
                continue;
            }
            // Longest term starting here.
            let longest = (1..=self.max_tokens.min(known - i)).rev().find_map(|n| {
                let term = *self.by_hash.get(&sequence_hash(seq(i, n)))?;
                (self.check[term as usize] == sequence_check(seq(i, n))).then_some((n, term))
            });
            let Some((n, term)) = longest else {
                i += 1;
                continue;
            };
            // Inside an allowed term: one that starts at or before `i` and ends at or after the match.
            let allowed = !self.allow.is_empty()
                && (base.max((i + n).saturating_sub(self.allow_max_tokens))..=i).any(|j| {
                    self.allow_first.contains(&sequence_hash(seq(j, 1)))
                        && (i + n - j..=self.allow_max_tokens.min(known - j))
                            .any(|m| self.allow.contains(&sequence_hash(seq(j, m))))
                });
            if !allowed {
                out.push(Match {
                    term: term as usize,
                    start: window[i - base].start as usize,
                    end: window[i + n - 1 - base].end as usize,
                });
            }
            i += n;
        }
    }
}

/// Reads the configuration object straight into the matcher: `terms` (a list), `terms_csv`
/// (`id,category,term` lines; a header line `id,category,term` is skipped) and `allow`, each at
/// most once. Terms are taken in document order; of two with the same words, the first wins.
struct ConfigSeed<'m>(&'m mut Matcher);

impl<'de> DeserializeSeed<'de> for ConfigSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConfigSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with `terms`, `terms_csv` and `allow`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        const FIELDS: [&str; 3] = ["terms", "terms_csv", "allow"];
        let mut seen = [false; FIELDS.len()];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if let Some(i) = FIELDS.iter().position(|k| *k == key) {
                if seen[i] {
                    return Err(de::Error::duplicate_field(FIELDS[i]));
                }
                seen[i] = true;
            }
            match &*key {
                "terms" => map.next_value_seed(TermsSeed(&mut *self.0))?,
                "terms_csv" => {
                    let csv: Option<Cow<'de, str>> = map.next_value()?;
                    if let Some(csv) = csv {
                        parse_csv(&csv, self.0).map_err(de::Error::custom)?;
                    }
                }
                "allow" => {
                    let allow: Vec<Cow<'de, str>> = map.next_value()?;
                    for a in &allow {
                        self.0.add_allowed(a);
                    }
                }
                other => {
                    return Err(de::Error::unknown_field(other, &FIELDS));
                }
            }
        }
        Ok(())
    }
}

struct TermsSeed<'m>(&'m mut Matcher);

impl<'de> DeserializeSeed<'de> for TermsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TermsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of {id, term, category}")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(t) = seq.next_element::<TermConfig<'de>>()? {
            self.0.add(t).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

fn parse_csv(text: &str, m: &mut Matcher) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.eq_ignore_ascii_case("id,category,term")) {
            continue;
        }
        let mut parts = line.splitn(3, ',');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(category), Some(term)) if !id.is_empty() && !term.is_empty() => {
                let category = category.trim();
                m.add(TermConfig {
                    id: Cow::Borrowed(id.trim()),
                    category: (!category.is_empty()).then_some(Cow::Borrowed(category)),
                    term: Cow::Borrowed(term.trim().trim_matches('"')),
                })?;
            }
            _ => {
                return Err(format!(
                    "entities policy: terms_csv line {} is not `id,category,term`",
                    n + 1
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(json: &str) -> Matcher {
        Matcher::from_json(json).unwrap()
    }

    fn ids(m: &Matcher, text: &str) -> Vec<String> {
        m.find(text)
            .iter()
            .map(|x| m.id(&m.terms()[x.term]).to_string())
            .collect()
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
        assert!(
            Matcher::from_json(r#"{"terms":[],"terms":[]}"#)
                .err()
                .unwrap()
                .contains("duplicate field `terms`")
        );
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

    /// The matcher as it was before the tokens were streamed: every token of the text at once,
    /// every allowed span at once.
    fn find_reference(m: &Matcher, text: &str) -> Vec<Match> {
        let tokens = tokenize(text);
        let mut spans = Vec::new();
        for i in 0..tokens.len() {
            for n in 1..=m.allow_max_tokens.min(tokens.len() - i) {
                if m.allow.contains(&sequence_hash(&tokens[i..i + n])) {
                    spans.push((tokens[i].start as usize, tokens[i + n - 1].end as usize));
                }
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let longest = (1..=m.max_tokens.min(tokens.len() - i)).rev().find_map(|n| {
                let seq = &tokens[i..i + n];
                let term = *m.by_hash.get(&sequence_hash(seq))?;
                (m.check[term as usize] == sequence_check(seq)).then_some((n, term))
            });
            match longest {
                Some((n, term)) => {
                    let (start, end) = (tokens[i].start as usize, tokens[i + n - 1].end as usize);
                    if !spans.iter().any(|&(s, e)| s <= start && end <= e) {
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

    #[test]
    fn the_streaming_window_finds_what_the_whole_text_would() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |k: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % k
        };
        let words = [
            "acme", "orca", "7", "holdings", "tower", "blue", "heron", "x", "42", "Über",
        ];
        let mut matched = 0;
        for round in 0..500 {
            let phrase = |next: &mut dyn FnMut(u64) -> u64, max: u64| {
                let n = 1 + next(max);
                (0..n)
                    .map(|_| words[next(words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let term_phrases: Vec<String> = (0..1 + next(6)).map(|_| phrase(&mut next, 3)).collect();
            // Allowed terms longer than any term: the window must reach past the longest term.
            let allow_phrases: Vec<String> = (0..next(4)).map(|_| phrase(&mut next, 7)).collect();
            let terms: Vec<String> = term_phrases
                .iter()
                .enumerate()
                .map(|(t, p)| format!(r#"{{"id":"t{t}","term":"{p}"}}"#))
                .collect();
            let allow: Vec<String> = allow_phrases.iter().map(|p| format!("{p:?}")).collect();
            let m = matcher(&format!(
                r#"{{"terms":[{}],"allow":[{}]}}"#,
                terms.join(","),
                allow.join(",")
            ));
            // Words, terms and allowed terms verbatim, with separators that do and do not split.
            let seps = [" ", "-", "_", ", ", "\n", "7", ""];
            let text: String = (0..next(60))
                .map(|_| {
                    let piece = match next(4) {
                        0 if !allow_phrases.is_empty() => {
                            allow_phrases[next(allow_phrases.len() as u64) as usize].clone()
                        }
                        1 => term_phrases[next(term_phrases.len() as u64) as usize].clone(),
                        _ => words[next(words.len() as u64) as usize].to_string(),
                    };
                    format!("{piece}{}", seps[next(seps.len() as u64) as usize])
                })
                .collect();
            let found = m.find(&text);
            matched += found.len();
            assert_eq!(
                found,
                find_reference(&m, &text),
                "round {round}: {terms:?} allow {allow:?} in {text:?}"
            );
        }
        assert!(matched > 1_000, "the rounds found too little to compare: {matched}");
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
