//! Audit export for security reviews: CSV, a JSON array, or JSON lines, written record by record
//! (constant memory for any number of rows). Columns: docs/audit.md.
//!
//! `jsonl` is the stored lines byte for byte (with `seq` and `prev`), so an unfiltered export can be
//! re-verified outside Conduit; `json` is the same objects in one array; `csv` flattens them with
//! RFC 3339 times and dollar amounts, in the columns `fields::FIELDS` lists.

use std::io::Write;
use std::path::Path;

use super::AuditRecord;
use super::chain::{self, Filter};
use super::fields;
use conduit_core::error::{Error, Result};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, one header row.
    Csv,
    /// One JSON array.
    Json,
    /// One JSON object per line (the stored lines).
    Jsonl,
}

impl Format {
    /// Parses `csv|json|jsonl`.
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            other => Err(Error::msg(format!("--format {other:?}: expected csv, json or jsonl"))),
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Jsonl => "application/x-ndjson",
        }
    }
}

/// The CSV header line (no newline).
pub fn csv_header() -> String {
    fields::columns().map(|(name, _)| name).collect::<Vec<_>>().join(",")
}

/// Writes the records matching `filter` to `out`; returns how many.
pub fn export(dir: &Path, filter: &Filter, format: Format, out: &mut dyn Write) -> Result<u64> {
    let mut failed: Option<std::io::Error> = None;
    let mut first = true;
    let io = |e: std::io::Error| Error::msg(format!("writing the export: {e}"));
    match format {
        Format::Csv => {
            out.write_all(csv_header().as_bytes()).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
        }
        Format::Json => out.write_all(b"[").map_err(io)?,
        Format::Jsonl => {}
    }
    let mut row = String::with_capacity(1024);
    let n = chain::scan(dir, filter, |record, line| {
        let written = match format {
            Format::Jsonl => out.write_all(line).and_then(|()| out.write_all(b"\n")),
            Format::Json => {
                let sep: &[u8] = if first { b"\n" } else { b",\n" };
                out.write_all(sep).and_then(|()| out.write_all(line))
            }
            Format::Csv => {
                row.clear();
                csv_row(&record, &mut row);
                out.write_all(row.as_bytes())
            }
        };
        first = false;
        match written {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(io(e));
    }
    if format == Format::Json {
        out.write_all(if n == 0 { b"]\n" } else { b"\n]\n" }).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// RFC 3339 with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let base = conduit_core::clock::format_rfc3339(ms.div_euclid(1000));
    format!("{}.{:03}Z", &base[..base.len() - 1], ms.rem_euclid(1000))
}

fn csv_row(r: &AuditRecord, s: &mut String) {
    for (i, (_, field)) in fields::columns().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_csv_field(s, &(field.read)(r).to_csv());
    }
    s.push('\n');
}

/// RFC 4180 quoting; a leading `=`, `+`, `-`, `@` is prefixed with `'` so a spreadsheet never
/// evaluates a client-supplied value (a model name, a path) as a formula.
pub fn push_csv_field(s: &mut String, f: &str) {
    // A lone `-` (a report's "no value") is text to every spreadsheet; `-1` is a number.
    let formula =
        f.starts_with(['=', '+', '@', '\t', '\r']) || (f.starts_with('-') && f.len() > 1 && f.parse::<f64>().is_err());
    let needs_quotes = formula || f.contains([',', '"', '\n', '\r']);
    if !needs_quotes {
        s.push_str(f);
        return;
    }
    s.push('"');
    if formula {
        s.push('\'');
    }
    for c in f.chars() {
        if c == '"' {
            s.push('"');
        }
        s.push(c);
    }
    s.push('"');
}

/// Parses one CSV line written by this module back into fields (tests and round-trip checks).
pub fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_round_trips_and_defuses_formulas() {
        let mut s = String::new();
        for (i, f) in ["plain", "a,b", "say \"hi\"", "=HYPERLINK(1)", "-3", "-rf", ""]
            .iter()
            .enumerate()
        {
            if i > 0 {
                s.push(',');
            }
            push_csv_field(&mut s, f);
        }
        let back = parse_csv_line(&s);
        assert_eq!(back, ["plain", "a,b", "say \"hi\"", "'=HYPERLINK(1)", "-3", "'-rf", ""]);
        assert_eq!(rfc3339_ms(1_764_201_600_123), "2025-11-27T00:00:00.123Z");
    }
}
