//! Test support for the egress property tests (the extractor's and the gateway's): random JSON
//! request bodies — random nesting, key orders, structure-shaped keys and values, escapes, lone
//! surrogates — with a canary secret planted at one random string position, as a value or as a
//! key. Deterministic from its seed. Not used on the request path.

/// The canary the bodies carry (a GitHub token's shape: the secrets policy knows it).
pub const CANARY: &str = "ghp_C4n4ryT0k3nZz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2R";

/// Keys the generator picks from: the APIs' structural names, and free ones.
const KEYS: &[&str] = &[
    "messages",
    "content",
    "type",
    "text",
    "role",
    "input",
    "id",
    "signature",
    "data",
    "source",
    "tools",
    "system",
    "metadata",
    "tool_use",
    "image",
    "media_type",
    "tool_use_id",
    "instructions",
    "mcp_servers",
    "encrypted_content",
    "x",
];

/// Structure-shaped filler values (what a skip rule might take for structure).
const FILLER: &[&str] = &[
    "\"text\"",
    "\"image/png\"",
    "\"toolu_01X\"",
    "\"thinking\"",
    "\"\\u00e9\"",
    "\"user\"",
];

/// A deterministic generator of bodies.
#[derive(Debug)]
pub struct Bodies(u64);

impl Bodies {
    /// Seeded.
    pub fn new(seed: u64) -> Bodies {
        Bodies(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    /// The next body: `{"model":…,"max_tokens":8,"messages":<random>}` with the canary planted.
    pub fn next_body(&mut self) -> String {
        loop {
            let mut holes = 0;
            let tree = self.value(0, &mut holes);
            if holes == 0 {
                continue;
            }
            let at = self.below(holes);
            let canary_value = self.canary();
            let mut out = String::with_capacity(tree.len() + 64);
            let mut n = 0;
            let mut rest = tree.as_str();
            while let Some(i) = rest.find('\u{1}') {
                out.push_str(&rest[..i]);
                let kind = rest.as_bytes()[i + 1];
                let filler = FILLER[(n * 7 + 3) % FILLER.len()];
                match (n == at, kind) {
                    (true, b'v') => out.push_str(&canary_value),
                    (true, _) => out.push_str(&format!("\"{CANARY}\"")), // a key
                    (false, b'v') => out.push_str(filler),
                    (false, _) => out.push_str(&format!("\"k{n}\"")),
                }
                n += 1;
                rest = &rest[i + 2..];
            }
            out.push_str(rest);
            return format!(r#"{{"model":"claude-sonnet-4-5","max_tokens":8,"messages":{out}}}"#);
        }
    }

    /// The canary as a JSON string: plain, with one character escaped, split by a lone
    /// surrogate, or on a line of its own.
    fn canary(&mut self) -> String {
        let split = 4 + self.below(CANARY.len() - 8);
        match self.below(4) {
            0 => format!("\"{CANARY}\""),
            1 => format!(
                "\"pre {}\\u00{:02x}{} post\"",
                &CANARY[..split],
                CANARY.as_bytes()[split],
                &CANARY[split + 1..]
            ),
            2 => format!("\"{}\\uD83D{}\"", &CANARY[..split], &CANARY[split..]),
            _ => format!("\"note:\\n{CANARY}\\t\""),
        }
    }

    /// A random value; `\u{1}v` marks a string hole, `\u{1}k` a key hole.
    fn value(&mut self, depth: usize, holes: &mut usize) -> String {
        if depth > 5 || self.below(3) == 0 {
            return match self.below(4) {
                0 => self.below(100).to_string(),
                1 => "null".into(),
                _ => {
                    *holes += 1;
                    "\u{1}v".into()
                }
            };
        }
        if self.below(2) == 0 {
            let n = self.below(4);
            let items: Vec<String> = (0..n).map(|_| self.value(depth + 1, holes)).collect();
            return format!("[{}]", items.join(","));
        }
        let mut used = Vec::new();
        let mut members = Vec::new();
        for _ in 0..self.below(5) {
            let k = KEYS[self.below(KEYS.len())];
            if used.contains(&k) {
                continue;
            }
            used.push(k);
            members.push(format!("\"{k}\":{}", self.value(depth + 1, holes)));
        }
        if self.below(4) == 0 {
            *holes += 1;
            members.push(format!("\u{1}k:{}", self.below(9)));
        }
        format!("{{{}}}", members.join(","))
    }
}
