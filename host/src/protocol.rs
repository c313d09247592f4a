//! The provider API families Conduit speaks, and what differs between them at the edge:
//! how a client authenticates, how the real credential is attached, and the error shape.
//!
//! Everything protocol-specific that the request stages need goes through [`Protocol`], so that a
//! new family (Bedrock, Azure) is one more variant here rather than `if` chains across stages.

use std::fmt;

/// An API family, decided per request by the `route` stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Anthropic Messages API (`/v1/messages`, `x-api-key`, `anthropic-version`).
    Anthropic,
    /// OpenAI API (`/v1/chat/completions`, `/v1/responses`, `Authorization: Bearer`).
    OpenAi,
}

impl Protocol {
    /// All families, in a stable order (config keys, listings).
    pub const ALL: [Protocol; 2] = [Protocol::Anthropic, Protocol::OpenAi];

    /// The lowercase name used in config, CLI arguments, logs and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Anthropic => "anthropic",
            Protocol::OpenAi => "openai",
        }
    }

    /// Parses a provider name as typed by an operator.
    pub fn parse(name: &str) -> Option<Protocol> {
        match name.to_ascii_lowercase().as_str() {
            "anthropic" => Some(Protocol::Anthropic),
            "openai" => Some(Protocol::OpenAi),
            _ => None,
        }
    }

    /// The public API the family talks to when no upstream is configured.
    pub fn default_upstream(self) -> &'static str {
        match self {
            Protocol::Anthropic => "https://api.anthropic.com",
            Protocol::OpenAi => "https://api.openai.com",
        }
    }

    /// The environment variable that overrides the upstream base URL.
    pub fn upstream_env(self) -> &'static str {
        match self {
            Protocol::Anthropic => "UPSTREAM_ANTHROPIC_URL",
            Protocol::OpenAi => "UPSTREAM_OPENAI_URL",
        }
    }

    /// How the real credential is presented upstream unless the operator overrides it.
    pub fn default_auth_style(self) -> AuthStyle {
        match self {
            Protocol::Anthropic => AuthStyle::XApiKey,
            Protocol::OpenAi => AuthStyle::Bearer,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which header carries the real provider credential on the way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    /// `x-api-key: <secret>` (Anthropic API keys).
    XApiKey,
    /// `Authorization: Bearer <secret>` (OpenAI, LiteLLM, most proxies).
    Bearer,
    /// `api-key: <secret>` (Azure OpenAI).
    ApiKey,
}
