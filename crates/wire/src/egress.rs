//! The egress rule's second half: what an operator may declare (`[egress]`), and which request
//! headers cross to a provider.
//!
//! **Passthroughs.** An endpoint Conduit does not understand is refused unless declared:
//! ```toml
//! [[egress.passthrough]]
//! family = "openai"                  # anthropic | openai | bedrock
//! methods = ["POST"]
//! path = "/v1/images/generations"    # canonical path; `{id}` matches one id segment
//! scan = "json"                      # json: every JSON string policed | text: the body as text | opaque
//! billable = true                    # then reserve_usd is required: its worst case per request
//! reserve_usd = "0.25"
//! ```
//! Each declared request is audited with its treatment (`passthrough:json`, …). A declaration may
//! not shadow an endpoint Conduit understands.
//!
//! **Headers.** Only a documented allow-list per family crosses ([`forwarded`]): the API's own
//! headers (`anthropic-version`, `anthropic-beta`, `openai-beta`, AWS SDK metadata), the SDKs'
//! `x-stainless-*` telemetry, the clients' session headers, content negotiation and
//! `user-agent`, plus what the operator adds (`[upstream.<family>] forward_headers`). Cookies,
//! `x-forwarded-*` / `forwarded` / `via`, other gateways' control headers (`x-litellm-*`,
//! `x-portkey-*`), `openai-organization` / `openai-project` (set by the operator instead) and
//! everything else are dropped, so no client header can steer the upstream or its account. The
//! forwarded values are policed like the body.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;

use crate::protocol::Protocol;
use conduit_core::error::{Error, Result};

/// `[egress]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    /// Binary parts of file uploads (images, PDFs): `refuse` (default: Conduit cannot scan them)
    /// or `forward` (forwarded unscanned, recorded as such in the audit log).
    pub binary_uploads: Option<String>,
    /// Declared passthroughs.
    #[serde(default)]
    pub passthrough: Vec<RawPassthrough>,
}

/// `[[egress.passthrough]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassthrough {
    /// `anthropic`, `openai` or `bedrock`.
    pub family: String,
    /// HTTP methods (default `["POST"]`).
    pub methods: Option<Vec<String>>,
    /// Canonical path; `{id}` matches one id segment.
    pub path: String,
    /// `json`, `text` or `opaque`.
    pub scan: String,
    /// Whether the provider bills it (default false).
    pub billable: Option<bool>,
    /// The worst case reserved per request (USD, a decimal string); required when billable.
    pub reserve_usd: Option<String>,
}

/// How a declared passthrough's body is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Parsed as JSON (strictly; refused if not JSON), every string policed.
    Json,
    /// Policed as text.
    Text,
    /// Not read: forwarded as is, recorded as opaque.
    Opaque,
}

impl Scan {
    /// The audit log's name for the treatment.
    pub fn treatment(self) -> &'static str {
        match self {
            Scan::Json => "passthrough:json",
            Scan::Text => "passthrough:text",
            Scan::Opaque => "passthrough:opaque",
        }
    }
}

/// A validated passthrough.
#[derive(Debug, Clone)]
pub struct Passthrough {
    /// Family.
    pub family: Protocol,
    /// Methods.
    pub methods: Vec<Method>,
    /// Canonical template.
    pub path: String,
    /// Treatment.
    pub scan: Scan,
    /// Billed by the provider.
    pub billable: bool,
    /// Worst case per request, micro-dollars (0 unless billable).
    pub reserve_micros: u64,
}

impl Passthrough {
    /// Whether `path` (canonical) and `method` match.
    pub fn matches(&self, family: Protocol, method: &Method, path: &str) -> bool {
        if self.family != family || !self.methods.contains(method) {
            return false;
        }
        let t: Vec<&str> = self.path.split('/').collect();
        let p: Vec<&str> = path.split('/').collect();
        t.len() == p.len()
            && t.iter().zip(&p).all(|(t, p)| {
                if *t == "{id}" {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
                } else {
                    t == p
                }
            })
    }
}

/// Validated `[egress]`.
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    /// Forward binary upload parts unscanned.
    pub forward_binary_uploads: bool,
    /// Declared passthroughs.
    pub passthrough: Vec<Passthrough>,
}

impl RawEgress {
    /// Validates every declaration.
    pub fn validate(self) -> Result<EgressConfig> {
        let forward_binary_uploads = match self.binary_uploads.as_deref() {
            None | Some("refuse") => false,
            Some("forward") => true,
            Some(other) => {
                return Err(Error::msg(format!(
                    "[egress].binary_uploads is {other:?}; expected \"refuse\" (default) or \"forward\""
                )));
            }
        };
        let mut passthrough = Vec::new();
        for (i, p) in self.passthrough.into_iter().enumerate() {
            let at = format!("[[egress.passthrough]] #{} ({:?})", i + 1, p.path);
            let family = Protocol::parse(&p.family).ok_or_else(|| {
                Error::msg(format!(
                    "{at}: family {:?} is not one of anthropic, openai, bedrock",
                    p.family
                ))
            })?;
            let path = crate::endpoint::canonical(&p.path)
                .map_err(|e| Error::msg(format!("{at}: {}", e.0)))?
                .replace("%7Bid%7D", "{id}");
            if path != p.path {
                return Err(Error::msg(format!("{at}: write the path in canonical form, {path:?}")));
            }
            let methods = p
                .methods
                .unwrap_or_else(|| vec!["POST".into()])
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| Error::msg(format!("{at}: {m:?} is not an HTTP method")))
                })
                .collect::<Result<Vec<_>>>()?;
            let probe = path.replace("{id}", "x1");
            for m in &methods {
                if crate::endpoint::lookup(m, &probe, Some(family)).is_ok() {
                    return Err(Error::msg(format!(
                        "{at}: {m} {path} is an endpoint Conduit understands and polices; it cannot be declared a passthrough"
                    )));
                }
            }
            let scan = match p.scan.as_str() {
                "json" => Scan::Json,
                "text" => Scan::Text,
                "opaque" => Scan::Opaque,
                other => {
                    return Err(Error::msg(format!(
                        "{at}: scan = {other:?}; expected \"json\" (every JSON string policed), \"text\" or \"opaque\" (forwarded unread, recorded as such)"
                    )));
                }
            };
            let billable = p.billable.unwrap_or(false);
            let reserve_micros = match (&p.reserve_usd, billable) {
                (Some(v), true) => conduit_core::money::parse_usd(&format!("{at}: reserve_usd"), v)?,
                (None, true) => {
                    return Err(Error::msg(format!(
                        "{at}: billable = true needs reserve_usd, the most one request can cost (budgets reserve it)"
                    )));
                }
                (Some(_), false) => {
                    return Err(Error::msg(format!(
                        "{at}: reserve_usd applies only with billable = true"
                    )));
                }
                (None, false) => 0,
            };
            passthrough.push(Passthrough {
                family,
                methods,
                path,
                scan,
                billable,
                reserve_micros,
            });
        }
        Ok(EgressConfig {
            forward_binary_uploads,
            passthrough,
        })
    }
}

/// Request headers every family forwards.
const COMMON: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-type",
    "user-agent",
    "idempotency-key",
];
const ANTHROPIC: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-claude-code-session-id",
    "x-app",
];
const OPENAI: &[&str] = &[
    "openai-beta",
    "originator",
    "session_id",
    "session-id",
    "thread-id",
    "conversation_id",
    "x-client-request-id",
    "x-ms-client-request-id",
];
const BEDROCK: &[&str] = &["x-amz-user-agent", "amz-sdk-invocation-id", "amz-sdk-request"];

/// Whether a client's request header crosses to a provider of `family` (module docs).
pub fn forwarded(family: Protocol, name: &HeaderName, extra: &[HeaderName]) -> bool {
    let n = name.as_str();
    if COMMON.contains(&n) || n.starts_with("x-stainless-") || extra.contains(name) {
        return true;
    }
    match family {
        Protocol::Anthropic => ANTHROPIC.contains(&n),
        Protocol::OpenAi => OPENAI.contains(&n) || n.starts_with("x-codex-"),
        Protocol::Bedrock => BEDROCK.contains(&n) || n.starts_with("x-amzn-bedrock-"),
    }
}

/// Headers that may never be added to the allow-list (they carry credentials, routing or
/// framing, or are set by Conduit).
pub fn never_forwarded(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host"
            | "authorization"
            | "proxy-authorization"
            | "x-api-key"
            | "api-key"
            | "cookie"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "te"
            | "trailer"
            | "forwarded"
            | "via"
            | "openai-organization"
            | "openai-project"
            | "x-amz-date"
            | "x-amz-security-token"
            | "x-amz-content-sha256"
    ) || n.starts_with("x-forwarded-")
        || n.starts_with("x-portkey-")
        || n.starts_with("x-litellm-")
        || n.starts_with("x-conduit-")
}

/// The request headers that go upstream: the allow-listed ones, in order, repeats kept; then the
/// operator's fixed headers (`openai-organization`, `openai-project`).
pub fn outgoing(
    family: Protocol,
    from: &HeaderMap,
    extra: &[HeaderName],
    fixed: &[(HeaderName, HeaderValue)],
) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len() + fixed.len());
    for (name, value) in from {
        if forwarded(family, name, extra) {
            out.append(name.clone(), value.clone());
        }
    }
    for (name, value) in fixed {
        out.insert(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_crosses() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "a"),
            ("x-stainless-lang", "js"),
            ("cookie", "session=1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-litellm-api-key", "sk-1234"),
            ("x-portkey-custom-host", "https://evil.example"),
            ("openai-organization", "org-other"),
            ("x-custom", "c"),
            ("traceparent", "00-abc-def-01"),
            ("host", "conduit"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = outgoing(Protocol::Anthropic, &h, &[], &[]);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["anthropic-version", "anthropic-beta", "x-stainless-lang"]);
        let extra = [HeaderName::from_static("x-custom")];
        let fixed = [(
            HeaderName::from_static("openai-organization"),
            HeaderValue::from_static("org-ours"),
        )];
        let out = outgoing(Protocol::OpenAi, &h, &extra, &fixed);
        assert_eq!(out.get("openai-organization").unwrap(), "org-ours");
        assert!(out.contains_key("x-custom") && !out.contains_key("anthropic-version"));
        assert!(never_forwarded("X-Forwarded-Host") && never_forwarded("cookie") && !never_forwarded("x-custom"));
    }

    #[test]
    fn passthroughs_are_validated() {
        let raw = |path: &str, scan: &str, billable: Option<bool>, reserve: Option<&str>| RawEgress {
            binary_uploads: None,
            passthrough: vec![RawPassthrough {
                family: "openai".into(),
                methods: None,
                path: path.into(),
                scan: scan.into(),
                billable,
                reserve_usd: reserve.map(str::to_string),
            }],
        };
        let ok = raw("/v1/images/generations", "json", Some(true), Some("0.25"))
            .validate()
            .unwrap();
        assert_eq!(ok.passthrough[0].reserve_micros, 250_000);
        assert!(ok.passthrough[0].matches(Protocol::OpenAi, &Method::POST, "/v1/images/generations"));
        assert!(!ok.passthrough[0].matches(Protocol::Anthropic, &Method::POST, "/v1/images/generations"));
        let with_id = raw("/v1/vector_stores/{id}/files", "opaque", None, None)
            .validate()
            .unwrap();
        assert!(with_id.passthrough[0].matches(Protocol::OpenAi, &Method::POST, "/v1/vector_stores/vs_1/files"));
        for (bad, why) in [
            (raw("/v1/chat/completions", "opaque", None, None), "understands"),
            (raw("/v1//x", "json", None, None), "ambiguous"),
            (raw("/v1/x", "everything", None, None), "scan"),
            (raw("/v1/x", "json", Some(true), None), "reserve_usd"),
            (raw("/v1/x", "json", None, Some("1")), "billable"),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
