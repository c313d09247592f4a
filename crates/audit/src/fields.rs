//! The audit record's fields, once: each names the record's JSON key it comes from, its CSV
//! column and its OTLP span attribute (either may be absent), and how to read it. The CSV export
//! (header and rows) and the OTLP span are both drawn from [`FIELDS`]; the JSON is the record's
//! own serialisation, and a test holds the two together (every JSON key has a field here and every
//! field a JSON key), so a new field is a struct field, one line here and its docs (docs/audit.md).
//!
//! What a sink shows is decided here, not in the sink: `owner` (a person) is not a span attribute,
//! and a span counts findings where the CSV lists them.

use super::{AuditFinding, AuditRecord};

/// One field's value, typed so each sink renders it its own way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Text that is always there.
    Text(&'a str),
    /// Text that may be absent (empty in CSV, no attribute in a span).
    Maybe(Option<&'a str>),
    /// A count or a code.
    Count(u64),
    /// Yes or no.
    Flag(bool),
    /// Unix milliseconds (RFC 3339 with milliseconds in CSV).
    Time(i64),
    /// A duration in milliseconds, if measured.
    Millis(Option<f64>),
    /// Micro-dollars, if priced (dollars in CSV and spans).
    Usd(Option<u64>),
    /// Policy findings (listed in CSV, counted in a span).
    Findings(&'a [AuditFinding]),
}

/// A field of the record and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The record's JSON key it is read from (`start_ms`; a derived field names its source).
    pub json: &'static str,
    /// Its CSV column, if exported as one.
    pub column: Option<&'static str>,
    /// Its OTLP span attribute, if sent as one (OpenTelemetry's names where one exists).
    pub attribute: Option<&'static str>,
    /// Reads it.
    pub read: for<'a> fn(&'a AuditRecord) -> Value<'a>,
}

const fn both(
    json: &'static str,
    column: &'static str,
    attribute: &'static str,
    read: for<'a> fn(&'a AuditRecord) -> Value<'a>,
) -> Field {
    Field {
        json,
        column: Some(column),
        attribute: Some(attribute),
        read,
    }
}

const fn column(json: &'static str, column: &'static str, read: for<'a> fn(&'a AuditRecord) -> Value<'a>) -> Field {
    Field {
        json,
        column: Some(column),
        attribute: None,
        read,
    }
}

/// Every field, in CSV column order (documented in docs/audit.md).
pub const FIELDS: &[Field] = &[
    column("seq", "seq", |r| Value::Count(r.seq)),
    both("request_id", "request_id", "conduit.request_id", |r| {
        Value::Text(&r.request_id)
    }),
    column("start_ms", "start", |r| Value::Time(r.start_ms)),
    column("end_ms", "end", |r| Value::Time(r.end_ms)),
    both("key_id", "key_id", "conduit.key_id", |r| {
        Value::Maybe(r.key_id.as_deref())
    }),
    column("owner", "owner", |r| Value::Maybe(r.owner.as_deref())),
    both("team", "team", "conduit.team", |r| Value::Maybe(r.team.as_deref())),
    both("client", "client", "conduit.client", |r| Value::Text(&r.client)),
    both("client_ip", "client_ip", "client.address", |r| {
        Value::Text(&r.client_ip)
    }),
    both("provider", "provider", "gen_ai.system", |r| {
        Value::Maybe(r.provider.as_deref())
    }),
    both("upstream", "upstream", "server.address", |r| {
        Value::Maybe(r.upstream.as_deref())
    }),
    both("method", "method", "http.request.method", |r| Value::Text(&r.method)),
    both("path", "path", "url.path", |r| Value::Text(&r.path)),
    column("treatment", "treatment", |r| Value::Text(&r.treatment)),
    both("model", "model", "gen_ai.request.model", |r| {
        Value::Maybe(r.model.as_deref())
    }),
    both("status", "status", "http.response.status_code", |r| {
        Value::Count(u64::from(r.status))
    }),
    both("outcome", "outcome", "conduit.outcome", |r| Value::Text(&r.outcome)),
    both("error_class", "error_class", "conduit.error_class", |r| {
        Value::Maybe(r.error_class.as_deref())
    }),
    both("stream", "stream", "conduit.stream", |r| Value::Flag(r.stream)),
    both("ttfb_ms", "ttfb_ms", "conduit.ttfb_ms", |r| Value::Millis(r.ttfb_ms)),
    column("duration_ms", "duration_ms", |r| Value::Millis(Some(r.duration_ms))),
    both("overhead_ms", "overhead_ms", "conduit.overhead_ms", |r| {
        Value::Millis(r.overhead_ms)
    }),
    column("policy_ms", "policy_ms", |r| Value::Millis(r.policy_ms)),
    column("bytes_in", "bytes_in", |r| Value::Count(r.bytes_in)),
    column("bytes_out", "bytes_out", |r| Value::Count(r.bytes_out)),
    column("input_tokens", "input_tokens", |r| Value::Count(r.input_tokens)),
    // GenAI's input tokens are the whole context: uncached, cache read and cache write.
    Field {
        json: "input_tokens",
        column: None,
        attribute: Some("gen_ai.usage.input_tokens"),
        read: |r| Value::Count(r.context_tokens()),
    },
    both("output_tokens", "output_tokens", "gen_ai.usage.output_tokens", |r| {
        Value::Count(r.output_tokens)
    }),
    both(
        "cache_read_tokens",
        "cache_read_tokens",
        "conduit.cache_read_tokens",
        |r| Value::Count(r.cache_read_tokens),
    ),
    column("cache_write_tokens", "cache_write_tokens", |r| {
        Value::Count(r.cache_write_tokens)
    }),
    both("cost_micros", "cost_usd", "conduit.cost_usd", |r| {
        Value::Usd(r.cost_micros)
    }),
    column("price", "price", |r| Value::Maybe(r.price.as_deref())),
    column("estimated", "estimated", |r| Value::Flag(r.estimated)),
    both("findings", "findings", "conduit.findings", |r| {
        Value::Findings(&r.findings)
    }),
    column("policy_set", "policy_set", |r| Value::Maybe(r.policy_set.as_deref())),
    both("session", "session", "conduit.session", |r| {
        Value::Maybe(r.session.as_deref())
    }),
    column("suppressed", "suppressed", |r| Value::Count(r.suppressed)),
    column("admin", "admin_actor", |r| {
        Value::Maybe(r.admin.as_ref().map(|a| a.actor.as_str()))
    }),
    column("admin", "admin_roles", |r| {
        Value::Maybe(r.admin.as_ref().map(|a| a.roles.as_str()))
    }),
    column("admin", "admin_action", |r| {
        Value::Maybe(r.admin.as_ref().map(|a| a.action.as_str()))
    }),
    column("admin", "admin_object", |r| {
        Value::Maybe(r.admin.as_ref().and_then(|a| a.object.as_deref()))
    }),
    column("admin", "admin_change", |r| {
        Value::Maybe(r.admin.as_ref().and_then(|a| a.change.as_deref()))
    }),
    column("prev", "prev", |r| Value::Text(&r.prev)),
];

/// The CSV columns, in order.
pub fn columns() -> impl Iterator<Item = (&'static str, &'static Field)> {
    FIELDS.iter().filter_map(|f| Some((f.column?, f)))
}

/// The OTLP span attributes, in order.
pub fn attributes() -> impl Iterator<Item = (&'static str, &'static Field)> {
    FIELDS.iter().filter_map(|f| Some((f.attribute?, f)))
}

impl Value<'_> {
    /// The CSV cell (before quoting): absent values are empty.
    pub fn to_csv(self) -> String {
        match self {
            Value::Text(s) => s.to_string(),
            Value::Maybe(s) => s.unwrap_or_default().to_string(),
            Value::Count(n) => n.to_string(),
            Value::Flag(b) => b.to_string(),
            Value::Time(ms) => super::export::rfc3339_ms(ms),
            Value::Millis(ms) => ms.map(|x| format!("{x:.3}")).unwrap_or_default(),
            Value::Usd(micros) => micros.map(conduit_core::money::usd).unwrap_or_default(),
            Value::Findings(all) => {
                let each = all
                    .iter()
                    .map(|f| format!("{}|{}|{}|{}", f.category, f.rule, f.mode, f.location));
                each.collect::<Vec<_>>().join(";")
            }
        }
    }

    /// The OTLP `AnyValue` (JSON mapping), or `None` when the value is absent.
    pub fn to_otlp(self) -> Option<serde_json::Value> {
        use serde_json::json;
        Some(match self {
            Value::Text(s) => json!({ "stringValue": s }),
            Value::Maybe(s) => json!({ "stringValue": s? }),
            Value::Count(n) => json!({ "intValue": n.to_string() }),
            Value::Flag(b) => json!({ "boolValue": b }),
            Value::Time(ms) => json!({ "intValue": ms.to_string() }),
            Value::Millis(ms) => json!({ "doubleValue": ms? }),
            Value::Usd(micros) => json!({ "doubleValue": micros? as f64 / 1e6 }),
            Value::Findings(all) => json!({ "intValue": all.len().to_string() }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every key the record serialises has a field, and every field reads a key that exists: a
    /// new struct field without a line here fails (the CSV and spans would silently miss it).
    #[test]
    fn every_json_key_has_a_field_and_every_field_a_key() {
        let full = AuditRecord {
            price: Some("listed".into()),
            suppressed: 3,
            admin: Some(Default::default()),
            ..AuditRecord::default()
        };
        let json = serde_json::to_value(&full).unwrap();
        let keys: BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let read: BTreeSet<&str> = FIELDS.iter().map(|f| f.json).collect();
        assert_eq!(keys, read, "AuditRecord's JSON keys and fields::FIELDS differ");
        let columns: Vec<&str> = columns().map(|(c, _)| c).collect();
        let unique: BTreeSet<&str> = columns.iter().copied().collect();
        assert_eq!(unique.len(), columns.len(), "a CSV column is listed twice");
        let attributes: Vec<&str> = attributes().map(|(a, _)| a).collect();
        let unique: BTreeSet<&str> = attributes.iter().copied().collect();
        assert_eq!(unique.len(), attributes.len(), "a span attribute is listed twice");
    }

    #[test]
    fn each_sink_renders_a_value_its_own_way() {
        assert_eq!(Value::Usd(Some(1_500_000)).to_csv(), "1.500000");
        assert_eq!(Value::Usd(Some(1_500_000)).to_otlp().unwrap()["doubleValue"], 1.5);
        assert_eq!(Value::Usd(None).to_csv(), "");
        assert_eq!(Value::Usd(None).to_otlp(), None);
        assert_eq!(Value::Maybe(None).to_otlp(), None);
        assert_eq!(Value::Millis(Some(1.25)).to_csv(), "1.250");
        let findings = [AuditFinding {
            category: "secret.aws".into(),
            rule: "aws".into(),
            mode: "alert".into(),
            location: "request".into(),
        }];
        assert_eq!(Value::Findings(&findings).to_csv(), "secret.aws|aws|alert|request");
        assert_eq!(Value::Findings(&findings).to_otlp().unwrap()["intValue"], "1");
    }
}
