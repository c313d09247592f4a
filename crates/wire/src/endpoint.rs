//! The egress rule's first half: which endpoints exist, and what a request path *is*.
//!
//! Every upstream request is exactly one of:
//! 1. an endpoint Conduit **understands** — listed in [`CATALOGUE`]: its body is read (JSON, or
//!    multipart for uploads), every content-bearing field extracted and policed, a worst case
//!    admitted, the response metered;
//! 2. an endpoint the operator **declared** as a passthrough (`[[egress.passthrough]]`), with its
//!    treatment stated (scan its JSON strings / scan it as text / opaque; billable or not) and
//!    recorded in the audit log;
//! 3. **refused**, in the provider's error shape, naming the path and the setting that would allow
//!    it. Unknown paths are refused.
//!
//! Classification sees the path the provider will see: [`canonical`] decodes percent-encoded
//! unreserved characters, drops one trailing slash, and refuses dot segments, empty segments, `;`
//! parameters, encoded `/` `\` `.` and NUL — so no two spellings of a path reach two treatments, and
//! what is forwarded is the canonical form (rebuilt from the matched template), never the client's
//! string.

use http::Method;

use crate::content::Shape;
use crate::protocol::Protocol;

/// What a request asks for, as far as the stages care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/completions`, Anthropic `POST /v1/complete` (legacy).
    Completions,
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/responses/input_tokens` (token counting).
    ResponsesInputTokens,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI `POST /v1/moderations` (free).
    Moderations,
    /// `GET /v1/models[/{id}]`.
    Models,
    /// Bedrock `POST /model/{id}/invoke`.
    Invoke,
    /// Bedrock `POST /model/{id}/invoke-with-response-stream`.
    InvokeStream,
    /// Bedrock `POST /model/{id}/converse`.
    Converse,
    /// Bedrock `POST /model/{id}/converse-stream`.
    ConverseStream,
    /// Bedrock `POST /model/{id}/count-tokens`.
    BedrockCountTokens,
    /// Bedrock control-plane listings (`GET /inference-profiles`, `/foundation-models`).
    BedrockListing,
    /// Anthropic `POST /v1/messages/batches`: each request's params policed and reserved.
    MessageBatches,
    /// OpenAI `POST /v1/batches`: runs the requests of an uploaded batch file.
    Batches,
    /// `POST /v1/files` (multipart): text parts scanned, binary parts per `[egress] binary_uploads`.
    FileUpload,
    /// Reads, deletes and cancels of stored objects (files, batches, uploads, responses): no content
    /// goes out (a body, if any, is JSON and scanned whole).
    Stored,
    /// An operator-declared passthrough (index into `[[egress.passthrough]]`).
    Passthrough(usize),
}

/// How an endpoint's request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON of this shape (an empty body is refused).
    Json(Shape),
    /// JSON if any (every string scanned); an empty body is fine.
    OptionalJson,
    /// `multipart/form-data`.
    Multipart,
    /// Declared passthrough: as its `scan` says.
    Declared,
}

impl Endpoint {
    /// How the body is read.
    pub fn body(self) -> BodyKind {
        use Endpoint::*;
        match self {
            Messages | CountTokens | Completions | ChatCompletions | Responses | ResponsesInputTokens | Embeddings
            | Moderations | Invoke | InvokeStream | Converse | ConverseStream | BedrockCountTokens => {
                BodyKind::Json(Shape::Request)
            }
            MessageBatches => BodyKind::Json(Shape::AnthropicBatch),
            Batches => BodyKind::Json(Shape::Other),
            FileUpload => BodyKind::Multipart,
            Models | BedrockListing | Stored => BodyKind::OptionalJson,
            Passthrough(_) => BodyKind::Declared,
        }
    }

    /// Whether a body sent here is a JSON object the gateway parses.
    pub fn takes_json(self) -> bool {
        matches!(self.body(), BodyKind::Json(_))
    }

    /// Whether the endpoint generates tokens the provider bills (token counting, listings,
    /// moderations and stored-object reads do not). Passthroughs: per their declaration.
    pub fn billable(self) -> bool {
        use Endpoint::*;
        matches!(
            self,
            Messages
                | Completions
                | ChatCompletions
                | Responses
                | Embeddings
                | Invoke
                | InvokeStream
                | Converse
                | ConverseStream
                | MessageBatches
                | Batches
        )
    }

    /// Whether the response streams because of the endpoint itself (Bedrock's streaming paths).
    pub fn streams(self) -> bool {
        matches!(self, Endpoint::InvokeStream | Endpoint::ConverseStream)
    }
}

/// One entry of the catalogue: a family, the methods, a path template, the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The family it belongs to; `None`: shared (decided by the request's headers).
    pub family: Option<Protocol>,
    /// Allowed methods.
    pub methods: &'static [Method],
    /// Segments; `{id}` is an object id (`[A-Za-z0-9_.-]`), `{model}` a Bedrock model id (any).
    pub template: &'static str,
    /// What it is.
    pub endpoint: Endpoint,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const DELETE_OR_GET: &[Method] = &[Method::GET, Method::DELETE];

use Endpoint as E;
use Protocol::{Anthropic as A, Bedrock as B, OpenAi as O};

/// Every endpoint Conduit understands (docs/security.md lists them with their treatment).
pub const CATALOGUE: &[Entry] = &[
    // Anthropic.
    entry(Some(A), POST, "/v1/messages", E::Messages),
    entry(Some(A), POST, "/v1/messages/count_tokens", E::CountTokens),
    entry(Some(A), POST, "/v1/complete", E::Completions),
    entry(Some(A), POST, "/v1/messages/batches", E::MessageBatches),
    entry(Some(A), GET, "/v1/messages/batches", E::Stored),
    entry(Some(A), DELETE_OR_GET, "/v1/messages/batches/{id}", E::Stored),
    entry(Some(A), GET, "/v1/messages/batches/{id}/results", E::Stored),
    entry(Some(A), POST, "/v1/messages/batches/{id}/cancel", E::Stored),
    // OpenAI.
    entry(Some(O), POST, "/v1/chat/completions", E::ChatCompletions),
    entry(Some(O), POST, "/v1/completions", E::Completions),
    entry(Some(O), POST, "/v1/embeddings", E::Embeddings),
    entry(Some(O), POST, "/v1/moderations", E::Moderations),
    entry(Some(O), POST, "/v1/responses", E::Responses),
    entry(Some(O), POST, "/v1/responses/input_tokens", E::ResponsesInputTokens),
    entry(Some(O), DELETE_OR_GET, "/v1/responses/{id}", E::Stored),
    entry(Some(O), POST, "/v1/responses/{id}/cancel", E::Stored),
    entry(Some(O), GET, "/v1/responses/{id}/input_items", E::Stored),
    entry(Some(O), POST, "/v1/batches", E::Batches),
    entry(Some(O), GET, "/v1/batches", E::Stored),
    entry(Some(O), GET, "/v1/batches/{id}", E::Stored),
    entry(Some(O), POST, "/v1/batches/{id}/cancel", E::Stored),
    // Both families.
    entry(None, GET, "/v1/models", E::Models),
    entry(None, GET, "/v1/models/{id}", E::Models),
    entry(None, POST, "/v1/files", E::FileUpload),
    entry(None, GET, "/v1/files", E::Stored),
    entry(None, DELETE_OR_GET, "/v1/files/{id}", E::Stored),
    entry(None, GET, "/v1/files/{id}/content", E::Stored),
    // Bedrock runtime and control plane.
    entry(Some(B), POST, "/model/{model}/invoke", E::Invoke),
    entry(
        Some(B),
        POST,
        "/model/{model}/invoke-with-response-stream",
        E::InvokeStream,
    ),
    entry(Some(B), POST, "/model/{model}/converse", E::Converse),
    entry(Some(B), POST, "/model/{model}/converse-stream", E::ConverseStream),
    entry(Some(B), POST, "/model/{model}/count-tokens", E::BedrockCountTokens),
    entry(Some(B), GET, "/inference-profiles", E::BedrockListing),
    entry(Some(B), GET, "/inference-profiles/{id}", E::BedrockListing),
    entry(Some(B), GET, "/foundation-models", E::BedrockListing),
    entry(Some(B), GET, "/foundation-models/{id}", E::BedrockListing),
];

const fn entry(
    family: Option<Protocol>,
    methods: &'static [Method],
    template: &'static str,
    endpoint: Endpoint,
) -> Entry {
    Entry {
        family,
        methods,
        template,
        endpoint,
    }
}

/// Paths refused with their own reason (not "unknown"); a prefix ends at a segment boundary.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "/v1/uploads",
        "the Uploads API splits one file across requests, so text across a part boundary could not be scanned whole; upload the file with POST /v1/files",
    ),
    (
        "/v1/realtime/client_secrets",
        "it mints short-lived provider keys that a client would then use directly, bypassing this gateway",
    ),
    (
        "/v1/realtime/sessions",
        "it mints short-lived provider keys that a client would then use directly, bypassing this gateway",
    ),
    (
        "/v1/realtime/transcription_sessions",
        "it mints short-lived provider keys that a client would then use directly, bypassing this gateway",
    ),
];

/// A path refused before it is classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem(pub String);

/// The canonical form of a request path (module docs), or why it has none.
pub fn canonical(raw: &str) -> Result<String, PathProblem> {
    let problem = |why: &str| {
        PathProblem(format!(
            "the request path is ambiguous ({why}); send it in its plain form"
        ))
    };
    let rest = raw
        .strip_prefix('/')
        .ok_or_else(|| problem("it does not start with '/'"))?;
    let mut out = String::with_capacity(raw.len());
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if i + 1 == segments.len() && i > 0 {
                break; // one trailing slash: dropped
            }
            if segments.len() == 1 {
                out.push('/');
                break; // "/" itself
            }
            return Err(problem("an empty segment, '//'"));
        }
        out.push('/');
        let b = seg.as_bytes();
        let mut j = 0;
        let mut decoded = String::with_capacity(seg.len());
        while j < b.len() {
            match b[j] {
                b'%' => {
                    let hex = seg
                        .get(j + 1..j + 3)
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    let Some(byte) = hex else {
                        return Err(problem("a '%' that is not a percent-escape"));
                    };
                    match byte {
                        b'.' => return Err(problem("an encoded '.'")),
                        b'/' | b'\\' => return Err(problem("an encoded '/' or '\\'")),
                        0 => return Err(problem("an encoded NUL")),
                        c if c.is_ascii_alphanumeric() || b"-_~".contains(&c) => decoded.push(c as char),
                        c => push_escaped(&mut decoded, c),
                    }
                    j += 3;
                }
                b';' => return Err(problem("a ';' parameter")),
                b'\\' => return Err(problem("a '\\'")),
                // A raw non-ASCII byte (hyper passes them): its escape, so the canonical form is
                // ASCII and canonical again (found by fuzzing: a raw UTF-8 byte was widened to a
                // two-byte char, and the upstream got a path the client never sent).
                c if !c.is_ascii() => {
                    push_escaped(&mut decoded, c);
                    j += 1;
                }
                c => {
                    decoded.push(c as char);
                    j += 1;
                }
            }
        }
        if decoded == "." || decoded == ".." {
            return Err(problem("a '.' or '..' segment"));
        }
        out.push_str(&decoded);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Appends `%XX` (upper-case hex) for `byte`.
fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(b"0123456789ABCDEF"[(byte >> 4) as usize]));
    out.push(char::from(b"0123456789ABCDEF"[(byte & 15) as usize]));
}

/// A path matched against the catalogue.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The entry.
    pub entry: &'static Entry,
    /// `{model}` of a Bedrock path, percent-decoded.
    pub model: Option<String>,
}

/// Why a canonical path matched no entry for the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoMatch {
    /// No entry has this path.
    Unknown,
    /// Entries have this path, for other methods.
    Method(Vec<Method>),
    /// An id segment is not id-shaped.
    BadId(String),
}

/// Looks `path` (canonical) up for `method`, among entries of `family` (or shared ones); `family`
/// `None` takes any family's entries (the caller decides between them).
pub fn lookup(method: &Method, path: &str, family: Option<Protocol>) -> Result<Vec<Matched>, NoMatch> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut found = Vec::new();
    let mut methods = Vec::new();
    for e in CATALOGUE {
        if family.is_some() && e.family.is_some() && e.family != family {
            continue;
        }
        let tpl: Vec<&str> = e.template.trim_start_matches('/').split('/').collect();
        if tpl.len() != segs.len() {
            continue;
        }
        let mut model = None;
        let mut ok = true;
        for (t, s) in tpl.iter().zip(&segs) {
            match *t {
                "{id}" => {
                    if !is_id(s) {
                        return Err(NoMatch::BadId((*s).chars().take(64).collect()));
                    }
                }
                "{model}" => model = Some(conduit_core::percent::decode(s)),
                lit if lit == *s => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        if e.methods.contains(method) {
            found.push(Matched { entry: e, model });
        } else {
            methods.extend(e.methods.iter().cloned());
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    if methods.is_empty() {
        Err(NoMatch::Unknown)
    } else {
        methods.dedup();
        Err(NoMatch::Method(methods))
    }
}

/// Stored-object ids: provider ids are `[A-Za-z0-9_-]` with the odd `.`.
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

/// Paths some clients and proxies send without the `/v1` of OpenAI's API (a base URL without it):
/// classified — and forwarded — as their `/v1` form.
pub fn openai_alias(path: &str) -> Option<String> {
    const ALIASED: &[&str] = &[
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/responses",
        "/moderations",
        "/models",
        "/files",
        "/batches",
        "/uploads",
    ];
    ALIASED
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
        .then(|| format!("/v1{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        for (raw, want) in [
            ("/v1/messages", "/v1/messages"),
            ("/v1/messages/", "/v1/messages"),
            ("/v1/%6d%65ssages", "/v1/messages"),
            ("/v1/chat%2Dcompletions", "/v1/chat-completions"),
            (
                "/model/us.anthropic.x-v1%3a0/invoke",
                "/model/us.anthropic.x-v1%3A0/invoke",
            ),
            ("/", "/"),
            // Raw non-ASCII bytes become their escapes (fuzz/: `path`), the same as when sent escaped.
            ("/v1/files/\u{46f}", "/v1/files/%D1%AF"),
            ("/v1/files/%d1%af", "/v1/files/%D1%AF"),
        ] {
            assert_eq!(canonical(raw).unwrap(), want, "{raw}");
            assert_eq!(canonical(want).unwrap(), want, "canonical twice = once: {raw}");
        }
        for bad in [
            "/v1//messages",
            "/v1/./messages",
            "/v1/../v1/messages",
            "/v1/%2e%2e/messages",
            "/v1/%2E/messages",
            "/v1/files%2Fabc",
            "/v1/files%5cabc",
            "/v1/messages;x=1",
            "/v1/messages%",
            "/v1/messages%zz",
            "/v1/mess%00ages",
            "//v1/messages",
            "v1/messages",
        ] {
            assert!(canonical(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn catalogue_lookups() {
        let one = |m: Method, p: &str, f: Option<Protocol>| lookup(&m, p, f).map(|v| v[0].entry.endpoint);
        assert_eq!(one(Method::POST, "/v1/messages", None), Ok(Endpoint::Messages));
        assert_eq!(
            one(Method::POST, "/v1/files", Some(Protocol::OpenAi)),
            Ok(Endpoint::FileUpload)
        );
        assert_eq!(
            one(Method::GET, "/v1/files/file-abc/content", None),
            Ok(Endpoint::Stored)
        );
        assert!(matches!(lookup(&Method::GET, "/v1/messages", None), Err(NoMatch::Method(m)) if m == [Method::POST]));
        assert_eq!(
            lookup(&Method::GET, "/v1/assistants", None).unwrap_err(),
            NoMatch::Unknown
        );
        assert!(matches!(
            lookup(&Method::GET, "/v1/files/a%20b", None),
            Err(NoMatch::BadId(_))
        ));
        let m = lookup(&Method::POST, "/model/us.anthropic.claude-x-v1%3A0/invoke", None).unwrap();
        assert_eq!(m[0].model.as_deref(), Some("us.anthropic.claude-x-v1:0"));
        assert_eq!(
            openai_alias("/chat/completions").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(openai_alias("/files/file-1").as_deref(), Some("/v1/files/file-1"));
        assert_eq!(openai_alias("/chatx"), None);
        // Every template is itself canonical.
        for e in CATALOGUE {
            assert_eq!(canonical(e.template).unwrap(), e.template);
        }
    }
}
