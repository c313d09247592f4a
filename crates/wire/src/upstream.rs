//! Where each family's requests go: `[upstream.anthropic|openai|bedrock]` and their environment
//! overrides, validated into one [`Upstream`] per family — base URL, the [`Provider`] that answers,
//! how the credential is attached, the headers an operator lets through, and the provider settings
//! that shape the wire (Azure deployments, Bedrock region and translation).
//!
//! The HTTP client that reaches them is the gateway's (`conduit_gateway::upstream`); this module
//! only decides *what* is reached.

use std::collections::HashMap;

use serde::Deserialize;

use crate::protocol::{AuthStyle, Protocol, Provider};
use conduit_core::error::{Error, Result};

/// `[upstream.<family>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL; a path prefix is kept (env `UPSTREAM_ANTHROPIC_URL` / `UPSTREAM_OPENAI_URL` /
    /// `UPSTREAM_BEDROCK_URL`).
    pub url: Option<String>,
    /// Header for the real credential: `x-api-key`, `bearer`, `api-key`, `portkey-config` or `sigv4`.
    pub auth: Option<AuthStyle>,
    /// `[upstream.openai]`: `azure` for Azure OpenAI (also inferred from an `*.openai.azure.com` /
    /// `*.cognitiveservices.azure.com` URL; env `CONDUIT_OPENAI_PROVIDER`).
    /// `[upstream.anthropic]`: `bedrock` sends Anthropic-API clients to Bedrock (env
    /// `CONDUIT_ANTHROPIC_PROVIDER`; see `crate::bedrock`).
    pub provider: Option<String>,
    /// Azure: `api-version` query parameter for the deployments form (env
    /// `CONDUIT_AZURE_API_VERSION`; default `2024-10-21`).
    pub api_version: Option<String>,
    /// Azure: model name → deployment name, for clients that send OpenAI model names. A model
    /// not listed is used as the deployment name.
    #[serde(default)]
    pub deployments: HashMap<String, String>,
    /// Bedrock: AWS region (env `CONDUIT_BEDROCK_REGION`, else `AWS_REGION`; default `us-east-1`).
    pub region: Option<String>,
    /// Bedrock: control-plane base URL for `/inference-profiles` and `/foundation-models` (env
    /// `UPSTREAM_BEDROCK_CONTROL_URL`; default `https://bedrock.<region>.amazonaws.com`, or the
    /// runtime URL when that was set to a non-AWS host such as a proxy or a mock).
    pub control_url: Option<String>,
    /// Bedrock, for Anthropic-API clients: model name → Bedrock model id or inference profile.
    #[serde(default)]
    pub models: HashMap<String, String>,
    /// Bedrock, for Anthropic-API clients: profile prefix for the built-in model table (`us`,
    /// `eu`, `apac`, `jp`, `au`, `global`, or `none` for base model ids; default from the region).
    pub inference_profile: Option<String>,
    /// Bedrock, for Anthropic-API clients: `anthropic-beta` values passed on as `anthropic_beta`
    /// (default: the betas Bedrock documents; others are dropped).
    pub betas: Option<Vec<String>>,
    /// Request headers forwarded beside the built-in allow-list (`crate::egress`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// OpenAI: the `openai-organization` to bill (clients' own values are always dropped).
    pub organization: Option<String>,
    /// OpenAI: the `openai-project` to bill.
    pub project: Option<String>,
}

/// A configured upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Family (what clients speak to it).
    pub protocol: Protocol,
    /// Who answers: the provider prices, the ledger and the sealed credential are keyed by.
    pub provider: Provider,
    /// Azure OpenAI settings, when `provider` is `azure`.
    pub azure: Option<Azure>,
    /// Bedrock settings, when `protocol` is Bedrock.
    pub bedrock: Option<Bedrock>,
    /// `https` or `http`.
    pub scheme: http::uri::Scheme,
    /// `host[:port]`.
    pub authority: http::uri::Authority,
    /// Path prefix without trailing slash (`""` or `/proxy`).
    pub path_prefix: String,
    /// Credential header style.
    pub auth: AuthStyle,
    /// Extra request headers the operator lets through.
    pub forward_headers: Vec<http::HeaderName>,
    /// Headers Conduit sets on every request (`openai-organization`, `openai-project`).
    pub fixed_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Upstream {
    /// The base URL as configured (for logs and docs; carries no secret).
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path_prefix)
    }
}

/// Azure OpenAI settings of the OpenAI upstream.
#[derive(Debug, Clone)]
pub struct Azure {
    /// `api-version` for the deployments form.
    pub api_version: String,
    /// Model name → deployment name.
    pub deployments: HashMap<String, String>,
}

impl Azure {
    /// The deployment a model is served by.
    pub fn deployment<'a>(&'a self, model: &'a str) -> &'a str {
        self.deployments.get(model).map(String::as_str).unwrap_or(model)
    }
}

/// Bedrock settings.
#[derive(Debug, Clone)]
pub struct Bedrock {
    /// AWS region signed for.
    pub region: String,
    /// Control plane (`/inference-profiles`, `/foundation-models`): scheme, authority, prefix.
    pub control: Box<Upstream>,
    /// How Anthropic-API requests are translated when the Anthropic upstream is Bedrock.
    pub translation: crate::bedrock::Translation,
}

/// One upstream per family.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Anthropic upstream.
    pub anthropic: Upstream,
    /// OpenAI upstream (OpenAI, Azure OpenAI, or a proxy speaking OpenAI).
    pub openai: Upstream,
    /// Bedrock runtime upstream.
    pub bedrock: Upstream,
}

impl Upstreams {
    /// The upstream of a family.
    pub fn get(&self, p: Protocol) -> &Upstream {
        match p {
            Protocol::Anthropic => &self.anthropic,
            Protocol::OpenAi => &self.openai,
            Protocol::Bedrock => &self.bedrock,
        }
    }
}

/// The three upstreams from `[upstream.*]` and the environment.
pub fn build_upstreams(
    mut raw: HashMap<String, RawUpstream>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstreams> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(name) = raw.keys().find(|k| Protocol::parse(k).is_none()) {
        return Err(Error::msg(format!(
            "[upstream.{name}] is not a known provider; expected one of: anthropic, openai, bedrock (Azure OpenAI is [upstream.openai] with an Azure URL)"
        )));
    }
    let mut take = |p: Protocol| raw.remove(p.as_str()).unwrap_or_default();

    let a = take(Protocol::Anthropic);
    let o = take(Protocol::OpenAi);
    let b = take(Protocol::Bedrock);
    for (table, t) in [("anthropic", &a), ("bedrock", &b)] {
        if t.organization.is_some() || t.project.is_some() {
            return Err(Error::msg(format!(
                "[upstream.{table}] sets organization or project, which only OpenAI takes ([upstream.openai])"
            )));
        }
    }
    let headers = [
        header_settings("anthropic", &a.forward_headers, None, None)?,
        header_settings(
            "openai",
            &o.forward_headers,
            o.organization.as_deref(),
            o.project.as_deref(),
        )?,
        header_settings("bedrock", &b.forward_headers, None, None)?,
    ];
    let anthropic_via_bedrock = match var("CONDUIT_ANTHROPIC_PROVIDER")
        .or(a.provider.clone())
        .map(|p| p.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("anthropic") => false,
        Some("bedrock") => true,
        Some(other) => {
            return Err(Error::msg(format!(
                "[upstream.anthropic].provider (CONDUIT_ANTHROPIC_PROVIDER) is {other:?}; expected \"anthropic\" or \"bedrock\""
            )));
        }
    };
    let url = var("UPSTREAM_ANTHROPIC_URL")
        .or(a.url)
        .unwrap_or_else(|| Protocol::Anthropic.default_upstream().into());
    let mut anthropic = parse_upstream(Protocol::Anthropic, &url, a.auth.unwrap_or(AuthStyle::XApiKey))?;

    let url = var("UPSTREAM_OPENAI_URL")
        .or(o.url)
        .unwrap_or_else(|| Protocol::OpenAi.default_upstream().into());
    let mut openai = parse_upstream(Protocol::OpenAi, &url, AuthStyle::Bearer)?;
    let host = openai.authority.host().to_ascii_lowercase();
    let provider = var("CONDUIT_OPENAI_PROVIDER")
        .or(o.provider)
        .map(|p| p.trim().to_ascii_lowercase());
    let is_azure = match provider.as_deref() {
        Some("azure") => true,
        Some("openai") => false,
        Some(other) => {
            return Err(Error::msg(format!(
                "[upstream.openai].provider (CONDUIT_OPENAI_PROVIDER) is {other:?}; expected \"openai\" or \"azure\""
            )));
        }
        None => host.ends_with(".openai.azure.com") || host.ends_with(".cognitiveservices.azure.com"),
    };
    if is_azure {
        let api_version = var("CONDUIT_AZURE_API_VERSION")
            .or(o.api_version)
            .unwrap_or_else(|| "2024-10-21".into());
        if api_version.is_empty() || !api_version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::msg(format!(
                "[upstream.openai].api_version (CONDUIT_AZURE_API_VERSION) is {api_version:?}; expected an Azure api-version such as \"2024-10-21\""
            )));
        }
        for (model, deployment) in &o.deployments {
            if deployment.is_empty()
                || deployment.contains(['/', '?', '#', '%'])
                || deployment.contains(char::is_whitespace)
            {
                return Err(Error::msg(format!(
                    "[upstream.openai.deployments] {model:?} = {deployment:?} is not a deployment name; expected letters, digits, '-', '_' or '.'"
                )));
            }
        }
        openai.provider = Provider::Azure;
        openai.auth = o.auth.unwrap_or(AuthStyle::ApiKey);
        openai.azure = Some(Azure {
            api_version,
            deployments: o.deployments,
        });
    } else {
        if !o.deployments.is_empty() || o.api_version.is_some() {
            return Err(Error::msg(
                "[upstream.openai] sets deployments or api_version, which only apply to Azure OpenAI; set provider = \"azure\" (or use the resource's *.openai.azure.com URL)",
            ));
        }
        openai.auth = o.auth.unwrap_or(AuthStyle::Bearer);
    }

    let region = var("CONDUIT_BEDROCK_REGION")
        .or(b.region)
        .or_else(|| var("AWS_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    if region.is_empty()
        || !region
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(Error::msg(format!(
            "[upstream.bedrock].region (CONDUIT_BEDROCK_REGION / AWS_REGION) is {region:?}; expected an AWS region such as \"us-east-1\""
        )));
    }
    let runtime_url = var("UPSTREAM_BEDROCK_URL").or(b.url);
    let control_url = var("UPSTREAM_BEDROCK_CONTROL_URL")
        .or(b.control_url)
        .unwrap_or_else(|| match &runtime_url {
            // A private endpoint, proxy or mock stands in for both planes unless told otherwise.
            Some(u) if !u.contains(".amazonaws.com") => u.clone(),
            _ => format!("https://bedrock.{region}.amazonaws.com"),
        });
    let runtime_url = runtime_url.unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
    let auth = b.auth.unwrap_or(AuthStyle::Sigv4);
    if auth != AuthStyle::Sigv4 && auth != AuthStyle::Bearer {
        return Err(Error::msg(
            "[upstream.bedrock].auth must be \"sigv4\" (the sealed credential decides: an access key pair signs, a Bedrock API key is sent as a bearer token)",
        ));
    }
    let mut control = parse_upstream(Protocol::Bedrock, &control_url, auth)
        .map_err(|e| e.context("UPSTREAM_BEDROCK_CONTROL_URL / [upstream.bedrock].control_url"))?;
    control.provider = Provider::Bedrock;
    let profile = match b.inference_profile.map(|p| p.trim().to_ascii_lowercase()) {
        Some(p) if p == "none" => None,
        Some(p) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase() || c == b'-') => Some(p),
        Some(p) => {
            return Err(Error::msg(format!(
                "[upstream.bedrock].inference_profile is {p:?}; expected a profile prefix such as \"us\", \"eu\", \"apac\", \"global\", or \"none\""
            )));
        }
        None => crate::bedrock::Translation::profile_for_region(&region),
    };
    let translation = crate::bedrock::Translation {
        models: b.models,
        profile,
        betas: b
            .betas
            .unwrap_or_else(|| crate::bedrock::DEFAULT_BETAS.iter().map(|s| s.to_string()).collect()),
    };
    let mut bedrock = parse_upstream(Protocol::Bedrock, &runtime_url, auth)?;
    bedrock.provider = Provider::Bedrock;
    bedrock.bedrock = Some(Bedrock {
        region,
        control: Box::new(control),
        translation,
    });
    if anthropic_via_bedrock {
        // Anthropic-API clients, answered by Bedrock: the runtime URL and its signing, the
        // Anthropic family's shapes towards the client.
        anthropic = Upstream {
            protocol: Protocol::Anthropic,
            ..bedrock.clone()
        };
    }
    let [a_h, o_h, b_h] = headers;
    (anthropic.forward_headers, anthropic.fixed_headers) = a_h;
    (openai.forward_headers, openai.fixed_headers) = o_h;
    if let Some(bd) = bedrock.bedrock.as_mut() {
        (bd.control.forward_headers, bd.control.fixed_headers) = b_h.clone();
    }
    (bedrock.forward_headers, bedrock.fixed_headers) = b_h;
    Ok(Upstreams {
        anthropic,
        openai,
        bedrock,
    })
}

/// Parses an upstream base URL: `http(s)://host[:port][/prefix]`, no query or fragment.
pub fn parse_upstream(p: Protocol, url: &str, auth: AuthStyle) -> Result<Upstream> {
    let bad = |why: &str| {
        Error::msg(format!(
            "{} / [upstream.{}].url is {url:?}: {why}; expected e.g. {:?} or \"http://litellm:4000\"",
            p.upstream_env(),
            p.as_str(),
            p.default_upstream()
        ))
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("not a valid URL"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| bad("missing http:// or https://"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("missing a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials in the URL are not supported; set them with `conduit credentials set`",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed in a base URL"));
    }
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    Ok(Upstream {
        protocol: p,
        provider: Provider::native(p),
        azure: None,
        bedrock: None,
        scheme,
        authority,
        path_prefix,
        auth,
        forward_headers: Vec::new(),
        fixed_headers: Vec::new(),
    })
}

/// Extra forwarded header names, and headers set on every request.
type HeaderSettings = (Vec<http::HeaderName>, Vec<(http::HeaderName, http::HeaderValue)>);

/// `forward_headers`, `organization` and `project` of an `[upstream.*]` table.
fn header_settings(
    table: &str,
    forward: &[String],
    organization: Option<&str>,
    project: Option<&str>,
) -> Result<HeaderSettings> {
    let mut names = Vec::new();
    for h in forward {
        let name = http::HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
            Error::msg(format!(
                "[upstream.{table}].forward_headers: {h:?} is not a header name"
            ))
        })?;
        if crate::egress::never_forwarded(name.as_str()) {
            return Err(Error::msg(format!(
                "[upstream.{table}].forward_headers: {h:?} carries credentials, routing or framing and is never forwarded from clients"
            )));
        }
        names.push(name);
    }
    let mut fixed = Vec::new();
    for (header, value) in [("openai-organization", organization), ("openai-project", project)] {
        if let Some(v) = value {
            let value = http::HeaderValue::from_str(v.trim())
                .map_err(|_| Error::msg(format!("[upstream.{table}]: {header} {v:?} is not a header value")))?;
            fixed.push((http::HeaderName::from_static(header), value));
        }
    }
    Ok((names, fixed))
}
