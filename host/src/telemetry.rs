//! Logging: tracing-subscriber, text or JSON lines, filtered by `CONDUIT_LOG` / `log.level`.
//! What is logged is decided at each call site: ids, names, sizes, timings — never a body, a
//! prompt, a completion or a key (the tests grep the logs for planted canaries).

use conduit_gateway::config::LogConfig;

/// Compilers and the storage engine are chatty at `debug` (cranelift logs every function it
/// compiles): unless the filter names them, they log warnings only, so `CONDUIT_LOG=debug` means
/// Conduit's debug lines.
const QUIET: &[&str] = &["cranelift", "wasmtime", "regalloc2", "sled", "wasmparser"];

fn with_quiet_dependencies(filter: &str) -> String {
    let mut f = filter.to_string();
    for dep in QUIET {
        if !filter.contains(dep) {
            f.push_str(&format!(",{dep}=warn"));
        }
    }
    f
}

/// Installs the global subscriber (once; later calls are no-ops).
pub fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(with_quiet_dependencies(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
