//! What a request sends out, read once: the **facts** the gateway acts on (model, stream,
//! max-output fields, choices, tier, inputs the body does not bound, server-side search fees) and
//! the **segments** the policies scan — every string of the body, unless it sits at a position
//! the provider's API defines as structure and its value has that structure's shape.
//!
//! Both come from one strict parse ([`json::Doc`]); a body that does not parse is refused, so
//! there is no "could not read it, forward it anyway" path.
//!
//! ## What is skipped, exactly
//! Outside free-form data (below), and only when the value has the expected shape — nothing else:
//! - `type`, `role`, `status`, `format`, `media_type`, `detail`, cache-control `ttl`: a vocabulary
//!   word (lowercase letters in parts; a part with a digit is all digits, a date or version);
//! - the base64 `data` / `bytes` of an image, document or audio source whose media type or format
//!   is binary *and whose decoded bytes are a whole file of that format* (PNG chunks with valid
//!   CRCs to `IEND` and nothing after, JPEG SOI…EOI, GIF to its trailer, RIFF of its stated size,
//!   PDF to a final `%%EOF`): a PNG with text appended is no PNG, and is scanned.
//!
//! Ids, thinking signatures, redacted thinking and encrypted reasoning are scanned: a client
//! chooses what it sends there, and a scan of them costs little (the verdict cache remembers them).
//!
//! **Free-form data** — tool inputs, tool definitions and their schemas, `metadata`, MCP server
//! configs, and any member the API does not define — is scanned whole, keys included: each
//! object becomes one segment of `key: value` lines, so a detector sees a secret with its name.
//!
//! Every segment carries its [`Origin`] (prompt, system, tool definition, tool input, tool
//! result, metadata, MCP, field), so operators can give findings there their own mode.
//!
//! ## Lone surrogates
//! A `\uD83D` with no partner is scanned twice: as U+FFFD (how a strict decoder reads it) and
//! removed (how a lenient one may, rejoining a secret split by it). The forwarded bytes are the
//! client's.

pub mod canary;
pub mod json;
pub mod multipart;

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::billing::{Billing, Tier};
use crate::segments::{Origin, Segment};
use json::{Doc, Kind};

/// What the gateway learned from a body.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestFacts {
    /// `model`, if present (recordable form: `stages::inspect::recordable_model`).
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// The largest max-output field (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
    /// Bedrock `inferenceConfig.maxTokens`, …).
    pub max_tokens: Option<u64>,
    /// Completions asked for (OpenAI `n`, `best_of`); 0 or 1: one.
    pub choices: u64,
    /// The body references input it does not carry (file ids, URLs, MCP servers, stored
    /// conversations, server-side tools): the model's whole context window may be billed.
    pub unbounded_input: bool,
    /// Fee-bearing server-side searches the request allows at most.
    pub web_searches: u64,
    /// The service tier and multipliers the request asks for.
    pub billing: Billing,
    /// Bytes of the request's JSON (a batch item's own, else the body's): its input bound.
    pub bytes: u64,
    /// A stored file the request runs (OpenAI batches' `input_file_id`).
    pub file_ref: Option<String>,
}

/// A body's facts and segments. For a batch, `requests` holds each request's own facts.
#[derive(Debug, Default)]
pub struct Extracted<'a> {
    /// Facts of the request (for a batch: of the whole, with `requests` per item).
    pub facts: RequestFacts,
    /// The text it sends out.
    pub segments: Vec<Segment<'a>>,
    /// Batch items' facts (Anthropic message batches, OpenAI batch files).
    pub requests: Vec<RequestFacts>,
    /// Bytes forwarded unread (binary upload parts, when the operator allows them).
    pub opaque_bytes: u64,
    /// An upload's `purpose` field.
    pub purpose: Option<String>,
    /// The request's parts, when read with a [`Recall`]: each element of its `messages`,
    /// `system`, `input` and `tools`, in body order — read into `segments`, or remembered whole.
    pub parts: Vec<Part>,
}

/// A part of a request: one element of its `messages`, `system` or `input` array, or its whole
/// `tools` array, known by a BLAKE3 hash of the member's name and the exact bytes. An agent resends
/// its whole conversation and every tool definition each turn; a part seen before (same bytes,
/// same place in the API) gives the same segments and the same verdict, so it is neither read
/// nor scanned again — its remembered verdict applies (see `conduit_policy`'s part memo).
pub type PartKey = [u8; 32];

/// What reading a part gave, remembered with its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartSummary {
    /// Segments it reads into (counted against `max_segments` whether read or remembered).
    pub segments: u32,
    /// It references input the body does not carry (a file id, a URL): the request's
    /// `unbounded_input` is set whether the part is read or remembered.
    pub unbounded: bool,
}

/// Parts already read and judged: consulted for each part before it is read.
pub trait Recall {
    /// The summary of the part with this key, if it is remembered with a verdict.
    fn recall(&self, key: &PartKey) -> Option<PartSummary>;
}

/// One part of a request (see [`PartKey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its key.
    pub key: PartKey,
    /// Its JSON path (`messages[3]`): the prefix of its segments' paths.
    pub path: String,
    /// Its segments in [`Extracted::segments`]; empty (at the place it would start) when it was
    /// remembered rather than read.
    pub segments: std::ops::Range<usize>,
    /// What it reads into.
    pub summary: PartSummary,
    /// Remembered (not read): its verdict is the memo's.
    pub remembered: bool,
}

/// Most parts one body is read as; further elements are read as usual. Claude Code's longest
/// sessions send a few thousand messages; each part costs a hash and a memo lookup.
pub const MAX_PARTS: usize = 4096;

/// The recall to read the next part with: none once a body has `MAX_PARTS` parts (the rest is
/// read as usual) — one bound for every kind of part, batch items' `params` included.
fn recall_below_max(recall: Option<&dyn Recall>, parts: usize) -> Option<&dyn Recall> {
    recall.filter(|_| parts < MAX_PARTS)
}

/// The key of a part: member name, the element's kind and its exact bytes.
fn part_key(member: &str, doc: &Doc<'_>, item: usize) -> PartKey {
    let mut h = blake3::Hasher::new();
    h.update(b"conduit request part v1\0");
    h.update(member.as_bytes());
    h.update(&[0, doc.node(item).kind as u8]);
    h.update(doc.raw(item).as_bytes());
    *h.finalize().as_bytes()
}

/// Why a body is refused: a status class and a message that quotes none of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that was exceeded (413), else a malformed body (400).
    pub too_large: bool,
    /// What is wrong and what to do.
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            too_large: false,
            message: message.into(),
        }
    }
}

impl From<json::JsonError> for Refusal {
    fn from(e: json::JsonError) -> Refusal {
        Refusal {
            too_large: matches!(e, json::JsonError::TooManyValues { .. }),
            message: e.to_string(),
        }
    }
}

/// Limits on what one body may hold; each refuses when exceeded (none scans a prefix).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Deepest JSON nesting (400 beyond).
    pub max_depth: usize,
    /// Most JSON values (413 beyond).
    pub max_values: usize,
    /// Most text segments (413 beyond).
    pub max_segments: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_depth: 128,
            max_values: 4_000_000,
            max_segments: 100_000,
        }
    }
}

/// The JSON shape a body is read as: decides where facts live (batches hold many requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One model request (Anthropic Messages, OpenAI chat / completions / Responses /
    /// embeddings / moderations, Bedrock invoke and Converse).
    Request,
    /// Anthropic message batches: `requests[].params` are requests.
    AnthropicBatch,
    /// Any other JSON (uploads, batch control, declared passthroughs): every string scanned.
    Other,
}

/// Reads a JSON body: facts and segments, or a refusal.
pub fn json<'a>(body: &'a [u8], shape: Shape, limits: &BodyLimits) -> Result<Extracted<'a>, Refusal> {
    json_recalling(body, shape, limits, None)
}

/// As [`json`], reading only the parts `recall` does not remember ([`Extracted::parts`] says
/// which were read and which remembered). The facts are the same either way.
pub fn json_recalling<'a>(
    body: &'a [u8],
    shape: Shape,
    limits: &BodyLimits,
    recall: Option<&dyn Recall>,
) -> Result<Extracted<'a>, Refusal> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Refusal::bad(
            "the request body is not a JSON object; send `{\"model\": …, \"messages\": …}`",
        ));
    }
    let doc = Doc::parse(
        body,
        json::Limits {
            max_depth: limits.max_depth,
            max_values: limits.max_values,
        },
    )?;
    let mut w = Walker {
        doc: &doc,
        out: Vec::new(),
        path: String::with_capacity(64),
        limits: *limits,
        facts: RequestFacts::default(),
        recall,
        parts: Vec::new(),
        remembered: 0,
    };
    let mut requests = Vec::new();
    match shape {
        Shape::Request => w.request_root(0)?,
        Shape::Other => {
            w.free(0, Origin::Field)?;
            w.facts.file_ref = doc.get(0, "input_file_id").map(|v| doc.string(v).0.into_owned());
            w.facts.bytes = body.len() as u64;
        }
        Shape::AnthropicBatch => {
            for (k, v) in doc.members(0) {
                let key = doc.string(k).0;
                w.with_key(&key, |w| {
                    if key == "requests" && doc.node(v).kind == Kind::Array {
                        for (i, item) in doc.children(v).enumerate() {
                            w.with_index(i, |w| w.batch_item(item, &mut requests))?;
                        }
                        Ok(())
                    } else {
                        w.member_free(&key, v, Origin::Field)
                    }
                })?;
            }
            let mut total = RequestFacts::default();
            for r in &requests {
                total.unbounded_input |= r.unbounded_input;
                total.stream |= r.stream;
            }
            w.facts = total;
        }
    }
    let Walker { out, facts, parts, .. } = w;
    Ok(Extracted {
        facts,
        segments: out,
        requests,
        parts,
        ..Extracted::default()
    })
}

/// A JSONL batch input file (OpenAI: `{"custom_id", "method", "url", "body"}` per line): each
/// line's `body` read as the request it is, everything else scanned. `path` prefixes the paths.
pub fn jsonl_batch<'a>(bytes: &'a [u8], path: &str, limits: &BodyLimits) -> Result<Extracted<'a>, Refusal> {
    let mut out = Extracted::default();
    let mut offset = 0;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let at = offset;
        offset += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc = Doc::parse(
            line,
            json::Limits {
                max_depth: limits.max_depth,
                max_values: limits.max_values,
            },
        )
        .map_err(|e| Refusal::bad(format!("line {} of the batch file (byte {at}): {e}", n + 1)))?;
        if doc.node(0).kind != Kind::Object {
            return Err(Refusal::bad(format!(
                "line {} of the batch file is not a JSON object",
                n + 1
            )));
        }
        let mut w = Walker {
            doc: &doc,
            out: Vec::new(),
            path: format!("{path}.lines[{n}]"),
            limits: BodyLimits {
                max_segments: limits.max_segments.saturating_sub(out.segments.len()),
                ..*limits
            },
            facts: RequestFacts::default(),
            recall: None,
            parts: Vec::new(),
            remembered: 0,
        };
        let mut body_seen = false;
        for (k, v) in doc.members(0) {
            let key = doc.string(k).0;
            if key == "body" && doc.node(v).kind == Kind::Object {
                body_seen = true;
                w.with_key("body", |w| w.request_root(v))?;
            } else {
                w.with_key(&key, |w| w.member_free(&key, v, Origin::File))?;
            }
        }
        if !body_seen {
            return Err(Refusal::bad(format!(
                "line {} of the batch file has no `body` object (each line is {{\"custom_id\", \"method\", \"url\", \"body\"}})",
                n + 1
            )));
        }
        out.facts.unbounded_input |= w.facts.unbounded_input;
        out.requests.push(w.facts);
        out.segments.extend(w.out);
    }
    Ok(out)
}

/// Text that is not JSON (a text file upload, a passthrough scanned as text): segments of at most
/// `CHUNK` bytes overlapping by `OVERLAP`, so a secret across a chunk boundary is seen whole.
/// Invalid UTF-8 is scanned lossily (the forwarded bytes are the client's).
pub fn text<'a>(bytes: &'a [u8], path: &str, origin: Origin, limits: &BodyLimits) -> Result<Vec<Segment<'a>>, Refusal> {
    const CHUNK: usize = 1 << 20;
    const OVERLAP: usize = 64 * 1024;
    if std::str::from_utf8(bytes).is_err() {
        // Invalid bytes are scanned both ways: replaced (a strict reading) and removed (a lenient
        // one, which would rejoin text they split).
        let replaced = String::from_utf8_lossy(bytes).into_owned();
        let removed = replaced.replace('\u{FFFD}', "");
        let mut out = text_chunks(Cow::Owned(replaced), path, origin, limits, CHUNK, OVERLAP)?;
        out.extend(text_chunks(
            Cow::Owned(removed),
            &format!("{path}(invalid bytes dropped)"),
            origin,
            limits,
            CHUNK,
            OVERLAP,
        )?);
        return Ok(out);
    }
    text_chunks(String::from_utf8_lossy(bytes), path, origin, limits, CHUNK, OVERLAP)
}

fn text_chunks<'a>(
    text: Cow<'a, str>,
    path: &str,
    origin: Origin,
    limits: &BodyLimits,
    chunk: usize,
    overlap: usize,
) -> Result<Vec<Segment<'a>>, Refusal> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + chunk).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if out.len() >= limits.max_segments {
            return Err(too_many_segments(limits));
        }
        let piece: Cow<'a, str> = match &text {
            Cow::Borrowed(t) => Cow::Borrowed(&t[start..end]),
            Cow::Owned(t) => Cow::Owned(t[start..end].to_string()),
        };
        out.push(Segment {
            path: if start == 0 {
                path.to_string()
            } else {
                format!("{path}@{start}")
            },
            text: piece,
            origin,
        });
        if end == text.len() {
            break;
        }
        let mut next = end - overlap.min(end - start);
        while !text.is_char_boundary(next) {
            next -= 1;
        }
        start = next.max(start + 1);
    }
    Ok(out)
}

fn too_many_segments(limits: &BodyLimits) -> Refusal {
    Refusal {
        too_large: true,
        message: format!(
            "the request body holds more than {} separate pieces of text; send less, or ask the operator to raise limits.max_text_values",
            limits.max_segments
        ),
    }
}

/// The walker's idea of where it is in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// A message object.
    Message,
    /// A list of content blocks / parts / input items.
    Blocks,
    /// A content block, part, input item, tool call (`type` says which, or one member does).
    Block,
    /// An image / document source.
    Source,
    /// Converse `image` / `document` / `video`, OpenAI `input_audio`, chat `image_url`.
    Media,
    /// The tool definitions.
    Tools,
}

struct Walker<'d, 'a> {
    doc: &'d Doc<'a>,
    out: Vec<Segment<'a>>,
    path: String,
    limits: BodyLimits,
    facts: RequestFacts,
    /// Parts already read and judged; `None`: every part is read (and none recorded).
    recall: Option<&'d dyn Recall>,
    /// The parts, read or remembered (only with `recall`).
    parts: Vec<Part>,
    /// Segments of remembered parts: counted against `max_segments` as if read.
    remembered: usize,
}

/// Keys whose values are decided by the API at the root of a request, with their origin.
fn root_origin(key: &str) -> Origin {
    match key {
        "messages" | "input" | "prompt" | "suffix" | "inputText" | "prediction" => Origin::Prompt,
        "system" | "instructions" => Origin::System,
        "tools" | "toolConfig" | "functions" | "tool_choice" => Origin::ToolDefinition,
        "metadata" | "user" | "client_metadata" | "requestMetadata" | "safety_identifier" => Origin::Metadata,
        "mcp_servers" => Origin::Mcp,
        _ => Origin::Field,
    }
}

/// Member names the APIs define (Anthropic, OpenAI, Bedrock request bodies and batch / upload
/// metadata): their keys are schema, not text. Any other key is scanned with its value.
const KNOWN_KEYS: &[&str] = &[
    "model",
    "messages",
    "system",
    "input",
    "instructions",
    "prompt",
    "suffix",
    "tools",
    "tool_choice",
    "metadata",
    "mcp_servers",
    "thinking",
    "context_management",
    "output_config",
    "container",
    "stop_sequences",
    "stop",
    "response_format",
    "text",
    "reasoning",
    "include",
    "prediction",
    "stream",
    "stream_options",
    "user",
    "service_tier",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "modalities",
    "audio",
    "store",
    "truncation",
    "max_tool_calls",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "client_metadata",
    "previous_response_id",
    "conversation",
    "background",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
    "json",
    "arguments",
    "parameters",
    "input_schema",
    "inputSchema",
    "schema",
    "json_schema",
    "function",
    "functions",
    "function_call",
    "anthropic_version",
    "anthropic_beta",
    "encoding_format",
    "dimensions",
    "custom_id",
    "params",
    "method",
    "url",
    "body",
    "endpoint",
    "completion_window",
    "input_file_id",
    "purpose",
    "filename",
    "bytes",
    "mime_type",
    "part_ids",
    "md5",
    "cache_control",
    "citations",
    "strict",
    "name",
    "description",
    "server_label",
    "server_url",
    "authorization",
    "authorization_token",
    "headers",
    "require_approval",
    "allowed_tools",
    "tool_configuration",
    "type",
    "role",
    "content",
    "id",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_tokens_to_sample",
    "n",
    "best_of",
    "speed",
    "inference_geo",
    "frequency_penalty",
    "presence_penalty",
    "verbosity",
    "web_search_options",
    "max_uses",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "budget_tokens",
    "effort",
    "summary",
    "edits",
    "trigger",
    "keep",
    "toolSpec",
    "tool",
    "textGenerationConfig",
    "maxTokens",
    "stopSequences",
    "maxTokenCount",
    "inputText",
    "display_height_px",
    "display_width_px",
    "display_number",
    "defer_loading",
    "input_examples",
    "format",
    "value",
];

fn is_known_key(key: &str) -> bool {
    static SET: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| KNOWN_KEYS.iter().copied().collect());
    SET.contains(key)
}

const MAX_OUTPUT_KEYS: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_tokens_to_sample",
    "max_gen_len",
    "maxTokens",
    "max_new_tokens",
    "maxTokenCount",
];

/// Output tokens assumed per server-side tool call when a request does not bound its uses: a
/// call's block (id, name, input) is never shorter than this, so `max_output / 16` bounds them.
pub const MIN_TOKENS_PER_TOOL_CALL: u64 = 16;

impl<'a> Walker<'_, 'a> {
    fn with_key<T>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> Result<T, Refusal>) -> Result<T, Refusal> {
        let len = self.path.len();
        push_key(&mut self.path, key);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    fn with_index<T>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> Result<T, Refusal>) -> Result<T, Refusal> {
        let len = self.path.len();
        let _ = write!(self.path, "[{i}]");
        let r = f(self);
        self.path.truncate(len);
        r
    }

    fn emit(&mut self, text: Cow<'a, str>, origin: Origin) -> Result<(), Refusal> {
        if text.is_empty() {
            return Ok(());
        }
        if self.out.len() + self.remembered >= self.limits.max_segments {
            return Err(too_many_segments(&self.limits));
        }
        self.out.push(Segment {
            path: short_path(&self.path),
            text,
            origin,
        });
        Ok(())
    }

    /// A string node as one segment (twice, when it holds a lone surrogate).
    fn emit_string(&mut self, node: usize, origin: Origin) -> Result<(), Refusal> {
        let (text, lone) = self.doc.string(node);
        self.emit(text, origin)?;
        if lone {
            let dropped = self.doc.string_without_surrogates(node);
            self.path.push_str("(surrogates dropped)");
            let r = self.emit(Cow::Owned(dropped), origin);
            self.path.truncate(self.path.len() - "(surrogates dropped)".len());
            r?;
        }
        Ok(())
    }

    /// The root object of one model request: facts, then every member by its kind.
    fn request_root(&mut self, root: usize) -> Result<(), Refusal> {
        let doc = self.doc;
        let mut facts = std::mem::take(&mut self.facts);
        read_facts(doc, root, &mut facts)?;
        let node = doc.node(root);
        facts.bytes = u64::from(node.end - node.start);
        for (k, v) in doc.members(root) {
            let key = doc.string(k).0;
            let origin = root_origin(&key);
            match (key.as_ref(), doc.node(v).kind) {
                ("prompt" | "input", Kind::Array) if holds_token_ids(doc, v) => {
                    return Err(Refusal::bad(format!(
                        "`{key}` is given as token ids, which Conduit cannot read (the provider decodes them to text); send the text itself"
                    )));
                }
                ("messages", Kind::Array) => self.with_key(&key, |w| w.parts(v, &key, Ctx::Message, origin))?,
                ("system" | "input", Kind::Array) => self.with_key(&key, |w| w.parts(v, &key, Ctx::Block, origin))?,
                ("tools", Kind::Array) => {
                    tool_facts(doc, v, &mut facts);
                    // The tool definitions are one part: a client resends the same set every
                    // turn, and one hash over the whole array runs at BLAKE3's parallel speed
                    // (per-definition hashes of a few hundred bytes each run at its one-block speed).
                    let recall = recall_below_max(self.recall, self.parts.len());
                    self.with_key(&key, |w| match recall {
                        None => w.walk(v, Ctx::Tools, origin),
                        Some(recall) => w.part(v, &key, Ctx::Tools, origin, recall),
                    })?
                }
                ("tool_choice", Kind::Object) => self.with_key(&key, |w| w.walk(v, Ctx::Block, origin))?,
                // Any member the API does not define is scanned with its key, whatever its value.
                _ => self.with_key(&key, |w| w.member_free(&key, v, origin))?,
            }
            if key == "prompt" && doc.node(v).kind == Kind::Object {
                facts.unbounded_input = true; // a stored prompt the provider fills in
            }
            if key == "mcp_servers" && doc.children(v).next().is_some() {
                facts.unbounded_input = true;
            }
            if matches!(key.as_ref(), "previous_response_id" | "conversation") && doc.node(v).kind != Kind::Null {
                facts.unbounded_input = true; // the provider adds a stored conversation
            }
        }
        // Server-side tools bill per use and add their results as input.
        if facts.web_searches > 0 {
            facts.unbounded_input = true;
        }
        if facts.web_searches == u64::MAX {
            let max_output = facts.max_tokens.unwrap_or(64_000);
            facts.web_searches = max_output.div_ceil(MIN_TOKENS_PER_TOOL_CALL);
        }
        let seen_unbounded = self.facts.unbounded_input;
        self.facts = facts;
        self.facts.unbounded_input |= seen_unbounded;
        Ok(())
    }

    /// The elements of a root array (`messages`, `system`, `input`, `tools`), each read as
    /// `item_ctx` — as parts when there is a [`Recall`] (as `walk` would read the array).
    fn parts(&mut self, array: usize, member: &str, item_ctx: Ctx, origin: Origin) -> Result<(), Refusal> {
        let doc = self.doc;
        for (i, item) in doc.children(array).enumerate() {
            // Only objects and arrays are parts (a lone string is one segment, which the
            // segment cache already remembers), and at most MAX_PARTS of them: a body of
            // millions of tiny elements costs no more than it did without the memo.
            let recall = recall_below_max(self.recall, self.parts.len())
                .filter(|_| matches!(doc.node(item).kind, Kind::Object | Kind::Array));
            self.with_index(i, |w| match recall {
                None => w.walk(item, item_ctx, origin),
                Some(recall) => w.part(item, member, item_ctx, origin, recall),
            })?;
        }
        Ok(())
    }

    /// One part: remembered whole, or read (and its summary recorded for the memo).
    fn part(
        &mut self,
        item: usize,
        member: &str,
        ctx: Ctx,
        origin: Origin,
        recall: &dyn Recall,
    ) -> Result<(), Refusal> {
        let key = part_key(member, self.doc, item);
        let start = self.out.len();
        if let Some(summary) = recall.recall(&key) {
            // The limit holds as if the part were read: a body refused cold is refused warm.
            if start + self.remembered + summary.segments as usize > self.limits.max_segments {
                return Err(too_many_segments(&self.limits));
            }
            self.remembered += summary.segments as usize;
            self.facts.unbounded_input |= summary.unbounded;
            self.parts.push(Part {
                key,
                path: short_path(&self.path),
                segments: start..start,
                summary,
                remembered: true,
            });
            return Ok(());
        }
        // Whether this part alone references unbounded input (the flag is the request's).
        let before = std::mem::replace(&mut self.facts.unbounded_input, false);
        let read = self.walk(item, ctx, origin);
        let unbounded = self.facts.unbounded_input;
        self.facts.unbounded_input |= before;
        read?;
        let end = self.out.len();
        self.parts.push(Part {
            key,
            path: short_path(&self.path),
            segments: start..end,
            summary: PartSummary {
                segments: (end - start) as u32,
                unbounded,
            },
            remembered: false,
        });
        Ok(())
    }

    /// One Anthropic batch item: `custom_id` and `params` (a request of its own).
    fn batch_item(&mut self, item: usize, requests: &mut Vec<RequestFacts>) -> Result<(), Refusal> {
        let doc = self.doc;
        if doc.node(item).kind != Kind::Object {
            return self.free(item, Origin::Field);
        }
        let mut params_seen = false;
        for (k, v) in doc.members(item) {
            let key = doc.string(k).0;
            if key == "params" && doc.node(v).kind == Kind::Object {
                params_seen = true;
                let outer = std::mem::take(&mut self.facts);
                self.with_key("params", |w| w.request_root(v))?;
                requests.push(std::mem::replace(&mut self.facts, outer));
            } else {
                self.with_key(&key, |w| w.member_free(&key, v, Origin::Field))?;
            }
        }
        if !params_seen {
            return Err(Refusal::bad(format!(
                "batch item {} has no `params` object; each item is {{\"custom_id\": …, \"params\": {{…}}}}",
                self.path
            )));
        }
        Ok(())
    }

    /// A member of a structured object whose key the API does not define (or defines as free
    /// data): scanned whole, its key with it (unless the key is one of the API's own names).
    fn member_free(&mut self, key: &str, v: usize, origin: Origin) -> Result<(), Refusal> {
        let doc = self.doc;
        let schema_key = is_known_key(key);
        match doc.node(v).kind {
            Kind::String if schema_key => self.emit_string(v, origin),
            Kind::Object | Kind::Array if schema_key => self.free(v, origin),
            Kind::Number | Kind::True | Kind::False | Kind::Null if schema_key => Ok(()),
            Kind::String => {
                let (text, lone) = doc.string(v);
                self.emit(Cow::Owned(format!("{key}: {text}")), origin)?;
                if lone {
                    let dropped = doc.string_without_surrogates(v);
                    self.emit(Cow::Owned(format!("{key}: {dropped}")), origin)?;
                }
                Ok(())
            }
            Kind::Object | Kind::Array => {
                self.emit(Cow::Owned(key.to_string()), origin)?;
                self.free(v, origin)
            }
            // A key the API does not define carries text even when its value is a number.
            _ => self.emit(Cow::Owned(key.to_string()), origin),
        }
    }

    /// Free-form data: one segment of `key: value` lines per object (strings and keys; numbers
    /// and literals carry no text), one of lines per array of strings; nested containers recurse.
    fn free(&mut self, node: usize, origin: Origin) -> Result<(), Refusal> {
        let doc = self.doc;
        let mut lines = String::new();
        let mut dropped: Option<String> = None;
        match doc.node(node).kind {
            Kind::Object => {
                let mut nested = Vec::new();
                for (k, v) in doc.members(node) {
                    let (key, klone) = doc.string(k);
                    if matches!(
                        key.as_ref(),
                        "file_id" | "input_file_id" | "file_url" | "image_url" | "url"
                    ) {
                        self.facts.unbounded_input = true; // it may name input the body does not carry
                    }
                    match doc.node(v).kind {
                        Kind::String => {
                            let (text, lone) = doc.string(v);
                            if lone || klone || dropped.is_some() {
                                let alt = (lone || klone).then(|| {
                                    format!(
                                        "{}: {}\n",
                                        doc.string_without_surrogates(k),
                                        doc.string_without_surrogates(v)
                                    )
                                });
                                add_line(&mut lines, &mut dropped, &format!("{key}: {text}\n"), alt);
                            } else {
                                // The common case, without a line allocated on the way.
                                lines.reserve(key.len() + text.len() + 3);
                                lines.push_str(&key);
                                lines.push_str(": ");
                                lines.push_str(&text);
                                lines.push('\n');
                            }
                        }
                        kind => {
                            if matches!(kind, Kind::Object | Kind::Array) {
                                nested.push((k, v));
                            }
                            let alt = klone.then(|| format!("{}:\n", doc.string_without_surrogates(k)));
                            add_line(&mut lines, &mut dropped, &format!("{key}:\n"), alt);
                        }
                    }
                }
                self.emit_lines(lines, dropped, origin)?;
                for (k, v) in nested {
                    let key = doc.string(k).0;
                    self.with_key(&key, |w| w.free(v, origin))?;
                }
            }
            Kind::Array => {
                let mut nested = Vec::new();
                for (i, item) in doc.children(node).enumerate() {
                    match doc.node(item).kind {
                        Kind::String => {
                            let (text, lone) = doc.string(item);
                            let alt = lone.then(|| format!("{}\n", doc.string_without_surrogates(item)));
                            add_line(&mut lines, &mut dropped, &format!("{text}\n"), alt);
                        }
                        Kind::Object | Kind::Array => nested.push((i, item)),
                        _ => {}
                    }
                }
                self.emit_lines(lines, dropped, origin)?;
                for (i, item) in nested {
                    self.with_index(i, |w| w.free(item, origin))?;
                }
            }
            Kind::String => self.emit_string(node, origin)?,
            _ => {}
        }
        Ok(())
    }

    fn emit_lines(&mut self, lines: String, dropped: Option<String>, origin: Origin) -> Result<(), Refusal> {
        let lines = lines.trim_end_matches('\n').to_string();
        self.emit(Cow::Owned(lines), origin)?;
        if let Some(d) = dropped {
            self.path.push_str("(surrogates dropped)");
            let r = self.emit(Cow::Owned(d.trim_end_matches('\n').to_string()), origin);
            self.path.truncate(self.path.len() - "(surrogates dropped)".len());
            r?;
        }
        Ok(())
    }

    /// Structured content (module docs).
    fn walk(&mut self, node: usize, ctx: Ctx, origin: Origin) -> Result<(), Refusal> {
        let doc = self.doc;
        match doc.node(node).kind {
            Kind::String => self.emit_string(node, origin),
            Kind::Array => {
                let item_ctx = match ctx {
                    Ctx::Blocks => Ctx::Block,
                    Ctx::Tools => Ctx::Tools,
                    other => other,
                };
                for (i, item) in doc.children(node).enumerate() {
                    self.with_index(i, |w| w.walk(item, item_ctx, origin))?;
                }
                Ok(())
            }
            Kind::Object => match ctx {
                Ctx::Tools => self.tool(node),
                _ => self.object(node, ctx, origin),
            },
            _ => Ok(()),
        }
    }

    /// One tool definition: its `type` is structure; everything else is free text.
    fn tool(&mut self, node: usize) -> Result<(), Refusal> {
        let doc = self.doc;
        for (k, v) in doc.members(node) {
            let key = doc.string(k).0;
            if key == "type" && is_word(doc, v) {
                continue;
            }
            self.with_key(&key, |w| w.member_free(&key, v, Origin::ToolDefinition))?;
        }
        Ok(())
    }

    fn object(&mut self, node: usize, ctx: Ctx, origin: Origin) -> Result<(), Refusal> {
        let doc = self.doc;
        let block_type = doc.get(node, "type").and_then(|t| doc.str_if_plain(t)).unwrap_or("");
        // The origin of what this block carries.
        let origin = match block_type {
            "tool_result"
            | "function_call_output"
            | "web_search_tool_result"
            | "mcp_tool_result"
            | "code_execution_tool_result"
            | "tool_search_tool_result" => Origin::ToolResult,
            _ if ctx == Ctx::Message && doc.get(node, "role").and_then(|r| doc.str_if_plain(r)) == Some("tool") => {
                Origin::ToolResult
            }
            _ => origin,
        };
        for (k, v) in doc.members(node) {
            let key = doc.string(k).0;
            let kind = doc.node(v).kind;
            if ctx == Ctx::Source
                && matches!(key.as_ref(), "url" | "file_id" | "s3Location" | "uri")
                && kind != Kind::Null
            {
                self.facts.unbounded_input = true;
            }
            if matches!(key.as_ref(), "file_id" | "file_url") && kind == Kind::String {
                self.facts.unbounded_input = true;
            }
            if key == "image_url" || key == "url" {
                let remote = match kind {
                    Kind::String => !is_data_uri(doc, v),
                    Kind::Object => doc.get(v, "url").is_some_and(|u| !is_data_uri(doc, u)),
                    _ => false,
                };
                self.facts.unbounded_input |= remote;
            }
            if self.skip(node, ctx, block_type, &key, v) {
                continue;
            }
            let child = child_ctx(ctx, block_type, &key);
            self.with_key(&key, |w| match (child, kind) {
                (Some(_), Kind::String) => w.emit_string(v, origin_of(origin, &key, block_type)),
                (Some(c), Kind::Object | Kind::Array) => w.walk(v, c, origin_of(origin, &key, block_type)),
                (Some(_), _) => Ok(()),
                (None, _) => w.member_free(&key, v, origin_of(origin, &key, block_type)),
            })?;
        }
        Ok(())
    }

    /// Whether member `key` (value `v`) of object `obj` is structure to be skipped (module docs).
    fn skip(&self, obj: usize, ctx: Ctx, block_type: &str, key: &str, v: usize) -> bool {
        let doc = self.doc;
        match key {
            "type" | "role" | "status" | "format" | "media_type" | "mediaType" | "detail" | "ttl" => is_word(doc, v),
            "data" | "bytes" if ctx == Ctx::Source || ctx == Ctx::Media => {
                let media = doc
                    .get(obj, "media_type")
                    .or_else(|| doc.get(obj, "mediaType"))
                    .or_else(|| doc.get(obj, "format"))
                    .and_then(|m| doc.str_if_plain(m))
                    .unwrap_or("");
                let declared_base64 = block_type == "base64" || ctx == Ctx::Media || key == "bytes";
                declared_base64 && binary_payload(doc, v, media)
            }
            "url" | "image_url" | "file_data" => is_data_uri(doc, v),
            _ => false,
        }
    }
}

/// Paths are recorded; a deep one is kept to its first and last parts (`MAX_PATH` bytes), so a
/// body nested to the limit cannot make every segment carry kilobytes of path.
pub fn short_path(path: &str) -> String {
    const MAX_PATH: usize = 128;
    if path.len() <= MAX_PATH {
        return path.to_string();
    }
    // Paths are ASCII (`push_key` writes only field-like keys, indexes and `[*]`).
    format!("{}…{}", &path[..48], &path[path.len() - 72..])
}

/// `[1, 2, …]` or `[[1, 2], …]`: a prompt as token ids.
fn holds_token_ids(doc: &Doc<'_>, v: usize) -> bool {
    doc.children(v).any(|item| match doc.node(item).kind {
        Kind::Number => true,
        Kind::Array => doc.children(item).any(|i| doc.node(i).kind == Kind::Number),
        _ => false,
    })
}

/// Adds a line to a free-form segment; `alt` is the line with lone surrogates removed, which
/// starts the second reading of the segment.
fn add_line(lines: &mut String, dropped: &mut Option<String>, line: &str, alt: Option<String>) {
    match (alt, dropped.as_mut()) {
        (Some(alt), _) => dropped.get_or_insert_with(|| lines.clone()).push_str(&alt),
        (None, Some(d)) => d.push_str(line),
        (None, None) => {}
    }
    lines.push_str(line);
}

/// The context of member `key` of a structured object, or `None` when it is free data.
fn child_ctx(ctx: Ctx, block_type: &str, key: &str) -> Option<Ctx> {
    Some(match (ctx, key) {
        (Ctx::Message, "content" | "tool_calls") => Ctx::Blocks,
        (Ctx::Message, "audio") => Ctx::Block,
        (Ctx::Message, "role" | "name" | "tool_call_id" | "refusal" | "reasoning_content") => Ctx::Block,
        (Ctx::Block, "content" | "citations" | "output" | "summary" | "results") => Ctx::Blocks,
        (Ctx::Block, "source") => Ctx::Source,
        (Ctx::Block, "cache_control" | "toolResult" | "reasoningContent" | "reasoningText" | "cachePoint") => {
            Ctx::Block
        }
        (Ctx::Block, "toolUse") => Ctx::Block,
        (Ctx::Block, "image" | "document" | "video" | "input_audio" | "image_url" | "file") => Ctx::Media,
        (Ctx::Block, "input") if matches!(block_type, "tool_use" | "server_tool_use" | "mcp_tool_use") => {
            return None;
        }
        (Ctx::Block, "input") if block_type.is_empty() => return None, // Converse toolUse.input
        (
            Ctx::Block,
            "text" | "thinking" | "name" | "title" | "cited_text" | "document_title" | "arguments" | "refusal"
            | "filename" | "file_url" | "server_name" | "tool_name" | "context" | "transcript" | "url",
        ) => Ctx::Block,
        (Ctx::Media, "source") => Ctx::Source,
        (Ctx::Media, "name" | "url" | "filename" | "file_url") => Ctx::Media,
        (Ctx::Source, "content") => Ctx::Blocks,
        (Ctx::Source, "url" | "file_id") => Ctx::Source,
        _ => return None,
    })
}

/// The origin of what member `key` carries.
fn origin_of(origin: Origin, key: &str, block_type: &str) -> Origin {
    match (key, block_type) {
        ("input", "tool_use" | "server_tool_use" | "mcp_tool_use") | ("input", "") | ("arguments", _) => {
            Origin::ToolInput
        }
        ("toolUse" | "tool_calls" | "function_call", _) => Origin::ToolInput,
        ("toolResult", _) => Origin::ToolResult,
        _ => origin,
    }
}

/// Facts at the root of one request.
fn read_facts(doc: &Doc<'_>, root: usize, f: &mut RequestFacts) -> Result<(), Refusal> {
    if let Some(m) = doc.get(root, "model") {
        f.model = match doc.node(m).kind {
            Kind::String => Some(recordable_model(&doc.string(m).0)),
            Kind::Null => None,
            _ => return Err(Refusal::bad("the request's `model` is not a string")),
        };
    }
    if let Some(s) = doc.get(root, "stream") {
        f.stream = match doc.node(s).kind {
            Kind::True => true,
            Kind::String => matches!(doc.string(s).0.as_ref(), "true" | "True" | "1"),
            _ => false,
        };
    }
    let mut max: Option<u64> = None;
    let mut consider = |obj: usize, f_name: &str| -> Result<(), Refusal> {
        for key in MAX_OUTPUT_KEYS {
            if let Some(v) = doc.get(obj, key) {
                let n = count(doc, v).ok_or_else(|| {
                    Refusal::bad(format!(
                        "`{f_name}{key}` is not a whole number of tokens; Conduit reserves budget against it, so it must be one"
                    ))
                })?;
                max = Some(max.map_or(n, |m| m.max(n)));
            }
        }
        Ok(())
    };
    consider(root, "")?;
    for nested in ["inferenceConfig", "textGenerationConfig", "generationConfig"] {
        if let Some(obj) = doc.get(root, nested).filter(|&o| doc.node(o).kind == Kind::Object) {
            consider(obj, &format!("{nested}."))?;
        }
    }
    f.max_tokens = max;
    let mut choices = 1;
    for key in ["n", "best_of"] {
        if let Some(v) = doc.get(root, key) {
            let n =
                count(doc, v).ok_or_else(|| Refusal::bad(format!("`{key}` is not a whole number of completions")))?;
            choices = choices.max(n);
        }
    }
    f.choices = choices;
    let text = |key: &str| doc.get(root, key).and_then(|v| doc.str_if_plain(v));
    f.billing = Billing {
        tier: match text("service_tier") {
            Some("priority") => Tier::Priority,
            Some("flex") => Tier::Flex,
            _ => Tier::Standard,
        },
        fast: text("speed") == Some("fast"),
        us_only: text("inference_geo") == Some("us"),
    };
    Ok(())
}

/// Server-side tools that bill per use: web search (Anthropic `web_search_*`, OpenAI
/// `web_search*`). Their bound: `max_uses`, else OpenAI's `max_tool_calls`, else as many as the
/// output could hold (marked `u64::MAX` until the output bound is known).
fn tool_facts(doc: &Doc<'_>, tools: usize, f: &mut RequestFacts) {
    for tool in doc.children(tools) {
        let Some(kind) = doc.get(tool, "type").and_then(|t| doc.str_if_plain(t)) else {
            continue;
        };
        if kind.starts_with("web_search") {
            let uses = doc.get(tool, "max_uses").and_then(|v| count(doc, v));
            f.web_searches = match uses {
                _ if f.web_searches == u64::MAX => u64::MAX,
                Some(n) => f.web_searches.saturating_add(n).min(u64::MAX - 1),
                None => u64::MAX, // bounded later by the output
            };
        } else if matches!(
            kind,
            "file_search" | "mcp" | "code_interpreter" | "image_generation" | "computer_use_preview"
        ) || kind.starts_with("web_fetch")
            || kind.starts_with("code_execution")
        {
            f.unbounded_input = true; // results come back as input the body does not bound
        }
    }
}

/// A whole number of tokens: an integer, an integral float, or a numeric string (lenient
/// servers coerce those). `None` for anything else, or a negative number.
fn count(doc: &Doc<'_>, v: usize) -> Option<u64> {
    let raw = match doc.node(v).kind {
        Kind::Number => doc.raw(v).to_string(),
        Kind::String => doc.string(v).0.trim().to_string(),
        _ => return None,
    };
    if let Ok(n) = raw.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = raw.parse().ok()?;
    // `as` saturates: a float beyond u64 becomes u64::MAX.
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0).then_some(f as u64)
}

/// A vocabulary word of an API (a `type`, `role`, media type, format): lowercase letters in
/// parts joined by `_ . : / + -`, where a part with a digit is all digits (a date or version:
/// `web_search_20250305`). Nothing random-looking — no hex, no UUID, no token — has this shape.
fn is_word(doc: &Doc<'_>, v: usize) -> bool {
    doc.str_if_plain(v).is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.split(['_', '.', ':', '/', '+', '-']).all(|part| {
                !part.is_empty()
                    && (part.bytes().all(|b| b.is_ascii_lowercase()) || part.bytes().all(|b| b.is_ascii_digit()))
            })
    })
}

/// `data:<binary type>;base64,<payload>` whose payload starts with that type's signature.
fn is_data_uri(doc: &Doc<'_>, v: usize) -> bool {
    let Some(s) = doc.str_if_plain(v) else {
        return false;
    };
    let Some(rest) = s.strip_prefix("data:") else {
        return false;
    };
    let Some((mime, payload)) = rest.split_once(";base64,") else {
        return false;
    };
    binary(payload, mime)
}

fn binary_payload(doc: &Doc<'_>, v: usize, media: &str) -> bool {
    doc.str_if_plain(v).is_some_and(|s| binary(s, media))
}

/// Whether base64 `payload` is a whole file of the binary format `media` (a MIME type or a
/// Bedrock format name) names: it decodes, and its structure holds end to end — PNG chunks (with
/// their CRCs) up to `IEND` and nothing after; a JPEG from SOI to EOI; a GIF to its trailer; a
/// RIFF (WebP, WAV) whose size field is its length; a PDF from `%PDF-` to a final `%%EOF`. Text
/// appended to a real image is then no image, and is scanned. Formats without such a check (MP3,
/// MP4, WebM) are scanned as text.
fn binary(payload: &str, media: &str) -> bool {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload) else {
        return false;
    };
    let media = media.trim().to_ascii_lowercase();
    let kind = media.rsplit('/').next().unwrap_or("");
    let b = bytes.as_slice();
    match kind {
        "png" => png_whole(b),
        "jpeg" | "jpg" => b.starts_with(b"\xff\xd8\xff") && b.ends_with(b"\xff\xd9"),
        "gif" => (b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a")) && b.last() == Some(&0x3b),
        "webp" => riff_whole(b, b"WEBP"),
        "wav" | "x-wav" => riff_whole(b, b"WAVE"),
        "pdf" => {
            let tail = &b[b.len().saturating_sub(1024)..];
            b.starts_with(b"%PDF-")
                && memchr::memmem::rfind(tail, b"%%EOF")
                    .is_some_and(|at| tail[at + 5..].iter().all(u8::is_ascii_whitespace))
        }
        _ => false,
    }
}

fn png_whole(b: &[u8]) -> bool {
    let Some(mut rest) = b.strip_prefix(b"\x89PNG\r\n\x1a\n") else {
        return false;
    };
    while rest.len() >= 12 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(chunk) = rest.get(4..8 + len) else {
            return false;
        };
        let Some(crc) = rest.get(8 + len..12 + len) else {
            return false;
        };
        if crc32fast::hash(chunk).to_be_bytes() != crc {
            return false;
        }
        rest = &rest[12 + len..];
        if &chunk[..4] == b"IEND" {
            return rest.is_empty();
        }
    }
    false
}

fn riff_whole(b: &[u8], form: &[u8; 4]) -> bool {
    b.len() >= 12
        && b.starts_with(b"RIFF")
        && &b[8..12] == form
        && u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize + 8 == b.len()
}

/// What the gateway records (ledger, audit, messages) for a client-supplied model id. Anything not
/// shaped like a model id is replaced, so a client cannot put arbitrary text — a prompt, a secret —
/// into the store or the logs through this field. The forwarded bytes are untouched.
pub fn recordable_model(m: &str) -> String {
    let id_like =
        !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/@[]-".contains(&b));
    if id_like {
        m.to_string()
    } else {
        INVALID_MODEL.to_string()
    }
}

/// Recorded in place of a model field that is not a model id.
pub const INVALID_MODEL: &str = "(invalid model id)";

/// Appends an object key to a JSON path. Paths are recorded (findings, audit, block messages),
/// and keys are client data — a tool's input may have any key — so only keys that look like field
/// names are written; anything else (long, odd characters, digit-rich like a token) becomes `[*]`.
pub fn push_key(path: &mut String, key: &str) {
    let field_like = !key.is_empty()
        && key.len() <= 32
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && key.bytes().filter(u8::is_ascii_digit).count() <= 2;
    if field_like {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str("[*]");
    }
}

/// Why a request body is not the JSON expected, without any of its text: serde_json's data
/// errors quote the offending value (`invalid type: string "…"`), and refusals reach the log. Only
/// messages that name our own fields (`duplicate field`, `missing field`) are kept as they are.
pub fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    match e.classify() {
        Category::Data if text.starts_with("duplicate field") || text.starts_with("missing field") => {
            format!("the request body is not a JSON object of the expected shape: {text}")
        }
        Category::Data => format!(
            "the request body is not a JSON object of the expected shape: a value of the wrong type at line {} column {}",
            e.line(),
            e.column()
        ),
        // Syntax and EOF messages name a position and what was expected, never the input.
        Category::Syntax | Category::Eof | Category::Io => format!("the request body is not valid JSON: {text}"),
    }
}

#[cfg(test)]
mod tests;

/// The segments of a model-request JSON body (Anthropic, OpenAI, Bedrock shapes), as the gateway
/// extracts them; a body that is not a valid JSON object yields none. For tests, benchmarks and the
/// CLI — the gateway itself refuses such bodies ([`json`]).
pub fn segments_of(body: &[u8]) -> Vec<Segment<'_>> {
    json(body, Shape::Request, &BodyLimits::default())
        .map(|e| e.segments)
        .unwrap_or_default()
}
