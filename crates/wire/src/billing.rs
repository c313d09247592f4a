//! How a request is billed beyond its tokens: read from the request (`content`) and the response
//! (`usage`), priced by `prices`. A leaf, so those three need not import one another for it.

use serde::{Deserialize, Serialize};

/// How a request is billed beyond its tokens: the service tier, and Anthropic's multipliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Billing {
    /// Service tier.
    pub tier: Tier,
    /// Anthropic fast mode (`speed: "fast"`).
    pub fast: bool,
    /// Anthropic US-only inference (`inference_geo: "us"`).
    pub us_only: bool,
}

/// A provider service tier that changes the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Standard (on-demand) rates.
    #[default]
    Standard,
    /// OpenAI `service_tier: "priority"`.
    Priority,
    /// OpenAI `service_tier: "flex"`.
    Flex,
    /// Batch APIs (Anthropic message batches, OpenAI batches).
    Batch,
}
