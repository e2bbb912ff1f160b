//! Logging setup: structured `tracing` events to stderr, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

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

/// The innermost cause of an error ("Connection refused (os error 111)"), which is what an
/// operator needs; the outer layers mostly repeat what was being done.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Lets one event through per interval and counts the ones it held back, for warnings a peer or
/// an attacker could otherwise repeat as fast as it likes.
#[derive(Debug)]
pub struct RateLimit {
    every_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            last_ms: std::sync::atomic::AtomicU64::new(0),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(events held back since the last one let through)` when this one may be logged.
    pub fn check(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.every_ms
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;
    use super::root_cause;

    #[derive(Debug, thiserror::Error)]
    #[error("outer layer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_root_cause_is_the_innermost_error() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(root_cause(&Outer(refused)), "connection refused");
        assert_eq!(root_cause(&std::fmt::Error), "an error occurred when formatting an argument");
    }

    #[test]
    fn a_rate_limit_lets_the_first_through_and_counts_the_rest() {
        let limit = RateLimit::new(std::time::Duration::from_secs(3600));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        assert_eq!(limit.held.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
