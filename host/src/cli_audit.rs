//! `conduit audit verify | export`, `conduit rot`, `conduit sessions`: the audit log for security
//! reviews and the context-rot picture for finance and platform teams. Through a running gateway's
//! admin API when one answers (it syncs its writer first), else straight from the audit files.

use std::io::Write;

use clap::Subcommand;
use http::Method;

use conduit_audit::{self as audit, chain, export, rot};
use conduit_core::error::{Error, Result};
use conduit_gateway::config::Config;

/// `conduit audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-walk the hash chain; names the first record altered or removed (exit 1 if any).
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export records (metadata only) for a security review. Columns: docs/audit.md.
    Export {
        /// csv, json or jsonl (jsonl = the stored lines, re-verifiable).
        #[arg(long, default_value = "csv")]
        format: String,
        /// From this UTC date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Until this UTC date (inclusive) or time (exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Only this team.
        #[arg(long)]
        team: Option<String>,
        /// Only this key id.
        #[arg(long)]
        key: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", crate::cli_policy::url_segment(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Runs `conduit audit …`.
pub async fn audit(config: Config, cmd: AuditCommand) -> Result<()> {
    let client = crate::cli_policy::remote(&config).await?;
    let dir = config.audit.dir.clone();
    match cmd {
        AuditCommand::Verify { json } => {
            let v: serde_json::Value = match &client {
                Some(c) => c.call(Method::GET, "/v1/audit/verify", None).await?,
                None => {
                    let checkpoint = match conduit_gateway::gateway::open_state(&config).await {
                        Ok(state) => conduit_gateway::gateway::audit_checkpoint(&state, config.replica_id()).await?,
                        Err(e) => {
                            eprintln!(
                                "note: the store did not open ({e}); the chain is checked without the store's checkpoint"
                            );
                            None
                        }
                    };
                    serde_json::to_value(chain::verify_against(&dir, checkpoint.as_ref())?)?
                }
            };
            if json {
                println!("{v}");
            } else if v["ok"].as_bool() == Some(true) {
                println!(
                    "audit chain intact: {} records (seq {}–{}) in {} day files; head {}",
                    v["records"],
                    v["first_seq"]
                        .as_u64()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    v["last_seq"]
                        .as_u64()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    v["files"],
                    v["head_hash"].as_str().unwrap_or("-")
                );
                if let Some(seq) = v["checkpoint_seq"].as_u64() {
                    println!("and it matches the store's checkpoint at record {seq}");
                }
            }
            match v["problem"].as_str() {
                Some(p) => Err(Error::msg(format!(
                    "the audit log was tampered with: {p} (checked {} records before it)",
                    v["records"]
                ))),
                None => Ok(()),
            }
        }
        AuditCommand::Export {
            format,
            since,
            until,
            team,
            key,
            out,
        } => {
            let fmt = export::Format::parse(&format)?;
            let mut filter = audit::time_filter(since.as_deref(), until.as_deref(), None)?;
            let mut sink: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).map_err(|e| Error::msg(format!("creating {}: {e}", p.display())))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            match &client {
                Some(c) => {
                    let path = format!(
                        "/v1/audit/export{}",
                        query(&[
                            ("format", Some(&format)),
                            ("since", since.as_deref()),
                            ("until", until.as_deref()),
                            ("team", team.as_deref()),
                            ("key", key.as_deref()),
                        ])
                    );
                    c.stream_to(&path, &mut sink).await?;
                }
                None => {
                    filter.team = team;
                    filter.key = key;
                    let n = export::export(&dir, &filter, fmt, &mut sink)?;
                    if out.is_some() {
                        eprintln!("exported {n} records");
                    }
                }
            }
            Ok(())
        }
    }
}

/// Runs `conduit rot`.
pub async fn rot(config: Config, by: &str, since: Option<&str>, until: Option<&str>, format: &str) -> Result<()> {
    let by = rot::By::parse(by)?;
    let report: serde_json::Value = match crate::cli_policy::remote(&config).await? {
        Some(c) => {
            let by_s = serde_json::to_value(by)?.as_str().unwrap_or("model").to_string();
            let path = format!(
                "/v1/rot{}",
                query(&[("by", Some(&by_s)), ("since", since), ("until", until)])
            );
            c.call(Method::GET, &path, None).await?
        }
        None => audit::rot_report(&config.audit.dir, &audit::time_filter(since, until, Some(30))?, by)?,
    };
    match format {
        "json" => println!("{report}"),
        "table" => print_rot(&report),
        other => return Err(Error::msg(format!("--format {other:?}: expected table or json"))),
    }
    Ok(())
}

fn print_rot(report: &serde_json::Value) {
    let f = |v: &serde_json::Value, digits: usize| {
        v.as_f64()
            .map(|x| format!("{x:.digits$}"))
            .unwrap_or_else(|| "-".into())
    };
    let groups = report["groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        println!("no requests reached an upstream in this range");
        return;
    }
    for g in groups {
        println!("\n{} — {} requests", g["group"].as_str().unwrap_or("-"), g["requests"]);
        println!(
            "{:<9} {:>8} {:>7} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>8}",
            "CONTEXT",
            "REQS",
            "ERR%",
            "TTFB p50",
            "TTFB p95",
            "DUR p50",
            "DUR p95",
            "$/REQ",
            "$/1K OUT",
            "CACHE%",
            "COST×",
            "LAT GAP",
            "ERR GAP"
        );
        for b in g["buckets"].as_array().cloned().unwrap_or_default() {
            println!(
                "{:<9} {:>8} {:>7} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>8}",
                b["bucket"].as_str().unwrap_or("-"),
                b["requests"],
                b["error_rate"]
                    .as_f64()
                    .map(|x| format!("{:.2}", x * 100.0))
                    .unwrap_or_default(),
                f(&b["ttfb_p50_ms"], 1),
                f(&b["ttfb_p95_ms"], 1),
                f(&b["duration_p50_ms"], 1),
                f(&b["duration_p95_ms"], 1),
                f(&b["cost_per_request_usd"], 4),
                f(&b["cost_per_1k_output_usd"], 4),
                b["cache_read_share"]
                    .as_f64()
                    .map(|x| format!("{:.1}", x * 100.0))
                    .unwrap_or_default(),
                f(&b["cost_growth"], 2),
                f(&b["latency_gap"], 2),
                f(&b["error_gap"], 2),
            );
        }
    }
    println!(
        "\nGAP = growth of latency (p50) or error rate ÷ growth of cost per request, against the group's smallest bucket (docs/audit.md)."
    );
}

/// Runs `conduit sessions`.
pub async fn sessions(
    config: Config,
    since: Option<&str>,
    until: Option<&str>,
    limit: usize,
    format: &str,
) -> Result<()> {
    let report: serde_json::Value = match crate::cli_policy::remote(&config).await? {
        Some(c) => {
            let l = limit.to_string();
            let path = format!(
                "/v1/sessions{}",
                query(&[("since", since), ("until", until), ("limit", Some(&l))])
            );
            c.call(Method::GET, &path, None).await?
        }
        None => serde_json::to_value(audit::sessions_report(
            &config.audit.dir,
            &audit::time_filter(since, until, Some(30))?,
            limit,
        )?)?,
    };
    if format == "json" {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{} sessions; {} crossed 32K tokens of context (${:.4} spent from then on), {} crossed 100K (${:.4})",
        report["sessions"],
        report["crossed_32k"],
        report["cost_after_32k_usd"].as_f64().unwrap_or(0.0),
        report["crossed_100k"],
        report["cost_after_100k_usd"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<18} {:<14} {:<12} {:>6} {:>9} {:>10} {:>6} {:>10} {:>6} {:>10}",
        "SESSION", "KEY", "TEAM", "TURNS", "MAX CTX", "COST $", "@32K", "AFTER $", "@100K", "AFTER $"
    );
    for s in report["list"].as_array().cloned().unwrap_or_default() {
        let at = |v: &serde_json::Value| v.as_u64().map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<18} {:<14} {:<12} {:>6} {:>9} {:>10.4} {:>6} {:>10.4} {:>6} {:>10.4}",
            s["session"].as_str().unwrap_or("-"),
            s["key_id"].as_str().unwrap_or("-"),
            s["team"].as_str().unwrap_or("-"),
            s["turns"],
            s["max_context"],
            s["cost_usd"].as_f64().unwrap_or(0.0),
            at(&s["crossed_32k_at"]),
            s["cost_after_32k_usd"].as_f64().unwrap_or(0.0),
            at(&s["crossed_100k_at"]),
            s["cost_after_100k_usd"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
