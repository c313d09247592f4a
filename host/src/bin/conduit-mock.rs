//! `conduit-mock`: the mock provider upstream (crate `conduit-mock`).
//!
//! Run with: `conduit-mock --listen 127.0.0.1:9000 [--event-delay-ms 20] [--mode ok] [--compress gzip]`

use clap::Parser;

/// Mock Anthropic / OpenAI upstream for tests, benchmarks and demos.
#[derive(Debug, Parser)]
#[command(name = "conduit-mock", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// Pause between SSE events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    event_delay_ms: u64,
    /// Default mode: ok, status-NNN, midstream-error, reset, reset-midstream, stall.
    #[arg(long)]
    mode: Option<String>,
    /// Compress responses (gzip) for clients that accept it.
    #[arg(long)]
    compress: Option<String>,
    /// Bedrock: verify SigV4 signatures against this `AKID:SECRET` (or a Bedrock API key), read
    /// from the named environment variable.
    #[arg(long)]
    aws_credentials_env: Option<String>,
    /// Bedrock: the region signatures must be scoped to.
    #[arg(long)]
    aws_region: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let options = conduit_mock::MockOptions {
        mode: a.mode,
        event_delay_ms: a.event_delay_ms,
        compress: a.compress,
        aws_credentials: a.aws_credentials_env.and_then(|v| std::env::var(v).ok()),
        aws_region: a.aws_region,
    };
    match conduit_mock::run_forever(a.listen, options).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit-mock: error: cannot listen on {}: {e}", a.listen);
            std::process::ExitCode::FAILURE
        }
    }
}
