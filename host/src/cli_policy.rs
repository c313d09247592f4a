//! `conduit policy …` and `conduit findings …`: list the loaded policies and their modes, change a
//! mode, test policies on a text or a request body, manage signing keys, and give feedback on
//! findings. Like the other operator commands, they go through a running gateway's admin API
//! when one answers, else straight to the store.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use http::Method;
use serde_json::json;

use crate::admin_client::AdminClient;
use conduit_core::error::{Error, Result};
use conduit_gateway::config::Config;
use conduit_policy::runtime::RequestInfo;
use conduit_policy::segments::Segment;
use conduit_policy::{Policies, signature};
use conduit_state::State;
use conduit_state::records::FindingRecord;

/// `conduit policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The loaded policies (source, signer, state, why refused) and the mode table.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a category's mode at run time (persisted): `conduit policy mode 'secret.*' block`.
    Mode {
        /// A category (`secret.aws-access-key`), a prefix (`secret.*`) or `*`.
        category: String,
        /// off, alert or block.
        mode: String,
    },
    /// Run policies on a text or a provider request body and print the findings as JSON.
    Test {
        /// The built-in policies (secrets, entities, models).
        #[arg(long, conflicts_with = "policies", required_unless_present = "policies")]
        builtin: bool,
        /// The policies in this directory (signatures are reported, not required).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// A Conduit config file whose [policies] section (modes, built-in settings) applies.
        #[arg(long = "policy-config")]
        policy_config: Option<PathBuf>,
        /// A text file, scanned as one segment.
        #[arg(long, conflicts_with = "request", required_unless_present = "request")]
        text: Option<PathBuf>,
        /// A provider request body (JSON), split into segments like the gateway does.
        #[arg(long)]
        request: Option<PathBuf>,
    },
    /// Make an ECDSA P-256 signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, default_value = "conduit-policy")]
        out: PathBuf,
    },
    /// Sign a policy: writes FILE.sig (base64 DER, as `cosign sign-blob` does).
    Sign {
        /// The .wasm file.
        file: PathBuf,
        /// The PEM private key (PKCS#8).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a policy's signature against a public key.
    Verify {
        /// The .wasm file.
        file: PathBuf,
        /// The PEM public key.
        #[arg(long)]
        key: PathBuf,
        /// The signature (default FILE.sig).
        #[arg(long)]
        sig: Option<PathBuf>,
    },
}

/// `conduit findings …`
#[derive(Debug, Subcommand)]
pub enum FindingsCommand {
    /// Recent findings (metadata only: category, rule, location, mode — never the text).
    List {
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a finding as a false positive (feeds the per-category rate).
    FalsePositive {
        /// The finding id (f_…), as printed by `findings list` or shown in a block message.
        id: String,
        /// Who says so (recorded).
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Alerts, blocks and false-positive rate per category.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `conduit policy …`.
pub async fn policy(config: Config, cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Keygen { out } => keygen(&out),
        PolicyCommand::Sign { file, key } => {
            let private = read(&key)?;
            let wasm = std::fs::read(&file).map_err(|e| Error::msg(format!("{}: {e}", file.display())))?;
            let sig = signature::sign(&private, &wasm).map_err(|e| Error::msg(format!("{}: {e}", key.display())))?;
            let sig_path = with_suffix(&file, ".sig");
            std::fs::write(&sig_path, format!("{sig}\n"))
                .map_err(|e| Error::msg(format!("{}: {e}", sig_path.display())))?;
            eprintln!("signed {} → {}", file.display(), sig_path.display());
            Ok(())
        }
        PolicyCommand::Verify { file, key, sig } => {
            let public =
                signature::parse_public_key(&read(&key)?).map_err(|e| Error::msg(format!("{}: {e}", key.display())))?;
            let wasm = std::fs::read(&file).map_err(|e| Error::msg(format!("{}: {e}", file.display())))?;
            let sig_path = sig.unwrap_or_else(|| with_suffix(&file, ".sig"));
            let raw = std::fs::read(&sig_path).map_err(|e| Error::msg(format!("{}: {e}", sig_path.display())))?;
            let s =
                signature::decode_signature(&raw).map_err(|e| Error::msg(format!("{}: {e}", sig_path.display())))?;
            match signature::verify(&wasm, &s, &[public]) {
                Some(_) => {
                    println!("OK: {} is signed by {}", file.display(), key.display());
                    Ok(())
                }
                None => Err(Error::msg(format!(
                    "{} does not verify against {}: the file changed after signing, or another key signed it",
                    file.display(),
                    key.display()
                ))),
            }
        }
        PolicyCommand::Test {
            builtin,
            policies,
            policy_config,
            text,
            request,
        } => test(builtin, policies, policy_config, text, request),
        PolicyCommand::List { json } => {
            let listing = match remote(&config).await? {
                Some(c) => c.call::<serde_json::Value>(Method::GET, "/v1/policies", None).await?,
                None => {
                    let stored = open_state(&config).await?.policy_modes.list().await?;
                    let p = Policies::open(config.policies.clone(), &stored)?;
                    p.listing()
                }
            };
            if json {
                println!("{listing}");
            } else {
                print_listing(&listing);
            }
            Ok(())
        }
        PolicyCommand::Mode { category, mode } => {
            match remote(&config).await? {
                Some(c) => {
                    let _: serde_json::Value = c
                        .call(
                            Method::PUT,
                            &format!("/v1/policies/modes/{}", url_segment(&category)),
                            Some(json!({"mode": mode})),
                        )
                        .await?;
                }
                None => {
                    conduit_policy::config::modes_key_ok(&category)?;
                    conduit_policy::Mode::parse_arg(&mode)?;
                    open_state(&config)
                        .await?
                        .policy_modes
                        .set(&category, Some(&mode))
                        .await?;
                }
            }
            eprintln!("{category} is now {mode}");
            Ok(())
        }
    }
}

/// Runs `conduit findings …`.
pub async fn findings(config: Config, cmd: FindingsCommand) -> Result<()> {
    let client = remote(&config).await?;
    let state = if client.is_none() {
        Some(open_state(&config).await?)
    } else {
        None
    };
    match cmd {
        FindingsCommand::List { limit, json } => {
            let list: Vec<FindingRecord> = match (&client, &state) {
                (Some(c), _) => {
                    let v: serde_json::Value = c
                        .call(Method::GET, &format!("/v1/findings?limit={limit}"), None)
                        .await?;
                    serde_json::from_value(v["findings"].clone())?
                }
                (None, Some(s)) => s.findings.list(limit).await?,
                (None, None) => Vec::new(),
            };
            if json {
                println!("{}", json!({"findings": list}));
            } else {
                println!(
                    "{:<26} {:<20} {:<14} {:<28} {:<22} {:<36} {:<6} {:<9} FP",
                    "ID", "TIME (UTC)", "KEY", "CATEGORY", "RULE", "LOCATION", "MODE", "ACTION"
                );
                for f in &list {
                    println!(
                        "{:<26} {:<20} {:<14} {:<28} {:<22} {:<36} {:<6} {:<9} {}",
                        f.id,
                        conduit_core::clock::format_rfc3339(f.time),
                        f.key_id,
                        f.category,
                        f.rule_id,
                        format!("{}@{}..{}", f.location, f.start, f.end),
                        f.mode,
                        f.action,
                        if f.false_positive.is_some() { "yes" } else { "" }
                    );
                }
            }
        }
        FindingsCommand::FalsePositive { id, by } => {
            let record: FindingRecord = match (&client, &state) {
                (Some(c), _) => {
                    c.call(
                        Method::POST,
                        &format!("/v1/findings/{}/false-positive", url_segment(&id)),
                        Some(json!({"by": by})),
                    )
                    .await?
                }
                (None, Some(s)) => conduit_state::operator::mark_false_positive(s.findings.as_ref(), &id, &by).await?,
                (None, None) => return Err(Error::msg("no store")),
            };
            eprintln!(
                "{} ({} / {}) marked as a false positive",
                record.id, record.category, record.rule_id
            );
        }
        FindingsCommand::Stats { json } => {
            let stats = match (&client, &state) {
                (Some(c), _) => {
                    let v: serde_json::Value = c.call(Method::GET, "/v1/findings/stats", None).await?;
                    v["categories"].clone()
                }
                (None, Some(s)) => json!(conduit_state::operator::finding_stats(
                    &s.findings.list(usize::MAX).await?
                )),
                (None, None) => json!({}),
            };
            if json {
                println!("{}", json!({"categories": stats}));
            } else {
                println!(
                    "{:<32} {:>8} {:>8} {:>8} {:>8}",
                    "CATEGORY", "ALERTS", "BLOCKS", "FP", "FP RATE"
                );
                for (cat, s) in stats.as_object().into_iter().flatten() {
                    println!(
                        "{:<32} {:>8} {:>8} {:>8} {:>7.1}%",
                        cat,
                        s["alerts"],
                        s["blocks"],
                        s["false_positives"],
                        s["false_positive_rate"].as_f64().unwrap_or(0.0) * 100.0
                    );
                }
            }
        }
    }
    Ok(())
}

fn test(
    builtin: bool,
    dir: Option<PathBuf>,
    policy_config: Option<PathBuf>,
    text: Option<PathBuf>,
    request: Option<PathBuf>,
) -> Result<()> {
    let base = match &policy_config {
        Some(path) => Config::load(Some(path))?,
        None => Config::load(None)?,
    };
    let mut pc = base.policies.clone();
    pc.cache_dir = Some(std::env::temp_dir().join("conduit-policy-cache"));
    if builtin {
        pc.dir = None;
    } else {
        pc.builtins.clear();
        pc.dir = dir;
        pc.allow_unsigned = true;
    }
    let policies = Policies::open(pc, &[])?;
    for s in policies.statuses() {
        if s.state != "loaded" || s.signed_by.as_deref().is_some_and(|b| b.contains("allow_unsigned")) {
            eprintln!(
                "{}: {} ({}){}",
                s.source,
                s.state,
                s.signed_by.as_deref().unwrap_or("-"),
                s.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
    }
    let body = match (&text, &request) {
        (None, Some(path)) => std::fs::read(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?,
        _ => Vec::new(),
    };
    let (segments, model) = match (text, request) {
        (Some(path), _) => (vec![Segment::new("text", read(&path)?)], None),
        (None, Some(path)) => {
            let facts = conduit_gateway::stages::inspect::parse_facts(&body)
                .map_err(|e| Error::msg(format!("{}: {}", path.display(), e.message)))?;
            (conduit_wire::content::segments_of(&body), facts.model)
        }
        (None, None) => return Err(Error::msg("give --text FILE or --request FILE")),
    };
    let info = RequestInfo {
        provider: "anthropic".into(),
        model,
        key_id: "key_policy_test".into(),
        owner: "policy-test".into(),
        team: None,
        path: "/v1/messages".into(),
        stream: false,
        estimated_input_tokens: segments.iter().map(|s| s.text.len() as u64).sum::<u64>() / 4,
    };
    let outcome = policies.scan(&info, &segments);
    let findings: Vec<serde_json::Value> = outcome
        .findings
        .iter()
        .map(|f| {
            json!({
                "category": f.category, "rule_id": f.rule_id, "segment": f.segment,
                "path": f.location, "start": f.start, "end": f.end,
                "policy": f.policy, "mode": f.mode, "severity": f.severity,
            })
        })
        .collect();
    let mut out = json!({"findings": findings, "decision": outcome.decision});
    if let Some((status, message, policy)) = &outcome.deny {
        out["deny"] = json!({"status": status, "message": message, "policy": policy});
    }
    if let Some((policy, reason)) = &outcome.failure {
        out["failure"] = json!({"policy": policy, "reason": reason});
    }
    println!("{out}");
    Ok(())
}

fn keygen(prefix: &Path) -> Result<()> {
    let (private, public) = signature::keygen().map_err(Error::msg)?;
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    if key_path.exists() {
        return Err(Error::msg(format!(
            "{} exists; not overwriting a key",
            key_path.display()
        )));
    }
    write_private(&key_path, &private)?;
    std::fs::write(&pub_path, public).map_err(|e| Error::msg(format!("{}: {e}", pub_path.display())))?;
    eprintln!(
        "wrote {} (private: keep it out of the gateway host) and {} (add to policies.trusted_keys)",
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The running gateway's admin API, if one answers on the configured address.
pub(crate) async fn remote(config: &Config) -> Result<Option<AdminClient>> {
    if AdminClient::is_listening(config.admin_listen).await {
        let token = conduit_gateway::gateway::resolve_admin_token(config, false)?;
        return Ok(Some(AdminClient::new(config.admin_listen, token)));
    }
    Ok(None)
}

async fn open_state(config: &Config) -> Result<State> {
    conduit_gateway::gateway::open_state(config).await.map_err(|e| {
        e.context(format!(
            "no gateway answers on the admin address {}, and",
            config.admin_listen
        ))
    })
}

/// Percent-encodes a path segment; `*` (in `secret.*`) is a valid path character and stays.
pub(crate) fn url_segment(s: &str) -> String {
    // The admin API matches path segments literally, so a mode pattern's `*` stays as written.
    conduit_core::percent::encode_keeping(s, b"*")
}

fn print_listing(v: &serde_json::Value) {
    println!("policy set {}", v["set"].as_str().unwrap_or("-"));
    println!(
        "{:<14} {:<10} {:<30} {:<12} {:<24} SOURCE",
        "POLICY", "VERSION", "STATE", "ON ERROR", "SIGNED BY"
    );
    for p in v["policies"].as_array().into_iter().flatten() {
        println!(
            "{:<14} {:<10} {:<30} {:<12} {:<24} {}",
            p["name"].as_str().unwrap_or("-"),
            p["version"].as_str().unwrap_or("-"),
            p["state"].as_str().unwrap_or("-"),
            p["on_error"].as_str().unwrap_or("-"),
            p["signed_by"].as_str().unwrap_or("-"),
            p["source"].as_str().unwrap_or("-"),
        );
        if let Some(e) = p["error"].as_str() {
            println!("    ! {e}");
        }
    }
    println!("\nMODES (most specific wins; default alert)");
    for (k, m) in v["modes"].as_object().into_iter().flatten() {
        println!("  {:<32} {}", k, m.as_str().unwrap_or("-"));
    }
}
