//! Logging: tracing-subscriber, text or JSON lines, filtered by `CONDUIT_LOG` / `log.level`.
//! What is logged is decided at each call site: ids, names, sizes, timings — never a body, a
//! prompt, a completion or a key (the tests grep the logs for planted canaries).

use crate::config::LogConfig;

/// Installs the global subscriber (once; later calls are no-ops).
pub fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
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
