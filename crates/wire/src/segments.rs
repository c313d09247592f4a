//! Segments: the decoded text a request sends out, each with where it sits — its JSON path
//! (`messages[3].content[0].text`) and its [`Origin`] (prompt, tool definition, metadata, header…).
//! JSON escapes are resolved, so a PEM key inside a JSON string reaches the policies as a PEM key.
//!
//! What becomes a segment is decided by `crate::content` (one strict parse of the body: every
//! string unless the API defines its position as structure) and by the `scan` stage (the query
//! string and the request headers that will be forwarded).

use std::borrow::Cow;

/// Where in a request a piece of text comes from. Operators can give findings in one origin
/// their own mode (`"secret.*@metadata" = "alert"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The conversation: messages, Responses input, legacy prompts.
    Prompt,
    /// System prompts and instructions.
    System,
    /// Tool definitions and their schemas (shipped by the client).
    ToolDefinition,
    /// Tool calls' inputs and arguments.
    ToolInput,
    /// Tool results.
    ToolResult,
    /// `metadata`, `user` and other attribution fields.
    Metadata,
    /// MCP server configurations (URLs, authorization tokens).
    Mcp,
    /// A forwarded request header.
    Header,
    /// The request path (ids, model ids, deployment names in it).
    Path,
    /// The query string.
    Query,
    /// An uploaded file.
    File,
    /// Any other field.
    Field,
}

impl Origin {
    /// Every origin, for validation and docs.
    pub const ALL: [Origin; 12] = [
        Origin::Prompt,
        Origin::System,
        Origin::ToolDefinition,
        Origin::ToolInput,
        Origin::ToolResult,
        Origin::Metadata,
        Origin::Mcp,
        Origin::Header,
        Origin::Path,
        Origin::Query,
        Origin::File,
        Origin::Field,
    ];

    /// The name used in mode keys, findings and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Prompt => "prompt",
            Origin::System => "system",
            Origin::ToolDefinition => "tool-definition",
            Origin::ToolInput => "tool-input",
            Origin::ToolResult => "tool-result",
            Origin::Metadata => "metadata",
            Origin::Mcp => "mcp",
            Origin::Header => "header",
            Origin::Path => "path",
            Origin::Query => "query",
            Origin::File => "file",
            Origin::Field => "field",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One piece of outgoing text.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment<'a> {
    /// JSON path (or `header.<name>`, `query.<name>`, `file.<part>`).
    pub path: String,
    /// Decoded text (borrowed from the body when it needed no decoding).
    pub text: Cow<'a, str>,
    /// Where it comes from.
    pub origin: Origin,
}

impl<'a> Segment<'a> {
    /// A prompt segment (tests, examples, the CLI's `policy test`).
    pub fn new(path: impl Into<String>, text: impl Into<Cow<'a, str>>) -> Segment<'a> {
        Segment {
            path: path.into(),
            text: text.into(),
            origin: Origin::Prompt,
        }
    }
}
