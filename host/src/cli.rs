//! The `conduit` command line: `serve` (the default), and the operator commands for keys,
//! credentials, budgets, spend and prices, written once against [`crate::operate::Operator`]: a
//! running gateway's admin API when one answers (sled admits one process), else the state itself.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use crate::operate::Operator;
use conduit_core::error::{Error, Result};
use conduit_core::seal::MasterKey;
use conduit_gateway::config::{Config, MasterKeySource};
use conduit_state::operator::{self, CreatedKey, CredentialInfo, NewKeyRequest};
use conduit_state::records::KeyRecord;

/// Conduit: the gateway between AI coding tools and model providers.
#[derive(Debug, Parser)]
#[command(name = "conduit", version, about)]
pub struct Cli {
    /// TOML config file (see docs/configuration.md); environment variables override it.
    #[arg(long, global = true, env = "CONDUIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// File holding the base64 master key (overrides CONDUIT_MASTER_KEY and the config).
    #[arg(long, global = true)]
    pub master_key_file: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    Serve,
    /// Issue, list and revoke stand-in keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Set provider credentials (write-only) and rotate the master key.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Master key utilities.
    #[command(subcommand, name = "master-key")]
    MasterKey(MasterKeyCommand),
    /// Who spent what: tokens and cost by key, owner, team, model or day (UTC).
    Spend {
        /// Group by: key, owner, team, model or day.
        #[arg(long, default_value = "team")]
        by: String,
        /// First day, YYYY-MM-DD (default: 29 days ago).
        #[arg(long)]
        since: Option<String>,
        /// Last day, YYYY-MM-DD (default: today).
        #[arg(long)]
        until: Option<String>,
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// The price table: list it, or import an organisation's prices.
    #[command(subcommand)]
    Prices(PricesCommand),
    /// Hard budgets per key, team or the whole org (daily / monthly, UTC).
    #[command(subcommand)]
    Budgets(BudgetsCommand),
    /// Wasm policies: list, modes, test, signing keys.
    #[command(subcommand)]
    Policy(crate::cli_policy::PolicyCommand),
    /// Policy findings: list, false-positive feedback, statistics.
    #[command(subcommand)]
    Findings(crate::cli_policy::FindingsCommand),
    /// The audit log: verify its hash chain, export records (CSV / JSON / JSON lines).
    #[command(subcommand)]
    Audit(crate::cli_audit::AuditCommand),
    /// Context rot: error rate, latency and cost by input-token bucket.
    Rot {
        /// Group by: model, team, key or all.
        #[arg(long, default_value = "model")]
        by: String,
        /// From this UTC date or time (default: 29 days ago).
        #[arg(long)]
        since: Option<String>,
        /// Until this UTC date (inclusive) or time.
        #[arg(long)]
        until: Option<String>,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Sessions (by hashed client session id): turns, context growth, cost past 32K / 100K.
    Sessions {
        /// From this UTC date or time (default: 29 days ago).
        #[arg(long)]
        since: Option<String>,
        /// Until this UTC date (inclusive) or time.
        #[arg(long)]
        until: Option<String>,
        /// Sessions to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Applies the database migrations this release has (`[store] kind = "postgres"`), under an
    /// advisory lock: run it once before starting (or upgrading) the replicas.
    Migrate,
    /// Moves state between stores: `conduit store copy --from sled:DIR --to postgres:URL`.
    #[command(subcommand)]
    Store(StoreCommand),
    /// A seeded demo: a gateway over a mock provider, filled with synthetic traffic, to explore the
    /// dashboard. Uses a fresh data directory; never contacts a real provider.
    Demo(crate::demo::DemoArgs),
    /// People signed in with the org's IdP: list them, sign one out everywhere, restore them.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Scoped admin API tokens: create (with roles and an expiry), list, revoke.
    #[command(subcommand, name = "admin-tokens")]
    AdminTokens(AdminTokensCommand),
    /// Sign in to a Conduit gateway with the org's IdP (device flow: open a link, confirm a code).
    Login {
        /// The gateway's URL, e.g. https://conduit.corp.example.
        #[arg(long)]
        gateway: String,
        /// Extra CA certificates (PEM) to trust for the gateway.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Print a valid access token for the signed-in gateway, refreshing it if needed (for
    /// apiKeyHelper, Codex's auth.command, SDKs).
    Token {
        /// Extra CA certificates (PEM) to trust for the gateway.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Whether the running gateway is ready (exit 0) or not (exit 1, the reason on stderr): for a
    /// container HEALTHCHECK or an exec probe.
    Healthcheck {
        /// Only whether the process is alive (`/livez`), not whether it can serve (`/readyz`).
        #[arg(long)]
        live: bool,
    },
    /// Sign out: revoke the tokens at the gateway and forget them.
    Logout {
        /// Extra CA certificates (PEM) to trust for the gateway.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
}

/// `conduit admin-tokens …`
#[derive(Debug, Subcommand)]
pub enum AdminTokensCommand {
    /// Create a token; prints it once.
    Create {
        /// Role: viewer, finance, security or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Expiry: YYYY-MM-DD (UTC midnight) or YYYY-MM-DDTHH:MM:SSZ; at most 400 days ahead.
        #[arg(long)]
        expires: String,
        /// Label (who or what uses it).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Every admin token (never a secret).
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Revoke a token; refused from its next call on.
    Revoke {
        /// Its id (adm_…).
        id: String,
    },
}

/// `conduit users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Everyone with a sign-in session or a block.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// End every session of a person now (refused at their next request, on every replica) and
    /// refuse new sign-ins until `conduit users restore`.
    Revoke {
        /// Their email, as the IdP gives it.
        email: String,
    },
    /// Allow a revoked person to sign in again.
    Restore {
        /// Their email.
        email: String,
    },
}

/// `conduit store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copies everything a single-node store holds (keys, sealed credentials and the master key id,
    /// budgets, the spend ledger, findings, policy modes, price overrides, uploads) into an empty,
    /// migrated PostgreSQL database, then checks the counts. Stop the gateway first.
    Copy {
        /// `sled:DIR`: the data directory of the single-node install.
        #[arg(long)]
        from: String,
        /// `postgres:URL` (or `postgres:` to use CONDUIT_STORE_URL / the config's `[store]`).
        #[arg(long)]
        to: String,
    },
}

/// `conduit prices …`
#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Show the prices in force (shipped table plus overrides), USD per million tokens.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Import overrides: LiteLLM's model_prices_and_context_window.json, or a [[price]] TOML file.
    Import {
        /// The file.
        file: PathBuf,
    },
    /// For maintainers: write the shipped table (crates/wire/prices.toml) from LiteLLM's price map and our
    /// own rows. `crates/wire/prices-refresh.sh` runs it on the pinned LiteLLM release.
    #[command(hide = true)]
    Generate {
        /// LiteLLM's model_prices_and_context_window.json (inside the `litellm` package).
        #[arg(long)]
        litellm: PathBuf,
        /// The LiteLLM release it comes from, e.g. 1.108.7.
        #[arg(long)]
        litellm_version: String,
        /// Our own rows (`[[price]]` TOML), replacing or adding to the source's.
        #[arg(long)]
        overrides: PathBuf,
        /// The table's date (YYYY-MM-DD): every generated row's effective date.
        #[arg(long)]
        date: String,
        /// Where to write the table.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `conduit keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once.
    Create {
        /// Engineer the key is issued to (e-mail or user name).
        #[arg(long)]
        owner: String,
        /// Team, for attribution.
        #[arg(long)]
        team: Option<String>,
        /// Label, e.g. laptop or ci.
        #[arg(long)]
        name: Option<String>,
        /// Expiry: YYYY-MM-DD (UTC midnight) or YYYY-MM-DDTHH:MM:SSZ.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Daily budget for this key, USD.
        #[arg(long)]
        daily_budget: Option<String>,
        /// Monthly budget for this key, USD.
        #[arg(long)]
        monthly_budget: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Change a key's rate limits (0 removes a limit).
    Update {
        /// Key id (key_…).
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        out: Output,
    },
    /// List keys (never the secrets).
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Show one key.
    Show {
        /// Key id (key_…).
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Revoke a key; refused from the next request on.
    Revoke {
        /// Key id (key_…).
        id: String,
        #[command(flatten)]
        out: Output,
    },
}

/// Per-key rate-limit flags.
#[derive(Debug, Args, Clone, Copy)]
pub struct LimitArgs {
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Input + output tokens per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Concurrent streaming responses.
    #[arg(long)]
    pub max_streams: Option<u32>,
}

impl From<LimitArgs> for conduit_state::records::RateLimits {
    fn from(a: LimitArgs) -> Self {
        conduit_state::records::RateLimits {
            rpm: a.rpm,
            tpm: a.tpm,
            max_streams: a.max_streams,
        }
    }
}

/// `conduit budgets …`
#[derive(Debug, Subcommand)]
pub enum BudgetsCommand {
    /// Set a budget: SCOPE is org, team:NAME or key:KEY_ID; amounts in USD.
    Set {
        /// org, team:NAME or key:KEY_ID.
        scope: String,
        /// Per UTC day.
        #[arg(long)]
        daily: Option<String>,
        /// Per UTC calendar month.
        #[arg(long)]
        monthly: Option<String>,
    },
    /// Remove a scope's budget.
    Clear {
        /// org, team:NAME or key:KEY_ID.
        scope: String,
    },
    /// Show budgets with what is spent and reserved in the current periods.
    List {
        #[command(flatten)]
        out: Output,
    },
}

/// `conduit credentials …`
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Seal and store a provider credential (from an environment variable or stdin).
    Set {
        /// anthropic, openai, azure or bedrock.
        provider: String,
        /// Read the credential from this environment variable.
        #[arg(long, conflicts_with_all = ["stdin", "from_aws_env"], required_unless_present_any = ["stdin", "from_aws_env"])]
        from_env: Option<String>,
        /// Read the credential from standard input.
        #[arg(long, conflicts_with = "from_aws_env")]
        stdin: bool,
        /// bedrock: read the access key pair from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
        /// (optional) AWS_SESSION_TOKEN.
        #[arg(long)]
        from_aws_env: bool,
    },
    /// Show which credentials are set (metadata only).
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Re-seal every credential under a new master key.
    RotateMaster {
        /// Read the new base64 master key from this environment variable.
        #[arg(long, group = "new")]
        new_key_env: Option<String>,
        /// Read the new base64 master key from this file.
        #[arg(long, group = "new")]
        new_key_file: Option<PathBuf>,
    },
}

/// `conduit master-key …`
#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Print a new random master key (base64 of 32 bytes).
    Generate,
}

/// Output format flag shared by listing commands.
#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    // The client side of sign-in runs on an engineer's machine: no gateway configuration.
    match &cli.command {
        Some(Command::Login { gateway, ca_file }) => return crate::login::login(gateway, ca_file.clone()).await,
        Some(Command::Token { ca_file }) => return crate::login::token(ca_file.clone()).await,
        Some(Command::Logout { ca_file }) => return crate::login::logout(ca_file.clone()).await,
        _ => {}
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(p) = cli.master_key_file {
        config.master_key = MasterKeySource::File(p);
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::MasterKey(MasterKeyCommand::Generate) => {
            let (_, encoded) = MasterKey::generate()?;
            println!("{}", encoded.as_str());
            Ok(())
        }
        Command::Keys(cmd) => keys(crate::operate::connect(config).await?.as_ref(), cmd).await,
        Command::Users(cmd) => users(crate::operate::connect(config).await?.as_ref(), cmd).await,
        Command::AdminTokens(cmd) => admin_tokens(crate::operate::connect(config).await?.as_ref(), cmd).await,
        Command::Login { .. } | Command::Token { .. } | Command::Logout { .. } => Ok(()),
        Command::Healthcheck { live } => {
            let status = crate::healthcheck::probe(config.admin_listen, live).await?;
            println!("{status}");
            Ok(())
        }
        Command::Spend {
            by,
            since,
            until,
            format,
        } => {
            spend(
                crate::operate::connect(config).await?.as_ref(),
                &by,
                since.as_deref(),
                until.as_deref(),
                &format,
            )
            .await
        }
        Command::Prices(PricesCommand::Generate {
            litellm,
            litellm_version,
            overrides,
            date,
            out,
        }) => generate_prices(&litellm, &litellm_version, &overrides, &date, &out),
        Command::Prices(cmd) => prices(crate::operate::connect(config).await?.as_ref(), cmd).await,
        Command::Budgets(cmd) => budgets(crate::operate::connect(config).await?.as_ref(), cmd).await,
        Command::Credentials(cmd) => credentials(crate::operate::connect(config).await?.as_ref(), cmd).await,
        Command::Policy(cmd) => crate::cli_policy::policy(config, cmd).await,
        Command::Findings(cmd) => crate::cli_policy::findings(config, cmd).await,
        Command::Audit(cmd) => crate::cli_audit::audit(config, cmd).await,
        Command::Rot {
            by,
            since,
            until,
            format,
        } => crate::cli_audit::rot(config, &by, since.as_deref(), until.as_deref(), &format).await,
        Command::Sessions {
            since,
            until,
            limit,
            format,
        } => crate::cli_audit::sessions(config, since.as_deref(), until.as_deref(), limit, &format).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Migrate => migrate(&config).await,
        Command::Store(StoreCommand::Copy { from, to }) => crate::store_copy::copy(&config, &from, &to).await,
    }
}

async fn migrate(config: &Config) -> Result<()> {
    let conduit_gateway::config::StoreConfig::Postgres(pg) = &config.store else {
        return Err(Error::msg(
            "`conduit migrate` is for a PostgreSQL store; set [store] kind = \"postgres\" and CONDUIT_STORE_URL (the embedded sled store needs no migration)",
        ));
    };
    let applied = conduit_state_postgres::migrate(pg).await?;
    match applied.as_slice() {
        [] => println!(
            "the database is at schema version {}; nothing to apply",
            conduit_state_postgres::SCHEMA_VERSION
        ),
        versions => println!(
            "applied migrations {versions:?}; the database is at schema version {}",
            conduit_state_postgres::SCHEMA_VERSION
        ),
    }
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    crate::telemetry::init(&config.log);
    let gateway = conduit_gateway::Gateway::open(config).await?;
    let running = conduit_gateway::server::start(gateway).await?;
    shutdown_signal().await;
    running.drain().await;
    tracing::info!("stopped: ledger and audit log flushed");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn admin_tokens(op: &dyn Operator, cmd: AdminTokensCommand) -> Result<()> {
    use conduit_gateway::admin_auth::Role;
    match cmd {
        AdminTokensCommand::Create {
            roles,
            expires,
            name,
            out,
        } => {
            let roles = roles.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>>>()?;
            let expires_at = conduit_core::clock::parse_date_or_time(&expires).ok_or_else(|| {
                conduit_core::error::Error::msg(format!(
                    "--expires {expires:?} is not a date; give YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
                ))
            })?;
            let (token, record) = op.create_admin_token(roles, expires_at, name).await?;
            if out.json {
                println!("{}", json!({"token": token, "record": record}));
            } else {
                println!("{token}");
                eprintln!(
                    "admin token {} ({}) until {}; shown once — keep it in a secret store",
                    record.id,
                    record.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
                    conduit_core::clock::format_rfc3339(record.expires_at)
                );
            }
        }
        AdminTokensCommand::List { out } => {
            let all = op.admin_tokens().await?;
            if out.json {
                println!("{}", json!({"admin_tokens": all}));
                return Ok(());
            }
            println!("{:<18} {:<24} {:<22} {:<10} NAME", "ID", "ROLES", "EXPIRES", "STATE");
            let now = conduit_core::clock::now_unix();
            for t in all {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<18} {:<24} {:<22} {state:<10} {}",
                    t.id,
                    t.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
                    conduit_core::clock::format_rfc3339(t.expires_at),
                    t.name.as_deref().unwrap_or("-")
                );
            }
        }
        AdminTokensCommand::Revoke { id } => {
            let t = op.revoke_admin_token(&id).await?;
            println!("revoked admin token {}; refused from its next call", t.id);
        }
    }
    Ok(())
}

async fn users(op: &dyn Operator, cmd: UsersCommand) -> Result<()> {
    match cmd {
        UsersCommand::List { out } => {
            let all = op.users().await?;
            if out.json {
                println!("{}", json!({"users": all}));
                return Ok(());
            }
            println!(
                "{:<32} {:<8} {:<20} {:<12} {:<22} SESSION",
                "USER", "STATE", "TEAM", "CLIENT", "LAST REFRESH"
            );
            for u in &all {
                let state = if u.blocked_at.is_some() { "blocked" } else { "active" };
                if u.sessions.is_empty() {
                    println!("{:<32} {state:<8}", u.email);
                }
                for s in &u.sessions {
                    println!(
                        "{:<32} {:<8} {:<20} {:<12} {:<22} {}{}",
                        u.email,
                        state,
                        s.team.as_deref().unwrap_or("-"),
                        s.surface.as_deref().unwrap_or("-"),
                        s.refreshed_at,
                        s.id,
                        s.ended.as_deref().map(|e| format!(" (ended {e})")).unwrap_or_default()
                    );
                }
            }
        }
        UsersCommand::Revoke { email } => {
            let r = op.revoke_user(&email).await?;
            println!(
                "signed {email} out of {} session(s) and {} dashboard session(s); their next request is refused on every replica, and they cannot sign in again until `conduit users restore {email}`",
                r.sessions_ended, r.admin_sessions_ended
            );
            if !r.admin_tokens_revoked.is_empty() {
                println!(
                    "revoked the admin token(s) they had created: {} (re-create any a service still needs)",
                    r.admin_tokens_revoked.join(", ")
                );
            }
        }
        UsersCommand::Restore { email } => {
            if op.restore_user(&email).await? {
                println!("{email} may sign in again");
            } else {
                println!("{email} was not blocked");
            }
        }
    }
    Ok(())
}

async fn keys(op: &dyn Operator, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            owner,
            team,
            name,
            expires,
            limits,
            daily_budget,
            monthly_budget,
            out,
        } => {
            let expires_at = expires
                .map(|e| {
                    conduit_core::clock::parse_date_or_time(&e).ok_or_else(|| {
                        Error::msg(format!(
                            "--expires {e:?} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)"
                        ))
                    })
                })
                .transpose()?;
            let req = NewKeyRequest {
                owner,
                team,
                name,
                expires_at,
                limits: limits.into(),
            };
            let created: CreatedKey = op.create_key(req).await?;
            if daily_budget.is_some() || monthly_budget.is_some() {
                let scope = format!("key:{}", created.record.id);
                set_budget(op, &scope, daily_budget.as_deref(), monthly_budget.as_deref()).await?;
            }
            if out.json {
                println!("{}", json!(created));
            } else {
                println!("{}", created.key);
                eprintln!(
                    "created {} for {}{} — this is the only time the key is shown; hand it to its owner now",
                    created.record.id,
                    created.record.owner,
                    created
                        .record
                        .team
                        .as_deref()
                        .map(|t| format!(" (team {t})"))
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::Update { id, limits, out } => {
            let update: conduit_state::records::RateLimits = limits.into();
            let k = op.update_key_limits(&id, update).await?;
            if out.json {
                println!("{}", json!(k))
            } else {
                print_keys(std::slice::from_ref(&k))
            }
        }
        KeysCommand::List { out } => {
            let all = op.keys().await?;
            if out.json {
                println!("{}", json!({"keys": all}));
            } else {
                print_keys(&all);
            }
        }
        KeysCommand::Show { id, out } => {
            let k = op.key(&id).await?;
            if out.json {
                println!("{}", json!(k))
            } else {
                print_keys(std::slice::from_ref(&k))
            }
        }
        KeysCommand::Revoke { id, out } => {
            let k = op.revoke_key(&id).await?;
            if out.json {
                println!("{}", json!(k));
            } else {
                println!(
                    "revoked {} (owner {}); requests with it are refused from now on",
                    k.id, k.owner
                );
            }
        }
    }
    Ok(())
}

/// `AKID:SECRET[:SESSION_TOKEN]` from the standard AWS variables (the bedrock credential format).
fn aws_key_pair_from_env() -> Result<Zeroizing<String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        return Err(Error::msg(
            "--from-aws-env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set (AWS_SESSION_TOKEN is optional)",
        ));
    };
    let secret = Zeroizing::new(secret);
    let mut pair = Zeroizing::new(format!("{}:{}", id.trim(), secret.trim()));
    if let Some(token) = var("AWS_SESSION_TOKEN").map(Zeroizing::new) {
        pair.push(':');
        pair.push_str(token.trim());
    }
    Ok(pair)
}

async fn credentials(op: &dyn Operator, cmd: CredentialsCommand) -> Result<()> {
    match cmd {
        CredentialsCommand::Set {
            provider,
            from_env,
            stdin,
            from_aws_env,
        } => {
            let secret = if from_aws_env {
                aws_key_pair_from_env()?
            } else if stdin {
                let mut s = Zeroizing::new(String::new());
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                let var = from_env.unwrap_or_default();
                Zeroizing::new(std::env::var(&var).map_err(|_| {
                    Error::msg(format!(
                        "environment variable {var:?} is not set (or not valid text); export it first, or use --stdin"
                    ))
                })?)
            };
            let info: CredentialInfo = op.set_credential(&provider, secret).await?;
            println!(
                "{} credential set (version {}, sealed under {})",
                info.provider, info.version, info.master_key_id
            );
        }
        CredentialsCommand::List { out } => {
            let all = op.credentials().await?;
            if out.json {
                println!("{}", json!({"credentials": all}));
            } else if all.is_empty() {
                println!("no credentials set; `conduit credentials set anthropic --from-env ANTHROPIC_API_KEY`");
            } else {
                println!(
                    "{:<10} {:<8} {:>7}  {:<20}  UPDATED",
                    "PROVIDER", "ID", "VERSION", "MASTER KEY"
                );
                for c in all {
                    println!(
                        "{:<10} {:<8} {:>7}  {:<20}  {}",
                        c.provider,
                        c.id,
                        c.version,
                        c.master_key_id,
                        conduit_core::clock::format_rfc3339(c.updated_at)
                    );
                }
            }
        }
        CredentialsCommand::RotateMaster {
            new_key_env,
            new_key_file,
        } => {
            let (encoded, source) = match (new_key_env, new_key_file) {
                (Some(var), _) => (
                    Zeroizing::new(
                        std::env::var(&var)
                            .map_err(|_| Error::msg(format!("environment variable {var:?} is not set")))?,
                    ),
                    var,
                ),
                (None, Some(p)) => (
                    Zeroizing::new(
                        std::fs::read_to_string(&p)
                            .map_err(|e| Error::msg(format!("reading {:?}: {e}", p.display().to_string())))?,
                    ),
                    p.display().to_string(),
                ),
                (None, None) => {
                    return Err(Error::msg(
                        "give the new key with --new-key-env VAR or --new-key-file FILE (make one with `conduit master-key generate`)",
                    ));
                }
            };
            let new = MasterKey::from_base64(&encoded, &source)?;
            let new_id = new.id().to_string();
            let count = op.rotate_master(new, &encoded).await?;
            println!(
                "re-sealed {count} credential(s) under {new_id}; from now on start the gateway with the new key (CONDUIT_MASTER_KEY or --master-key-file)"
            );
        }
    }
    Ok(())
}

async fn set_budget(op: &dyn Operator, scope: &str, daily: Option<&str>, monthly: Option<&str>) -> Result<()> {
    let limit = conduit_state::records::BudgetLimit {
        daily_micros: daily
            .map(|d| conduit_core::money::parse_usd("--daily", d))
            .transpose()?,
        monthly_micros: monthly
            .map(|m| conduit_core::money::parse_usd("--monthly", m))
            .transpose()?,
    };
    conduit_state::budget::validate_scope(scope)?;
    op.set_budget(scope, limit).await
}

async fn budgets(op: &dyn Operator, cmd: BudgetsCommand) -> Result<()> {
    match cmd {
        BudgetsCommand::Set { scope, daily, monthly } => {
            if daily.is_none() && monthly.is_none() {
                return Err(Error::msg(
                    "give --daily USD and/or --monthly USD (to remove a budget: conduit budgets clear SCOPE)",
                ));
            }
            set_budget(op, &scope, daily.as_deref(), monthly.as_deref()).await?;
            println!("budget for {scope} set; it applies from the next request");
        }
        BudgetsCommand::Clear { scope } => {
            conduit_state::budget::validate_scope(&scope)?;
            op.set_budget(&scope, Default::default()).await?;
            println!("budget for {scope} removed");
        }
        BudgetsCommand::List { out } => {
            let all = op.budgets().await?;
            if out.json {
                println!("{}", json!({"budgets": all}));
            } else if all.is_empty() {
                println!("no budgets; set one with `conduit budgets set team:payments --monthly 5000`");
            } else {
                let usd = conduit_core::money::usd;
                println!(
                    "{:<28} {:<8} {:>16} {:>16} {:>14}  RESETS",
                    "SCOPE", "PERIOD", "LIMIT USD", "SPENT USD", "RESERVED USD"
                );
                for b in all {
                    println!(
                        "{:<28} {:<8} {:>16} {:>16} {:>14}  {}",
                        b.scope,
                        b.period,
                        usd(b.limit_micros),
                        usd(b.spent_micros),
                        usd(b.reserved_micros),
                        b.resets_at
                    );
                }
            }
        }
    }
    Ok(())
}

async fn spend(op: &dyn Operator, by: &str, since: Option<&str>, until: Option<&str>, format: &str) -> Result<()> {
    let by = conduit_state::ledger::By::parse(by)?;
    if !["table", "csv", "json"].contains(&format) {
        return Err(Error::msg(format!("--format {format:?}: expected table, csv or json")));
    }
    let (since, until) = operator::spend_range(since, until)?;
    let report = op.spend(by, &since, &until).await?;
    let usd = conduit_core::money::usd;
    match format {
        "json" => println!("{}", json!(report)),
        "csv" => {
            println!(
                "group,requests,errors,estimated,unpriced,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd"
            );
            for l in &report.lines {
                let t = &l.totals;
                println!(
                    "{},{},{},{},{},{},{},{},{},{}",
                    csv_field(&l.group),
                    t.requests,
                    t.errors,
                    t.estimated,
                    t.unpriced,
                    t.input,
                    t.output,
                    t.cache_read,
                    t.cache_write,
                    usd(t.cost_micros)
                );
            }
        }
        _ => {
            println!("spend by {by:?} from {since} to {until} (UTC)", by = report.by);
            println!(
                "{:<28} {:>8} {:>6} {:>12} {:>12} {:>12} {:>12} {:>14}",
                "GROUP", "REQUESTS", "ERRORS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST USD"
            );
            for l in &report.lines {
                let t = &l.totals;
                let mut notes = Vec::new();
                if t.unpriced > 0 {
                    notes.push(format!("{} at the ceiling price", t.unpriced));
                }
                if t.estimated > 0 {
                    notes.push(format!("{} estimated", t.estimated));
                }
                println!(
                    "{:<28} {:>8} {:>6} {:>12} {:>12} {:>12} {:>12} {:>14}  {}",
                    l.group,
                    t.requests,
                    t.errors,
                    t.input,
                    t.output,
                    t.cache_read,
                    t.cache_write,
                    usd(t.cost_micros),
                    notes.join("; ")
                );
            }
            if !report.unpriced_models.is_empty() {
                eprintln!(
                    "\nwarning: {} model(s) have no price; their requests were reserved and billed at the provider's ceiling (its dearest current model), so the costs above are upper bounds:",
                    report.unpriced_models.len()
                );
                for m in &report.unpriced_models {
                    eprintln!(
                        "  {}/{}: {} request(s), ${} at the ceiling",
                        m.provider,
                        m.model,
                        m.requests,
                        usd(m.cost_micros)
                    );
                }
                eprintln!(
                    "fix: add each model's real price with `conduit prices import FILE` (a [[price]] row per model, see docs/metering.md)"
                );
            }
        }
    }
    Ok(())
}

/// One CSV field, quoted and defused as the audit export does (a team or model name that starts
/// with `=` must not become a spreadsheet formula).
fn csv_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    conduit_audit::export::push_csv_field(&mut out, s);
    out
}

async fn prices(op: &dyn Operator, cmd: PricesCommand) -> Result<()> {
    match cmd {
        PricesCommand::List { out } => {
            let rows = op.prices().await?;
            if out.json {
                println!("{}", json!({"prices": rows}));
                return Ok(());
            }
            let per_m = conduit_core::money::usd;
            println!(
                "{:<10} {:<44} {:>11} {:>11} {:>11} {:>11} {:>9}  {:<10} {:<8} SOURCE",
                "PROVIDER", "MODEL", "INPUT", "OUTPUT", "CACHE WRITE", "CACHE READ", "CONTEXT", "EFFECTIVE", "ORIGIN"
            );
            let overrides = rows.iter().filter(|r| r.origin == "override").count();
            for r in &rows {
                println!(
                    "{:<10} {:<44} {:>11} {:>11} {:>11} {:>11} {:>9}  {:<10} {:<8} {} ({}){}",
                    r.provider,
                    r.model,
                    per_m(r.rates.input),
                    per_m(r.rates.output),
                    per_m(r.rates.cache_write),
                    per_m(r.rates.cache_read),
                    r.context_window.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    r.effective,
                    r.origin,
                    r.source,
                    r.source_version,
                    r.long_context
                        .map(|(t, l)| format!(" (above {t} input tokens: {} / {})", per_m(l.input), per_m(l.output)))
                        .unwrap_or_default()
                );
            }
            if overrides > 0 {
                println!(
                    "{overrides} row(s) are your organisation's own prices (origin override): they replace the shipped rows for those models"
                );
            }
            println!(
                "a model with no row is billed at its provider's ceiling (its dearest current model) and marked price=ceiling; see docs/metering.md"
            );
        }
        PricesCommand::Generate { .. } => {
            return Err(Error::msg("`prices generate` runs without a gateway; this is a bug"));
        }
        PricesCommand::Import { file } => {
            let content = std::fs::read_to_string(&file)
                .map_err(|e| Error::msg(format!("reading {:?}: {e}", file.display().to_string())))?;
            let (n, skipped) = op.import_prices(&content).await?;
            println!("imported {n} price(s) as overrides; skipped (providers not routed yet): {skipped}");
        }
    }
    Ok(())
}

fn generate_prices(
    litellm: &std::path::Path,
    version: &str,
    overrides: &std::path::Path,
    date: &str,
    out: &std::path::Path,
) -> Result<()> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::msg(format!("reading {:?}: {e}", p.display().to_string())))
    };
    let overrides = String::from_utf8(read(overrides)?).map_err(|_| Error::msg("the overrides file is not UTF-8"))?;
    let g = conduit_wire::prices::generate(&read(litellm)?, &overrides, &format!("litellm {version}"), date)?;
    std::fs::write(out, &g.text).map_err(|e| Error::msg(format!("writing {:?}: {e}", out.display().to_string())))?;
    println!("wrote {}: {} rows", out.display(), g.counts.values().sum::<usize>());
    for (provider, n) in &g.counts {
        println!("  {provider:<10} {n}");
    }
    println!("left out of the source:");
    let mut other = (0, 0);
    for (why, n) in &g.skipped {
        if conduit_wire::protocol::Provider::ALL
            .iter()
            .any(|p| why.starts_with(p.as_str()))
        {
            println!("  {n:>5}  {why}");
        } else {
            other = (other.0 + 1, other.1 + n);
        }
    }
    println!(
        "  {:>5}  entries of {} providers Conduit does not route",
        other.1, other.0
    );
    Ok(())
}

/// Refuses ids that would change the admin URL's path.
fn print_keys(keys: &[KeyRecord]) {
    if keys.is_empty() {
        println!("no keys; create one with `conduit keys create --owner alice@corp.example --team payments`");
        return;
    }
    let now = conduit_core::clock::now_unix();
    println!(
        "{:<17} {:<28} {:<14} {:<10} {:<10} {:<10} {:<8} ENDS IN",
        "ID", "OWNER", "TEAM", "NAME", "CREATED", "EXPIRES", "STATUS"
    );
    for k in keys {
        let day = |t: i64| conduit_core::clock::format_date(t);
        let status = match k.unusable_reason(now) {
            None => "active",
            Some(_) if k.revoked_at.is_some() => "revoked",
            Some(_) => "expired",
        };
        println!(
            "{:<17} {:<28} {:<14} {:<10} {:<10} {:<10} {:<8} …{}",
            k.id,
            k.owner,
            k.team.as_deref().unwrap_or("-"),
            k.name.as_deref().unwrap_or("-"),
            day(k.created_at),
            k.expires_at.map(day).unwrap_or_else(|| "-".into()),
            status,
            k.hint
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spend_csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(super::csv_field("payments"), "payments");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(super::csv_field("-12.5"), "-12.5", "a negative number stays a number");
        assert_eq!(super::csv_field("-"), "-", "the report's no-model row");
        assert_eq!(super::csv_field("-2+3"), "\"'-2+3\"");
    }
}
