//! Process-wide counters, exposed in the Prometheus text format at `GET /metrics` on the control
//! API. Counters only carry fixed labels (error codes, limit names), never contract names or
//! addresses, so the endpoint reveals nothing about the registrations.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Error codes of the data plane, in a fixed order.
pub const ROUTE_ERRORS: [&str; 16] = [
    "no_contract",
    "invalid_action",
    "invalid_header",
    "invalid_envelope",
    "envelope_header_too_large",
    "contract_not_found",
    "no_endpoint_reachable",
    "endpoint_failed",
    "endpoint_timeout",
    "body_too_large",
    "request_body_error",
    "unauthorized",
    "forbidden",
    "routing_loop",
    "endpoint_overloaded",
    "headers_too_large",
];

/// Limits whose hits are counted.
pub const LIMITS: [&str; 5] =
    ["connections", "endpoint_requests", "registrations_per_token", "request_body", "envelope_header"];

#[derive(Debug, Default)]
pub struct Metrics {
    pub routed: Counter,
    pub route_errors: [Counter; ROUTE_ERRORS.len()],
    pub broadcasts: Counter,
    pub failovers: Counter,
    pub ejections: Counter,
    pub limit_hits: [Counter; LIMITS.len()],
    pub auth_refused: Counter,
    pub leases_expired: Counter,
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    pub fn route_error(&self, code: &str) {
        if let Some(i) = ROUTE_ERRORS.iter().position(|c| *c == code) {
            self.route_errors[i].inc();
        }
    }

    pub fn limit_hit(&self, limit: &str) {
        if let Some(i) = LIMITS.iter().position(|l| *l == limit) {
            self.limit_hits[i].inc();
        }
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(Option<(&str, &str)>, u64)]| {
            let _ = writeln!(out, "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} counter");
            for (label, value) in samples {
                match label {
                    Some((key, label)) => {
                        let _ = writeln!(out, "switchboard_{name}{{{key}=\"{label}\"}} {value}");
                    }
                    None => {
                        let _ = writeln!(out, "switchboard_{name} {value}");
                    }
                }
            }
        };
        counter("routed_requests_total", "Requests answered by an endpoint.", &[(None, self.routed.get())]);
        let errors: Vec<_> =
            ROUTE_ERRORS.iter().zip(&self.route_errors).map(|(c, n)| (Some(("code", *c)), n.get())).collect();
        counter("route_errors_total", "Requests the data plane answered with an error, by code.", &errors);
        counter("broadcasts_total", "Broadcast requests.", &[(None, self.broadcasts.get())]);
        counter("failovers_total", "Tries moved to another endpoint.", &[(None, self.failovers.get())]);
        counter("ejections_total", "Endpoints ejected by outlier detection.", &[(None, self.ejections.get())]);
        let limits: Vec<_> = LIMITS.iter().zip(&self.limit_hits).map(|(l, n)| (Some(("limit", *l)), n.get())).collect();
        counter("limit_hits_total", "Requests or connections refused by a limit.", &limits);
        counter(
            "auth_refused_total",
            "Requests refused for a missing, invalid or insufficient token.",
            &[(None, self.auth_refused.get())],
        );
        counter("leases_expired_total", "Leases expired by this node as leader.", &[(None, self.leases_expired.get())]);
        out
    }
}
