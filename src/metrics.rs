//! Process-wide counters, exposed in the Prometheus text format at `GET /metrics` on the control
//! API. Counters only carry fixed labels (error codes, limit names), never contract names or
//! addresses, so the endpoint reveals nothing about the registrations. The per-contract health
//! families ([`render_contract_health`]) are served apart, behind the read scope.

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

/// Declares a closed set of label values: an enum, its label strings and the list of all of
/// them, so that a counter is chosen by a variant (a misspelt one does not compile) and every
/// value is exported, even at zero.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant,)+ }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant,)+];

            pub const fn label(self) -> &'static str {
                match self { $(Self::$variant => $label,)+ }
            }
        }
    };
}

labels! {
    /// Error codes of the data plane (also the `code` of its error answers).
    RouteError {
        NoContract => "no_contract",
        InvalidAction => "invalid_action",
        InvalidHeader => "invalid_header",
        InvalidEnvelope => "invalid_envelope",
        EnvelopeHeaderTooLarge => "envelope_header_too_large",
        ContractNotFound => "contract_not_found",
        NoEndpointReachable => "no_endpoint_reachable",
        EndpointFailed => "endpoint_failed",
        EndpointTimeout => "endpoint_timeout",
        BodyTooLarge => "body_too_large",
        RequestBodyError => "request_body_error",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        RoutingLoop => "routing_loop",
        EndpointOverloaded => "endpoint_overloaded",
        HeadersTooLarge => "headers_too_large",
        EnvelopeTimeout => "envelope_timeout",
        AmbiguousContract => "ambiguous_contract",
    }
}

labels! {
    /// The rules that decide a request's contract (`X-Switchboard-Contract-Source`).
    RouteRule {
        SoapAction => "soapaction",
        ContentTypeAction => "content-type-action",
        WsAddressing => "ws-addressing",
        Header => "x-switchboard-contract",
        Path => "path",
        BodyNamespace => "body-namespace",
        BodyOperation => "body-operation",
    }
}

labels! {
    /// Limits whose hits are counted.
    Limit {
        Connections => "connections",
        EndpointRequests => "endpoint_requests",
        RegistrationsPerToken => "registrations_per_token",
        RequestBody => "request_body",
        EnvelopeHeader => "envelope_header",
        RequestHeaders => "request_headers",
        Registry => "registry",
    }
}

labels! {
    /// The listeners of a node.
    ListenerKind {
        DataPlane => "data_plane",
        ControlApi => "control_api",
        Peer => "peer",
        Health => "health",
    }
}

labels! {
    /// How a probe ended.
    ProbeResult {
        Passed => "passed",
        Failed => "failed",
    }
}

labels! {
    /// The health transitions a prober wrote, by the new status.
    Transition {
        Critical => "critical",
        Passing => "passing",
    }
}

labels! {
    /// What a second node's probe said before a critical transition.
    Confirmation {
        Confirmed => "confirmed",
        Reached => "reached",
        Unavailable => "unavailable",
    }
}

/// Upper bounds of the probe latency histogram, in seconds.
const PROBE_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A latency histogram with fixed buckets (cumulative when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; PROBE_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = PROBE_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(
            out,
            "# HELP switchboard_{name} {help}
# TYPE switchboard_{name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in PROBE_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "switchboard_{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "switchboard_{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "switchboard_{name}_sum {sum}\nswitchboard_{name}_count {count}");
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(std::sync::atomic::AtomicI64);

impl Gauge {
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub routed: Counter,
    route_errors: Vec<Counter>,
    decisions: Vec<Counter>,
    pub broadcasts: Counter,
    pub failovers: Counter,
    pub ejections: Counter,
    limit_hits: Vec<Counter>,
    pub auth_refused: Counter,
    pub leases_expired: Counter,
    pub audit_sink_dropped: Counter,
    open_connections: Vec<Gauge>,
    /// 1 while this node knows a leader, 0 while it does not (it routes from its last view).
    pub leader_known: Gauge,
    /// Requests routed while too few of their contract's endpoints were passing.
    pub health_panics: Counter,
    probes: Vec<Counter>,
    pub probe_latency: Histogram,
    transitions: Vec<Counter>,
    confirmations: Vec<Counter>,
    /// Probes that started later than an interval after they were due (the limits cannot keep up).
    pub probes_late: Counter,
    /// Registrations removed by `deregister_after_ms`, by this node as leader.
    pub deregistered: Counter,
    /// Endpoints this node probes now.
    pub probed_endpoints: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            routed: Counter::default(),
            route_errors: RouteError::ALL.iter().map(|_| Counter::default()).collect(),
            decisions: RouteRule::ALL.iter().map(|_| Counter::default()).collect(),
            broadcasts: Counter::default(),
            failovers: Counter::default(),
            ejections: Counter::default(),
            limit_hits: Limit::ALL.iter().map(|_| Counter::default()).collect(),
            auth_refused: Counter::default(),
            leases_expired: Counter::default(),
            audit_sink_dropped: Counter::default(),
            open_connections: ListenerKind::ALL.iter().map(|_| Gauge::default()).collect(),
            leader_known: Gauge::default(),
            health_panics: Counter::default(),
            probes: ProbeResult::ALL.iter().map(|_| Counter::default()).collect(),
            probe_latency: Histogram::default(),
            transitions: Transition::ALL.iter().map(|_| Counter::default()).collect(),
            confirmations: Confirmation::ALL.iter().map(|_| Counter::default()).collect(),
            probes_late: Counter::default(),
            deregistered: Counter::default(),
            probed_endpoints: Gauge::default(),
        }
    }
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    pub fn route_error(&self, code: RouteError) {
        self.route_errors[code as usize].inc();
    }

    /// A request's contract was decided by `rule`.
    pub fn decided_by(&self, rule: RouteRule) {
        self.decisions[rule as usize].inc();
    }

    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].inc();
    }

    /// Connections of a listener that spoke and hold one of its slots.
    pub fn open_connections(&self, listener: ListenerKind) -> &Gauge {
        &self.open_connections[listener as usize]
    }

    pub fn probe(&self, result: ProbeResult) {
        self.probes[result as usize].inc();
    }

    pub fn probes(&self, result: ProbeResult) -> u64 {
        self.probes[result as usize].get()
    }

    pub fn transition(&self, status: Transition, n: u64) {
        self.transitions[status as usize].add(n);
    }

    pub fn confirmation(&self, outcome: Confirmation) {
        self.confirmations[outcome as usize].inc();
    }

    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit as usize].get()
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
            RouteError::ALL.iter().zip(&self.route_errors).map(|(c, n)| (Some(("code", c.label())), n.get())).collect();
        counter("route_errors_total", "Requests the data plane answered with an error, by code.", &errors);
        let decisions: Vec<_> =
            RouteRule::ALL.iter().zip(&self.decisions).map(|(r, n)| (Some(("rule", r.label())), n.get())).collect();
        counter("route_decisions_total", "Requests whose contract was found, by the rule that decided it.", &decisions);
        counter("broadcasts_total", "Broadcast requests.", &[(None, self.broadcasts.get())]);
        counter("failovers_total", "Tries moved to another endpoint.", &[(None, self.failovers.get())]);
        counter("ejections_total", "Endpoints ejected by outlier detection.", &[(None, self.ejections.get())]);
        let limits: Vec<_> =
            Limit::ALL.iter().zip(&self.limit_hits).map(|(l, n)| (Some(("limit", l.label())), n.get())).collect();
        counter("limit_hits_total", "Requests or connections refused by a limit.", &limits);
        counter(
            "auth_refused_total",
            "Requests refused for a missing, invalid or insufficient token.",
            &[(None, self.auth_refused.get())],
        );
        counter("leases_expired_total", "Leases expired by this node as leader.", &[(None, self.leases_expired.get())]);
        counter(
            "audit_sink_dropped_total",
            "Audit records not written to --audit-log because it fell behind (the trail keeps them).",
            &[(None, self.audit_sink_dropped.get())],
        );
        let probes: Vec<_> =
            ProbeResult::ALL.iter().zip(&self.probes).map(|(r, n)| (Some(("result", r.label())), n.get())).collect();
        counter("health_probes_total", "Active health probes this node ran, by result.", &probes);
        let transitions: Vec<_> = Transition::ALL
            .iter()
            .zip(&self.transitions)
            .map(|(t, n)| (Some(("status", t.label())), n.get()))
            .collect();
        counter(
            "health_transitions_total",
            "Health transitions this node's probes wrote, by new status.",
            &transitions,
        );
        let confirmations: Vec<_> = Confirmation::ALL
            .iter()
            .zip(&self.confirmations)
            .map(|(c, n)| (Some(("result", c.label())), n.get()))
            .collect();
        counter(
            "health_confirmations_total",
            "Second probes asked of another node before a critical transition, by what they found.",
            &confirmations,
        );
        counter(
            "health_probes_late_total",
            "Probes started more than an interval late: the probe limits cannot meet the configured intervals.",
            &[(None, self.probes_late.get())],
        );
        counter(
            "health_panic_routed_total",
            "Requests routed to every endpoint because fewer than the panic threshold were passing.",
            &[(None, self.health_panics.get())],
        );
        counter(
            "health_deregistered_total",
            "Registrations removed by deregister_after_ms, by this node as leader.",
            &[(None, self.deregistered.get())],
        );
        self.probe_latency.render(&mut out, "health_probe_duration_seconds", "Duration of active health probes.");
        let _ = writeln!(
            out,
            "# HELP switchboard_health_probed_endpoints Endpoints this node probes.\n# TYPE switchboard_health_probed_endpoints gauge\nswitchboard_health_probed_endpoints {}",
            self.probed_endpoints.get()
        );
        let open: Vec<String> = ListenerKind::ALL
            .iter()
            .map(|l| {
                format!(
                    "switchboard_open_connections{{listener=\"{}\"}} {}",
                    l.label(),
                    self.open_connections(*l).get()
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "# HELP switchboard_open_connections Connections that hold a slot of a listener.\n# TYPE switchboard_open_connections gauge\n{}",
            open.join("\n")
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_leader_known Whether this node knows a leader (0: it routes from its last view, writes wait).\n# TYPE switchboard_leader_known gauge\nswitchboard_leader_known {}",
            self.leader_known.get()
        );
        out
    }
}

/// The freshness of a node's routing view, in the Prometheus text format: how long ago a leader
/// last confirmed it (`+Inf` before the first time) and whether the data plane is ready.
pub fn render_view(confirmed_ago: Option<std::time::Duration>, data_ready: bool) -> String {
    let age = confirmed_ago.map_or_else(|| "+Inf".to_owned(), |age| format!("{:.3}", age.as_secs_f64()));
    format!(
        "# HELP switchboard_view_age_seconds How long ago a leader last confirmed the view this node routes from.\n\
         # TYPE switchboard_view_age_seconds gauge\nswitchboard_view_age_seconds {age}\n\
         # HELP switchboard_data_ready Whether the data plane reports ready (GET /health/ready?plane=data).\n\
         # TYPE switchboard_data_ready gauge\nswitchboard_data_ready {}\n",
        u8::from(data_ready)
    )
}

/// Contracts that get series of their own in [`render_contract_health`]; the rest are summed
/// under `contract="other"` (a contract key always holds a `/`, so no contract is named that).
pub const MAX_CONTRACT_SERIES: usize = 1000;

pub use switchboard_proto::api::ContractHealth;

/// Escapes a label value for the Prometheus text format.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The per-contract health families in the Prometheus text format, for `rows` sorted by
/// contract: the first [`MAX_CONTRACT_SERIES`] contracts by name, the rest summed as `other`.
pub fn render_contract_health(rows: &[ContractHealth]) -> String {
    let (named, folded) = rows.split_at(rows.len().min(MAX_CONTRACT_SERIES));
    let other = (!folded.is_empty()).then(|| {
        folded.iter().fold(ContractHealth { contract: "other".into(), ..Default::default() }, |mut sum, row| {
            sum.endpoints += row.endpoints;
            sum.passing += row.passing;
            sum.critical += row.critical;
            sum.probes += row.probes;
            sum.probe_failures += row.probe_failures;
            sum.transitions_written += row.transitions_written;
            sum
        })
    });
    let series: Vec<(String, &ContractHealth)> =
        named.iter().chain(other.as_ref()).map(|row| (label_value(&row.contract), row)).collect();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(&ContractHealth) -> Vec<(&str, u64)>| {
        let _ = writeln!(out, "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} {kind}");
        for (contract, row) in &series {
            for (extra, sample) in value(row) {
                let _ = writeln!(out, "switchboard_{name}{{contract=\"{contract}\"{extra}}} {sample}");
            }
        }
    };
    family("health_contract_endpoints", "gauge", "Endpoints of a contract by committed health status.", &|row| {
        vec![(",status=\"passing\"", row.passing as u64), (",status=\"critical\"", row.critical as u64)]
    });
    family("health_contract_probes_total", "counter", "Probes this node ran for a contract.", &|row| {
        vec![("", row.probes)]
    });
    family(
        "health_contract_probe_failures_total",
        "counter",
        "Probes this node ran for a contract that failed.",
        &|row| vec![("", row.probe_failures)],
    );
    family(
        "health_contract_transitions_total",
        "counter",
        "Health transitions of a contract's endpoints that this node wrote.",
        &|row| vec![("", row.transitions_written)],
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_health_contract_panic Whether a contract routes to every endpoint because fewer than its panic threshold pass.\n# TYPE switchboard_health_contract_panic gauge"
    );
    // Only named contracts: whether "other" is in panic has no single answer.
    for (contract, row) in series.iter().take(named.len()) {
        let _ = writeln!(out, "switchboard_health_contract_panic{{contract=\"{contract}\"}} {}", u8::from(row.panic));
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_health_contracts_in_panic Contracts routing to every endpoint because fewer than their panic threshold pass.\n# TYPE switchboard_health_contracts_in_panic gauge\nswitchboard_health_contracts_in_panic {}",
        rows.iter().filter(|row| row.panic).count()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(contract: &str, passing: usize, critical: usize, panic: bool) -> ContractHealth {
        ContractHealth {
            contract: contract.into(),
            endpoints: passing + critical,
            passing,
            critical,
            panic_threshold_percent: 50,
            panic,
            probes: 10,
            probe_failures: 3,
            transitions_written: 1,
        }
    }

    #[test]
    fn contract_health_names_each_contract_escapes_labels_and_folds_the_rest_into_other() {
        let mut rows = vec![row("urn:q\"uote\\/I", 1, 0, false), row("urn:x/IPanic", 0, 2, true)];
        let text = render_contract_health(&rows);
        assert!(
            text.contains(
                "switchboard_health_contract_endpoints{contract=\"urn:q\\\"uote\\\\/I\",status=\"passing\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("switchboard_health_contract_panic{contract=\"urn:x/IPanic\"} 1\n"), "{text}");
        assert!(
            text.contains("switchboard_health_contract_probe_failures_total{contract=\"urn:x/IPanic\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("switchboard_health_contracts_in_panic 1\n"), "{text}");
        assert!(!text.contains("other"), "{text}");

        rows = (0..MAX_CONTRACT_SERIES + 2)
            .map(|i| row(&format!("urn:n/I{i:05}"), 1, 1, i >= MAX_CONTRACT_SERIES))
            .collect();
        let text = render_contract_health(&rows);
        let other = |name: &str| {
            text.lines().filter(|l| l.starts_with(name) && l.contains("contract=\"other\"")).collect::<Vec<_>>()
        };
        assert_eq!(
            other("switchboard_health_contract_endpoints{"),
            [
                "switchboard_health_contract_endpoints{contract=\"other\",status=\"passing\"} 2",
                "switchboard_health_contract_endpoints{contract=\"other\",status=\"critical\"} 2",
            ]
        );
        assert_eq!(
            other("switchboard_health_contract_probes_total{"),
            ["switchboard_health_contract_probes_total{contract=\"other\"} 20"]
        );
        assert!(other("switchboard_health_contract_panic{").is_empty(), "panic is per named contract");
        assert!(text.contains("switchboard_health_contracts_in_panic 2\n"), "the folded contracts' panics still count");
        let named = text.lines().filter(|l| l.starts_with("switchboard_health_contract_panic{")).count();
        assert_eq!(named, MAX_CONTRACT_SERIES);
    }

    #[test]
    fn every_label_is_exported_and_counts() {
        let metrics = Metrics::default();
        for &limit in Limit::ALL {
            metrics.limit_hit(limit);
        }
        metrics.route_error(RouteError::HeadersTooLarge);
        metrics.decided_by(RouteRule::BodyNamespace);
        let text = metrics.render();
        for limit in Limit::ALL {
            assert!(text.contains(&format!("switchboard_limit_hits_total{{limit=\"{}\"}} 1", limit.label())), "{text}");
        }
        assert!(text.contains("switchboard_route_errors_total{code=\"headers_too_large\"} 1"));
        assert!(text.contains("switchboard_route_errors_total{code=\"no_contract\"} 0"));
        assert!(text.contains("switchboard_route_decisions_total{rule=\"body-namespace\"} 1"), "{text}");
        assert!(text.contains("switchboard_route_decisions_total{rule=\"path\"} 0"), "{text}");
    }
}
