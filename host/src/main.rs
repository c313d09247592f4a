//! `conduit` binary: see [`conduit::cli`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = conduit::cli::Cli::parse();
    match conduit::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
