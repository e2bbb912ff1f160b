//! Logging setup: structured `tracing` events to stderr, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Info for Switchboard; openraft's warnings, except the per-retry replication errors that repeat
/// twice a second while a peer is down (the cluster view shows those peers).
pub const DEFAULT_FILTER: &str =
    "info,openraft=warn,openraft::engine::handler::replication_handler=error,openraft::replication=error";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
