//! Token usage from a provider's response, read by a tap on the response body as it streams past.
//!
//! [`UsageTap`] sees every frame the gateway forwards, on the poll after hyper took the frame (see
//! `body::UpstreamBody`), so metering never delays one; it decompresses a copy when the upstream
//! compressed the body (gzip, br, zstd), and parses what it needs:
//! - Anthropic SSE: `message_start.message.usage` (input, cache write, cache read) and the
//!   cumulative `message_delta.usage` (output; later API versions repeat input fields there too);
//! - OpenAI chat SSE: the final chunk's `usage` (only when the client asked `include_usage`);
//! - OpenAI Responses SSE: `response.completed.response.usage`;
//! - JSON bodies of all three: the top-level `usage`;
//! - Bedrock: AWS event-stream frames (CRC-checked) whose `chunk` events carry the Anthropic events
//!   base64-encoded (their usage as above, and `amazon-bedrock-invocationMetrics` on the last),
//!   Converse's `metadata.usage` (`inputTokens`, `cacheReadInputTokens`, …), and the JSON bodies
//!   of `invoke` (Anthropic's shape) and `converse`.
//!
//! It also counts the bytes of generated text (and tool-call arguments), so that a response without
//! usage can still be estimated. The tap's memory is bounded: a partial SSE line up to 1 MiB, a JSON
//! body up to 16 MiB; past that it stops parsing and the request is marked estimated.

use std::io::Write;

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use crate::protocol::Protocol;

/// Tokens as the provider bills them. `input` excludes cached tokens on every family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens (reasoning included).
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// Of `cache_write`, the tokens written with the 1-hour TTL (a dearer rate).
    #[serde(default)]
    pub cache_write_1h: u64,
    /// Server-side web searches the provider ran (billed per search).
    #[serde(default)]
    pub web_searches: u64,
}

impl Usage {
    /// All input tokens, cached or not (what long-context tiers are decided on).
    pub fn total_input(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            input: self.input + o.input,
            output: self.output + o.output,
            cache_read: self.cache_read + o.cache_read,
            cache_write: self.cache_write + o.cache_write,
            cache_write_1h: self.cache_write_1h + o.cache_write_1h,
            web_searches: self.web_searches + o.web_searches,
        }
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), std::ops::Add::add)
    }
}

/// What the tap learned when the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Usage reported by the provider, if it reported any.
    pub reported: Option<Usage>,
    /// Bytes of generated text seen (for estimates).
    pub text_bytes: u64,
    /// A provider error event arrived inside a 2xx stream.
    pub stream_error: bool,
    /// Parsing stopped (a body over 16 MiB that is not SSE, undecodable compression, a broken
    /// event stream); an SSE line over [`MAX_LINE`] is skipped, not given up on.
    pub gave_up: bool,
    /// How the provider says it billed the request (service tier, fast mode, US-only), when it
    /// says so.
    pub billing: Option<crate::billing::Billing>,
}

pub const MAX_LINE: usize = 1024 * 1024;
const MAX_JSON: usize = 16 * 1024 * 1024;

/// Reads usage from a response body, frame by frame.
pub struct UsageTap {
    protocol: Protocol,
    decoder: Decoder,
    sse: bool,
    /// Bedrock's binary event stream, when the response is one.
    frames: Option<crate::eventstream::Decoder>,
    buf: Vec<u8>,
    /// Inside an SSE line longer than [`MAX_LINE`]: its bytes are counted as text (for an
    /// estimate) and skipped up to the next newline, where parsing resumes — the provider's usage
    /// event after it is still read.
    skipping: bool,
    /// Whether the line being skipped is a text delta (its bytes count toward an estimate; an
    /// image or a whole response object does not).
    skipped_is_text: bool,
    /// The last bytes of the line being skipped: where a whole response object carries its
    /// `usage` (OpenAI's `response.completed` holds the entire response, then `usage`).
    tail: Vec<u8>,
    observed: Observed,
    usage: Usage,
}

impl std::fmt::Debug for UsageTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageTap")
            .field("protocol", &self.protocol)
            .field("sse", &self.sse)
            .finish_non_exhaustive()
    }
}

enum Decoder {
    Identity,
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
    Deflate(Box<flate2::write::ZlibDecoder<Vec<u8>>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(ZstdBuffered),
    Failed,
}

impl UsageTap {
    /// A tap for a response of `protocol` with the given `content-type` and `content-encoding`.
    pub fn new(protocol: Protocol, content_type: Option<&str>, content_encoding: Option<&str>) -> UsageTap {
        let media = content_type
            .map(|t| t.trim_start().to_ascii_lowercase())
            .unwrap_or_default();
        let sse = media.starts_with("text/event-stream");
        let frames = media
            .starts_with("application/vnd.amazon.eventstream")
            .then(crate::eventstream::Decoder::default);
        let decoder = match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
            None => Decoder::Identity,
            Some(e) if e.is_empty() || e == "identity" => Decoder::Identity,
            Some(e) if e == "gzip" || e == "x-gzip" => {
                Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Vec::new())))
            }
            Some(e) if e == "deflate" => Decoder::Deflate(Box::new(flate2::write::ZlibDecoder::new(Vec::new()))),
            Some(e) if e == "br" => {
                Decoder::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(Vec::new(), 4096)))
            }
            Some(e) if e == "zstd" => Decoder::Zstd(ZstdBuffered { compressed: Vec::new() }),
            Some(_) => Decoder::Failed,
        };
        let mut tap = UsageTap {
            protocol,
            decoder,
            sse,
            frames,
            buf: Vec::new(),
            skipping: false,
            skipped_is_text: false,
            tail: Vec::new(),
            observed: Observed::default(),
            usage: Usage::default(),
        };
        if matches!(tap.decoder, Decoder::Failed) {
            tap.observed.gave_up = true;
        }
        tap
    }

    /// Feeds the next body frame (as it went to the client).
    pub fn observe(&mut self, chunk: &[u8]) {
        if self.observed.gave_up {
            return;
        }
        if let Decoder::Identity = self.decoder {
            return self.consume(chunk);
        }
        // Insurance: a third-party decoder must not take a connection down on hostile bytes.
        let decoder = &mut self.decoder;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match decoder {
            Decoder::Gzip(d) => write_and_take(d.as_mut(), chunk, |d| d.get_mut()),
            Decoder::Deflate(d) => write_and_take(d.as_mut(), chunk, |d| d.get_mut()),
            Decoder::Brotli(d) => write_and_take(d.as_mut(), chunk, |d| d.get_mut()),
            Decoder::Zstd(d) => d.push(chunk),
            Decoder::Identity | Decoder::Failed => None,
        }));
        match decoded {
            Ok(Some(bytes)) => self.consume(&bytes),
            _ => {
                self.decoder = Decoder::Failed;
                self.observed.gave_up = true;
            }
        }
    }

    /// Ends the body and returns what was seen.
    pub fn finish(mut self) -> Observed {
        match &mut self.decoder {
            Decoder::Gzip(d) => {
                let _ = d.try_finish();
                let rest = std::mem::take(d.get_mut());
                self.consume(&rest);
            }
            Decoder::Zstd(z) if !self.observed.gave_up => match z.finish() {
                Some(all) => self.consume(&all),
                None => self.observed.gave_up = true,
            },
            _ => {}
        }
        if self.sse {
            if self.skipping {
                self.skipped();
            }
            if !self.buf.is_empty() {
                let line = std::mem::take(&mut self.buf);
                self.line(&line);
            }
        } else if !self.observed.gave_up && !self.buf.is_empty() {
            let body = std::mem::take(&mut self.buf);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                self.json_body(&v);
            }
        }
        self.observed
    }

    fn consume(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.observed.gave_up {
            return;
        }
        if let Some(mut frames) = self.frames.take() {
            // The messages before a framing error count too, however the reads were cut.
            if frames.push_each(bytes, |m| self.frame(&m)).is_err() {
                self.observed.gave_up = true;
                self.observed.stream_error = true;
            }
            self.frames = Some(frames);
            return;
        }
        if !self.sse {
            if self.buf.len() + bytes.len() > MAX_JSON {
                self.observed.gave_up = true;
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(bytes);
            }
            return;
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.skipping {
                if self.skipped_is_text {
                    self.observed.text_bytes += nl as u64;
                }
                self.keep_tail(&rest[..nl]);
                self.skipped();
            } else if self.buf.len() + nl > MAX_LINE {
                // However the reads cut it, a line over the limit is skipped, never parsed whole.
                if looks_like_text(&line_head(&self.buf, &rest[..nl])) {
                    self.observed.text_bytes += (self.buf.len() + nl) as u64;
                }
                let buf = std::mem::take(&mut self.buf);
                self.tail.clear();
                self.keep_tail(&buf);
                self.keep_tail(&rest[..nl]);
                self.skipped();
            } else if self.buf.is_empty() {
                self.line(&rest[..nl]);
            } else {
                let mut line = std::mem::take(&mut self.buf);
                line.extend_from_slice(&rest[..nl]);
                self.line(&line);
            }
            rest = &rest[nl + 1..];
        }
        if self.skipping {
            if self.skipped_is_text {
                self.observed.text_bytes += rest.len() as u64;
            }
            self.keep_tail(rest);
        } else if self.buf.len() + rest.len() > MAX_LINE {
            // An oversized line (a huge delta, a whole response object, or a hostile upstream):
            // memory stays bounded, a text delta's bytes count as generated text (for an
            // estimate), the usage at its end is still read, and parsing resumes after it.
            self.skipped_is_text = looks_like_text(&line_head(&self.buf, rest));
            if self.skipped_is_text {
                self.observed.text_bytes += (self.buf.len() + rest.len()) as u64;
            }
            let buf = std::mem::take(&mut self.buf);
            self.tail.clear();
            self.keep_tail(&buf);
            self.keep_tail(rest);
            self.skipping = true;
        } else {
            self.buf.extend_from_slice(rest);
        }
    }

    /// Keeps the last [`TAIL`] bytes of the line being skipped (amortised: trimmed at twice that).
    fn keep_tail(&mut self, more: &[u8]) {
        self.tail.extend_from_slice(&more[more.len().saturating_sub(TAIL)..]);
        if self.tail.len() > 2 * TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
    }

    /// The skipped line ended: read the `usage` object its last bytes hold, if any.
    fn skipped(&mut self) {
        self.skipping = false;
        let tail = std::mem::take(&mut self.tail);
        if let Some(usage) = last_usage_object(&tail[tail.len().saturating_sub(TAIL)..]) {
            self.merge(&usage);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"event: error") || line.starts_with(b"event:error") {
            self.observed.stream_error = true;
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        self.data(data.strip_prefix(b" ").unwrap_or(data));
    }

    /// One Bedrock event-stream message: an exception, an invoke `chunk` (an Anthropic event,
    /// base64 in `bytes`), or a Converse event (its JSON directly).
    fn frame(&mut self, m: &crate::eventstream::Message) {
        if crate::bedrock::is_exception(m) {
            self.observed.stream_error = true;
            return;
        }
        if let Some(event) = crate::bedrock::chunk_event(m) {
            return self.data(&event);
        }
        match m.header(":event-type") {
            Some("contentBlockDelta") => {
                if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                    self.observed.text_bytes += str_len(&v["delta"]["text"]) + str_len(&v["delta"]["toolUse"]["input"]);
                }
            }
            Some("metadata") => {
                if let Ok(v) = serde_json::from_slice::<Value>(&m.payload)
                    && v["usage"].is_object()
                {
                    self.merge(&v["usage"]);
                }
            }
            _ => {}
        }
    }

    /// One event's JSON (an SSE `data:` payload, or a decoded Bedrock chunk).
    fn data(&mut self, data: &[u8]) {
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        // Hot path: most events are text deltas. Only events that carry a usage object or an error
        // are parsed as JSON; deltas are measured by a scan that allocates nothing.
        if !needs_parse(data) {
            self.observed.text_bytes += scan_delta_text_len(data);
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if v.get("error").is_some_and(|e| !e.is_null()) || v["type"] == "error" || v["type"] == "response.failed" {
            self.observed.stream_error = true;
        }
        // Generated text, for estimates.
        self.observed.text_bytes += delta_text_len(&v);
        self.service_tier(&v["service_tier"]);
        self.service_tier(&v["response"]["service_tier"]);
        for usage in [
            &v["usage"],
            &v["message"]["usage"],
            &v["response"]["usage"],
            &v["amazon-bedrock-invocationMetrics"],
        ] {
            if usage.is_object() {
                self.merge(usage);
            }
        }
    }

    /// OpenAI's `service_tier` on a response (chat chunk, Responses object): what it billed at.
    fn service_tier(&mut self, tier: &Value) {
        if self.protocol != Protocol::OpenAi {
            return;
        }
        let tier = match tier.as_str() {
            Some("priority") => crate::billing::Tier::Priority,
            Some("flex") => crate::billing::Tier::Flex,
            Some(_) => crate::billing::Tier::Standard,
            None => return,
        };
        self.observed.billing.get_or_insert_default().tier = tier;
    }

    fn json_body(&mut self, v: &Value) {
        self.observed.text_bytes += body_text_len(v);
        self.service_tier(&v["service_tier"]);
        if v["usage"].is_object() {
            self.merge(&v["usage"]);
        }
    }

    /// Folds one usage object in; later values of a field replace earlier ones (Anthropic's
    /// `message_delta` counts are cumulative).
    fn merge(&mut self, u: &Value) {
        let get = |v: &Value| v.as_u64();
        let u_ref = &mut self.usage;
        match self.protocol {
            Protocol::Bedrock if u.get("input_tokens").is_none() && u.get("output_tokens").is_none() => {
                // Converse usage, or Bedrock's invocation metrics (both exclude cached input).
                let field = |a: &str, b: &str| get(&u[a]).or_else(|| get(&u[b]));
                if let Some(n) = field("inputTokens", "inputTokenCount") {
                    u_ref.input = n;
                }
                if let Some(n) = field("outputTokens", "outputTokenCount") {
                    u_ref.output = n;
                }
                if let Some(n) = field("cacheReadInputTokens", "cacheReadInputTokenCount") {
                    u_ref.cache_read = n;
                }
                if let Some(n) = field("cacheWriteInputTokens", "cacheWriteInputTokenCount") {
                    u_ref.cache_write = n;
                }
            }
            Protocol::Anthropic | Protocol::Bedrock => {
                if let Some(n) = get(&u["input_tokens"]) {
                    u_ref.input = n;
                }
                if let Some(n) = get(&u["output_tokens"]) {
                    u_ref.output = n;
                }
                if let Some(n) = get(&u["cache_read_input_tokens"]) {
                    u_ref.cache_read = n;
                }
                if let Some(n) = get(&u["cache_creation_input_tokens"]) {
                    u_ref.cache_write = n;
                }
                if let Some(n) = get(&u["cache_creation"]["ephemeral_1h_input_tokens"]) {
                    u_ref.cache_write_1h = n;
                }
                if let Some(n) = get(&u["server_tool_use"]["web_search_requests"]) {
                    u_ref.web_searches = n;
                }
                let text = |k: &str| u[k].as_str();
                if text("speed").is_some() || text("inference_geo").is_some() || text("service_tier").is_some() {
                    let b = self.observed.billing.get_or_insert_default();
                    b.fast |= text("speed") == Some("fast");
                    b.us_only |= text("inference_geo") == Some("us");
                    if text("service_tier") == Some("batch") {
                        b.tier = crate::billing::Tier::Batch;
                    }
                }
            }
            Protocol::OpenAi => {
                // Chat: prompt/completion; Responses: input/output. Both count cached input inside
                // the input total.
                let total_in = get(&u["prompt_tokens"]).or_else(|| get(&u["input_tokens"]));
                let cached = get(&u["prompt_tokens_details"]["cached_tokens"])
                    .or_else(|| get(&u["input_tokens_details"]["cached_tokens"]))
                    .unwrap_or(0);
                if let Some(t) = total_in {
                    u_ref.input = t.saturating_sub(cached);
                    u_ref.cache_read = cached;
                }
                if let Some(n) = get(&u["completion_tokens"]).or_else(|| get(&u["output_tokens"])) {
                    u_ref.output = n;
                }
            }
        }
        self.observed.reported = Some(self.usage);
    }
}

fn write_and_take<D: Write>(d: &mut D, chunk: &[u8], out: impl FnOnce(&mut D) -> &mut Vec<u8>) -> Option<Vec<u8>> {
    d.write_all(chunk).ok()?;
    d.flush().ok()?;
    Some(std::mem::take(out(d)))
}

/// Substring finders, built once (SIMD search; the tap runs on every frame of every stream).
struct Finders {
    usage: Finder<'static>,
    error: Finder<'static>,
    failed: Finder<'static>,
    metrics: Finder<'static>,
    delta_markers: [Finder<'static>; 3],
    text_keys: [Finder<'static>; 7],
}

static FINDERS: LazyLock<Finders> = LazyLock::new(|| Finders {
    usage: Finder::new(b"\"usage\""),
    error: Finder::new(b"\"error\""),
    failed: Finder::new(b"response.failed"),
    metrics: Finder::new(b"invocationMetrics"),
    delta_markers: [
        Finder::new(b"content_block_delta"),
        Finder::new(b".delta\""),
        Finder::new(b"chat.completion.chunk"),
    ],
    text_keys: [
        Finder::new(b"\"text\":\""),
        Finder::new(b"\"partial_json\":\""),
        Finder::new(b"\"thinking\":\""),
        Finder::new(b"\"delta\":\""),
        Finder::new(b"\"content\":\""),
        Finder::new(b"\"reasoning_content\":\""),
        Finder::new(b"\"arguments\":\""),
    ],
});

/// Whether the event carries something worth a full JSON parse: a usage object or an error.
fn needs_parse(data: &[u8]) -> bool {
    let f = &*FINDERS;
    f.usage.find_iter(data).any(|i| {
        let mut rest = data[i + 7..].iter().skip_while(|b| b.is_ascii_whitespace());
        rest.next() == Some(&b':') && rest.find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }) || f.error.find(data).is_some()
        || f.failed.find(data).is_some()
        || f.metrics.find(data).is_some()
}

/// How much of an oversized line's end is kept for its `usage` (a response object's usage, and
/// what follows it, fit in far less).
const TAIL: usize = 64 * 1024;

/// The last `"usage":{…}` object in `bytes` (the end of a JSON text cut at its start), parsed.
/// The key is found outside strings by construction: inside a JSON string its quotes would be
/// escaped.
fn last_usage_object(bytes: &[u8]) -> Option<Value> {
    const KEY: &[u8] = b"\"usage\":";
    let at = bytes.windows(KEY.len()).rposition(|w| w == KEY)?;
    let rest = &bytes[at + KEY.len()..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let object = &rest[start..];
    if object.first() != Some(&b'{') {
        return None;
    }
    // The matching brace, strings skipped.
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in object.iter().enumerate() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{') => depth += 1,
            (false, _, b'}') => {
                depth -= 1;
                if depth == 0 {
                    return serde_json::from_slice::<Value>(&object[..=i])
                        .ok()
                        .filter(Value::is_object);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first bytes of a line held partly in `buf` and partly in `rest`: the same whichever way the
/// reads cut it (only called for an oversized line, so longer than this).
fn line_head(buf: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut head = buf[..buf.len().min(HEAD)].to_vec();
    head.extend_from_slice(&rest[..rest.len().min(HEAD - head.len())]);
    head
}

const HEAD: usize = 256;

/// Whether an oversized SSE line starts like a text delta (`data: {"type":"content_block_delta"`,
/// an OpenAI chunk's `"delta"`, a Responses `output_text.delta`): only those count as generated
/// text when skipped — a partial image or a whole response object would over-bill an estimate.
fn looks_like_text(line: &[u8]) -> bool {
    let head = &line[..line.len().min(HEAD)];
    head.starts_with(b"data:") && head.windows(5).any(|w| w == b"delta") && !head.windows(5).any(|w| w == b"image")
}

/// Text bytes in a delta event, without parsing it: the raw (escaped) lengths of the string values
/// of the keys that carry generated text. Only delta events count, so `*.done` events that repeat
/// the whole text are not counted twice.
fn scan_delta_text_len(data: &[u8]) -> u64 {
    let f = &*FINDERS;
    if !f.delta_markers.iter().any(|m| m.find(data).is_some()) {
        return 0;
    }
    let mut n = 0u64;
    for key in &f.text_keys {
        let mut from = 0;
        while let Some(i) = key.find(&data[from..]) {
            let start = from + i + key.needle().len();
            let mut j = start;
            while let Some(k) = memchr::memchr2(b'"', b'\\', &data[j.min(data.len())..]) {
                j += k;
                if data[j] == b'"' {
                    break;
                }
                j += 2; // an escape: skip the escaped character
            }
            let end = j.min(data.len());
            n += end.saturating_sub(start) as u64;
            from = end.max(start);
            if from >= data.len() {
                break;
            }
        }
    }
    n
}

fn str_len(v: &Value) -> u64 {
    v.as_str().map(|s| s.len() as u64).unwrap_or(0)
}

/// Bytes of generated text in one SSE event of any family.
fn delta_text_len(v: &Value) -> u64 {
    let d = &v["delta"];
    // Anthropic content_block_delta; Responses *.delta events carry a string delta.
    let mut n = str_len(&d["text"]) + str_len(&d["partial_json"]) + str_len(&d["thinking"]);
    if v["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("response.") && t.ends_with(".delta"))
    {
        n += str_len(d);
    }
    // OpenAI chat chunks.
    if let Some(choices) = v["choices"].as_array() {
        for c in choices {
            n += str_len(&c["delta"]["content"]) + str_len(&c["delta"]["reasoning_content"]);
            if let Some(calls) = c["delta"]["tool_calls"].as_array() {
                n += calls.iter().map(|t| str_len(&t["function"]["arguments"])).sum::<u64>();
            }
        }
    }
    n
}

/// Bytes of generated text in a whole JSON response of any family.
fn body_text_len(v: &Value) -> u64 {
    let mut n = 0;
    if let Some(content) = v["content"].as_array() {
        for c in content {
            n += str_len(&c["text"]) + str_len(&c["thinking"]);
            if c["type"] == "tool_use" {
                n += c["input"].to_string().len() as u64;
            }
        }
    }
    if let Some(choices) = v["choices"].as_array() {
        for c in choices {
            n += str_len(&c["message"]["content"]);
        }
    }
    if let Some(output) = v["output"].as_array() {
        for item in output {
            n += str_len(&item["arguments"]);
            if let Some(parts) = item["content"].as_array() {
                n += parts.iter().map(|p| str_len(&p["text"])).sum::<u64>();
            }
        }
    }
    n
}

/// zstd: the decoder here is pull-based, so the compressed bytes are kept (bounded) and decoded once
/// when the body ends — the meter only needs the totals, which come at the end anyway.
struct ZstdBuffered {
    compressed: Vec<u8>,
}

impl ZstdBuffered {
    fn push(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        if self.compressed.len() + chunk.len() > MAX_JSON {
            return None;
        }
        self.compressed.extend_from_slice(chunk);
        Some(Vec::new())
    }

    fn finish(&mut self) -> Option<Vec<u8>> {
        use std::io::Read;
        let compressed = std::mem::take(&mut self.compressed);
        // Insurance: a third-party decoder must not take a connection down on hostile bytes.
        std::panic::catch_unwind(move || {
            let mut out = Vec::new();
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(compressed.as_slice()).ok()?;
            // One byte past the bound says the body was longer: not read whole, so not read.
            (&mut decoder)
                .take(4 * MAX_JSON as u64 + 1)
                .read_to_end(&mut out)
                .ok()?;
            (out.len() <= 4 * MAX_JSON).then_some(out)
        })
        .ok()
        .flatten()
    }
}
