//! The generic assignment detector: `name = value`, `name: value`, `"name" => "value"`,
//! `setProperty("NAME", "value")`, `<name>value</name>` — where the name says secret and the value
//! looks like one.
//!
//! A hand-written reader rather than one large regex: it is faster on prompt-sized text and each
//! refusal below is a plain, testable rule.

use crate::{entropy, is_placeholder};

/// Words that make a name secret-ish.
pub(crate) const NAME_WORDS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "pwd",
    "key",
    "credential",
    "creds",
    "auth",
    "api",
    "access",
    "private",
    "pass",
    "session",
    "cookie",
    "bearer",
];

/// Compounds that contain a secret word but name something else; removed before the word check.
const NOT_SECRET_COMPOUNDS: &[&str] = &[
    "keyboard",
    "keypress",
    "keydown",
    "keyup",
    "keyframe",
    "keyword",
    "keymap",
    "keycode",
    "keychain",
    "keyset",
    "keying",
    "keymeshing",
    "keypair",
    "keysize",
    "keyselector",
    "keystore",
    "keytab",
    "keyvault",
    "keyalias",
    "turkey",
    "monkey",
    "donkey",
    "whiskey",
    "hockey",
    "jockey",
    "publickey",
    "pubkey",
    "publictoken",
    "primarykey",
    "foreignkey",
    "sortkey",
    "partitionkey",
    "hashkey",
    "rangekey",
    "bucketkey",
    "schemakey",
    "sequencekey",
    "cachekey",
    "idempotencykey",
    "dedupkey",
    "lookupkey",
    "mapkey",
    "dictkey",
    "objectkey",
    "registrykey",
    "csrftoken",
    "xsrftoken",
    "csrf",
    "xsrf",
    "tokenizer",
    "tokenize",
    "tokens",
    "maxtoken",
    "tokencount",
    "accessor",
    "accessib",
    "randomaccess",
    "accesslevel",
    "accessmode",
    "accesslog",
    "accesscontrol",
    "author",
    "authentication",
    "authority",
    "authsource",
    "authmethod",
    "authtype",
    "authprovider",
    "authurl",
    "rapid",
    "capital",
    "apiversion",
    "apiname",
    "apiurl",
    "apiendpoint",
    "apibase",
    "apihost",
    "apiroot",
    "passthrough",
    "passive",
    "passenger",
    "passport",
    "bypass",
    "compass",
    "passwordhint",
    "passwordpolicy",
    "sessionid",
    "sessionname",
    "sessiontimeout",
    "cookiename",
    "cookiepolicy",
    "secretname",
    "secretref",
    "secretsmanager",
    "secretstore",
    "storesecrets",
    "usersecrets",
    "privateip",
    "privateaddress",
    "privatelink",
    "privatesubnet",
    "privatenetwork",
    "privateendpoint",
    "privatedns",
];

/// Name endings that make it metadata about a secret rather than the secret.
const NOT_SECRET_SUFFIXES: &[&str] = &[
    "id",
    "ids",
    "name",
    "names",
    "url",
    "uri",
    "endpoint",
    "file",
    "path",
    "dir",
    "size",
    "length",
    "len",
    "count",
    "type",
    "version",
    "format",
    "mode",
    "prefix",
    "suffix",
    "hash",
    "algorithm",
    "alg",
    "alias",
    "field",
    "column",
    "header",
    "param",
    "policy",
    "pattern",
    "regex",
    "label",
    "env",
    "var",
    "variable",
    "source",
    "store",
    "location",
    "expiry",
    "expires",
    "expiration",
    "ttl",
    "timeout",
    "enabled",
    "required",
    "hint",
    "placeholder",
    "example",
    "description",
    "desc",
    "ref",
    "arn",
    "index",
    "host",
    "port",
    "region",
    "scope",
    "scopes",
    "kind",
    "class",
];

/// Words in a name that say its value is not a live credential: `nonMatchingToken`,
/// `FAKE_API_KEY`, `dummySecret`, `exampleToken`. Whole words only: `WIREMOCK_TOKEN` and
/// `CDN_INVALIDATION_TOKEN` are real.
const SAMPLE_NAME_WORDS: &[&str] = &[
    "nonmatching",
    "notmatching",
    "fake",
    "dummy",
    "mock",
    "mocked",
    "sample",
    "example",
    "invalid",
    "bogus",
];

pub(crate) struct Generic;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

impl Generic {
    pub(crate) fn new() -> Self {
        Self
    }

    /// Spans of values assigned to secret-ish names; `hits` are the name-word matches
    /// (start, end), sorted, found by the scanner's keyword pass.
    pub(crate) fn scan(&self, hay: &[u8], hits: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        let mut next_from = 0;
        for &(hit_start, hit_end) in hits {
            if hit_start < next_from {
                continue;
            }
            // The whole name around the word.
            let mut ns = hit_start;
            while ns > 0 && is_name_byte(hay[ns - 1]) {
                ns -= 1;
            }
            let mut ne = hit_end;
            while ne < hay.len() && is_name_byte(hay[ne]) {
                ne += 1;
            }
            next_from = ne;
            if ne - ns > 80 {
                continue;
            }
            // Cheapest test first: most mentions of "token" in prose are not followed by a value.
            let quoted_name = ns > 0 && matches!(hay[ns - 1], b'"' | b'\'');
            let xml_name = ns > 0 && hay[ns - 1] == b'<';
            let Some((vs, ve)) = value_after(hay, ne, quoted_name, xml_name) else {
                continue;
            };
            let (name, value) = (&hay[ns..ne], &hay[vs..ve]);
            if plausible_secret(value)
                && secret_name(name)
                && !sample_name(name)
                && out.last().is_none_or(|&(_, e)| vs >= e)
            {
                out.push((vs, ve));
                next_from = ve;
            }
        }
        out
    }
}

/// Does the name say its value is a sample (`nonMatchingToken`, `FAKE_API_KEY`, `dummySecret`)?
/// Only where the sample word stands right before the secret word, in the name's last dotted
/// part: `EXAMPLE_APP_SECRET_KEY`, `MOCK_SERVER_PASSWORD` and `payments.mock.token` name real
/// credentials of an app or service that happens to be called so.
fn sample_name(name: &[u8]) -> bool {
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
    let words = crate::words(last);
    let is_sample = |w: &[u8]| SAMPLE_NAME_WORDS.iter().any(|s| s.as_bytes() == w);
    let Some(secret) = words
        .iter()
        .position(|w| NAME_WORDS.iter().any(|n| w.starts_with(n.as_bytes())))
    else {
        return false;
    };
    // The word before it, or the two before it written together (`nonMatching`).
    (secret >= 1 && is_sample(&words[secret - 1]))
        || (secret >= 2 && is_sample(&[words[secret - 2].as_slice(), words[secret - 1].as_slice()].concat()))
}

/// Does the name (without the value) say "this holds a secret"?
pub(crate) fn secret_name(name: &[u8]) -> bool {
    let mut flat: Vec<u8> = name
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(|b| b.to_ascii_lowercase())
        .collect();
    // Metadata suffix on the name as written (`KEY_ID`, `tokenUrl`, `secret_length`).
    let lower: Vec<u8> = name.iter().map(|b| b.to_ascii_lowercase()).collect();
    for suffix in NOT_SECRET_SUFFIXES {
        let s = suffix.as_bytes();
        if lower.len() > s.len() && lower.ends_with(s) {
            let before = name[name.len() - s.len() - 1];
            let first = name[name.len() - s.len()];
            // a separator or a camelCase hump marks a word boundary
            if matches!(before, b'_' | b'.' | b'-')
                || (first.is_ascii_uppercase() && !before.is_ascii_uppercase())
                || lower == s
            {
                return false;
            }
            if name.iter().all(|b| !b.is_ascii_lowercase()) && matches!(before, b'_' | b'.' | b'-') {
                return false;
            }
        }
    }
    for compound in NOT_SECRET_COMPOUNDS {
        let c = compound.as_bytes();
        while let Some(at) = flat.windows(c.len()).position(|w| w == c) {
            flat[at..at + c.len()].fill(b' ');
        }
    }
    NAME_WORDS
        .iter()
        .any(|w| flat.windows(w.len()).any(|x| x == w.as_bytes()))
}

/// Finds the value after a name ending at `at`: separator, optional quote, value.
fn value_after(hay: &[u8], mut at: usize, quoted_name: bool, xml_name: bool) -> Option<(usize, usize)> {
    let n = hay.len();
    // Closing quote / bracket of the name.
    let mut closed = 0;
    while at < n && closed < 2 && matches!(hay[at], b'"' | b'\'' | b']' | b'\\') {
        at += 1;
        closed += 1;
    }
    if xml_name {
        if at < n && hay[at] == b'>' {
            at += 1;
            while at < n && hay[at].is_ascii_whitespace() {
                at += 1;
            }
            return unquoted(hay, at);
        }
        return None;
    }
    while at < n && matches!(hay[at], b' ' | b'\t') {
        at += 1;
    }
    // A type between name and separator: Go's `var name string = "…"`.
    let word = hay[at..]
        .iter()
        .take(12)
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if (1..12).contains(&word) && matches!(hay.get(at + word), Some(b' ' | b'\t')) {
        let mut after = at + word;
        while after < n && matches!(hay[after], b' ' | b'\t') {
            after += 1;
        }
        if hay.get(after) == Some(&b'=') {
            at = after;
        }
    }
    // Separator.
    let rest = &hay[at..];
    let sep_len = [&b":::="[..], b"::=", b":=", b"=>", b"?=", b".=", b"||=", b"="]
        .iter()
        .find(|s| rest.starts_with(s))
        .map(|s| s.len())
        .or_else(|| match rest.first() {
            Some(b':') => Some(1),
            Some(b',') if quoted_name => Some(1),
            _ => None,
        })?;
    at += sep_len;
    if at < n && hay[at] == b'=' {
        return None; // `==`: a comparison
    }
    while at < n && matches!(hay[at], b' ' | b'\t') {
        at += 1;
    }
    if at + 1 < n && hay[at] == b'\\' && matches!(hay[at + 1], b'"' | b'\'') {
        at += 1; // an escaped quote inside a JSON string
    }
    match hay.get(at) {
        Some(&q @ (b'"' | b'\'' | b'`')) => {
            let vs = at + 1;
            let limit = (vs + 256).min(n);
            let ve = (vs..limit).find(|&i| hay[i] == q || hay[i] == b'\n' || hay[i] == b'\\' || hay[i] == b' ')?;
            if hay[ve] != q && hay[ve] != b'\\' {
                return None;
            }
            Some((vs, ve))
        }
        _ => unquoted(hay, at),
    }
}

fn unquoted(hay: &[u8], vs: usize) -> Option<(usize, usize)> {
    let mut ve = vs;
    while ve < hay.len()
        && ve - vs < 256
        && !hay[ve].is_ascii_whitespace()
        && !matches!(
            hay[ve],
            b'"' | b'\'' | b'`' | b';' | b',' | b')' | b'(' | b'<' | b'>' | b'\\' | b'}' | b'{' | b']' | b'['
        )
    {
        ve += 1;
    }
    (ve > vs).then_some((vs, ve))
}

/// Is this value long and random enough, and not code, a version, a path or a placeholder?
pub(crate) fn plausible_secret(v: &[u8]) -> bool {
    if v.len() < 10 || v.len() > 200 || v.contains(&b':') || v.contains(&b'\n') {
        return false;
    }
    // The cheap counts first: most values after a secret-ish name (`req.header`, `64000`) fail
    // them, and the string checks below cost far more, above all in wasm.
    random_enough(v) && !code_or_sample(v)
}

/// Not code, a version, a path, a file name, a digest or a placeholder.
fn code_or_sample(v: &[u8]) -> bool {
    if is_placeholder(v, true) {
        return true;
    }
    let lower: Vec<u8> = v.iter().map(|b| b.to_ascii_lowercase()).collect();
    for prefix in [
        &b"http://"[..],
        b"https://",
        b"file://",
        b"sha256:",
        b"sha512-",
        b"sha384-",
        b"sha1-",
        b"md5:",
        b"true",
        b"false",
        b"null",
        b"none",
        b"process.env",
        b"os.environ",
        b"env.",
        b"getenv",
        b"vault:",
        b"secret:",
        b"arn:aws",
    ] {
        if lower.starts_with(prefix) {
            return true;
        }
    }
    if lower.starts_with(b"/") || lower.starts_with(b"./") || lower.starts_with(b"~/") || lower.starts_with(b"$") {
        return true;
    }
    // A dotted code reference: `X25519.secret_length`, `kVK_Return.u16`, `org.example.Key`.
    if v.contains(&b'.') && v.split(|&b| b == b'.').all(is_identifier) {
        let last = v.rsplit(|&b| b == b'.').next().unwrap_or_default();
        if last.contains(&b'_') || longest_lower_run(last) >= 4 || last.len() <= 4 {
            return true;
        }
    }
    // A trailing version: `jjwt-jackson-0.11.2`, `lib_v1.2`.
    if let Some(at) = v.iter().rposition(|b| matches!(b, b'-' | b'_' | b'v')) {
        let tail = &v[at + 1..];
        if tail.contains(&b'.') && tail.iter().all(|b| b.is_ascii_digit() || *b == b'.') && tail[0].is_ascii_digit() {
            return true;
        }
    }
    // A version: `1.2.3`, `rc0.15.0_20231217-SNAPSHOT`, `v2.0.1-beta`.
    let digits_start = v.iter().position(|b| b.is_ascii_digit());
    if let Some(d) = digits_start
        && d <= 3
        && v[..d].iter().all(|b| b.is_ascii_alphabetic())
    {
        let tail = &v[d..];
        let dots = tail.iter().filter(|&&b| b == b'.').count();
        if tail.windows(2).any(|w| w[0].is_ascii_digit() && w[1] == b'.')
            && (contains(&lower, b"snapshot") || dots >= 2)
        {
            return true;
        }
    }
    // File names: `cert.p12`, `app.keytab`.
    if let Some(dot) = v.iter().rposition(|&b| b == b'.') {
        let ext = &lower[dot + 1..];
        if (2..=5).contains(&ext.len()) && ext.iter().all(|b| b.is_ascii_alphanumeric()) && FILE_EXTS.contains(&ext) {
            return true;
        }
    }
    false
}

/// Mixed enough and random enough to be a key.
fn random_enough(v: &[u8]) -> bool {
    let has_digit = v.iter().any(|b| b.is_ascii_digit());
    let has_upper = v.iter().any(|b| b.is_ascii_uppercase());
    let has_lower = v.iter().any(|b| b.is_ascii_lowercase());
    // Hex in both cases at once: real hex keys and digests are written in one case, and a
    // random base62 token of this length almost never keeps to hex letters — an edited sample.
    if has_upper && has_lower && v.len() >= 16 && v.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let alnum = v.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    if alnum * 2 < v.len() {
        return false; // mostly punctuation: an expression, not a key
    }
    let long_mixed_case = v.len() >= 20 && has_upper && has_lower && longest_lower_run(v) < 5;
    if !(has_digit || long_mixed_case) {
        return false;
    }
    if !has_upper && !has_lower {
        // digits and punctuation only: an id or a number unless long
        return v.len() >= 16 && v.iter().filter(|b| b.is_ascii_digit()).count() >= 16;
    }
    entropy(v) >= if v.len() >= 24 { 3.3 } else { 3.0 }
}

const FILE_EXTS: &[&[u8]] = &[
    b"pem", b"p12", b"pfx", b"key", b"crt", b"cer", b"der", b"jks", b"keytab", b"json", b"yaml", b"yml", b"toml",
    b"txt", b"conf", b"cfg", b"ini", b"env", b"png", b"jpg", b"svg", b"html", b"js", b"ts", b"py", b"rs", b"go",
    b"java", b"xml", b"gpg", b"asc", b"pub", b"csv", b"log", b"md", b"sh",
];

fn is_identifier(part: &[u8]) -> bool {
    !part.is_empty()
        && (part[0].is_ascii_alphabetic() || part[0] == b'_')
        && part.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Longest run of lower-case letters: words in identifiers (`BlindKeySignatures`) have long
/// ones, random tokens rarely do.
fn longest_lower_run(v: &[u8]) -> usize {
    v.split(|b| !b.is_ascii_lowercase()).map(<[u8]>::len).max().unwrap_or(0)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
