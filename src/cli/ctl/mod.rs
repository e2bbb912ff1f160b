//! The verbs that operate a running cluster through its control API (and, for `explain`, its
//! data plane): `registrations`, `cluster`, `policies`, `audit`, `explain`, `watch`. Each verb group is one
//! file; [`output`] prints tables and JSON. Calls go through `switchboard_client::ControlClient`,
//! failing over between the `--addr` routers.
//!
//! Every failure ends as one [`CtlError`], printed as one line on stderr and mapped once to the
//! exit code ([`CtlError::exit_code`]): 1 the cluster refused, 3 no router answered, 2 bad input
//! (clap answers its own usage errors with 2 as well).

pub mod audit;
pub mod cluster;
pub mod explain;
pub mod output;
pub mod policies;
pub mod registrations;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde::Serialize;
use switchboard_client::Answer;
use switchboard_client::ClientError;
use switchboard_client::ControlClient;
use switchboard_proto::registry::Check;
use switchboard_proto::registry::CheckKind;

use self::output::Output;

/// Flags every verb takes (also after the verb: `switchboard cluster status --addr ...`).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Control API URL(s), comma-separated; a router that does not answer is skipped for the next.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_ADDR",
        default_value = "http://127.0.0.1:7011",
        value_delimiter = ','
    )]
    pub addr: Vec<String>,
    /// API token, sent as `Authorization: Bearer` (none for a cluster in dev mode; there, cluster
    /// add-node and remove-node take the cluster secret).
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the certificate authority that signed the routers' HTTPS certificates
    /// (needed for `https://` addresses).
    #[arg(long, global = true, env = "SWITCHBOARD_CA")]
    pub ca: Option<PathBuf>,
    /// How answers are printed: aligned columns for people, or the server's JSON for scripts
    /// (one document; `registrations list` prints JSON lines, one registration a line).
    #[arg(long, global = true, env = "SWITCHBOARD_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Longest wait for one answer (`10s`, `500ms`); adding a node waits until it caught up.
    #[arg(long, global = true, env = "SWITCHBOARD_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

/// An active health check as flags (for a registration, or a contract's policy).
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The active health check: `tcp`, `none` or `http:/PATH` [default: the contract policy's,
    /// else the cluster's].
    #[arg(long, value_name = "KIND", value_parser = check_kind)]
    pub check: Option<(CheckKind, Option<String>)>,
    /// Time between probes of that check (`2s`).
    #[arg(long, requires = "check", value_parser = humantime::parse_duration)]
    pub check_interval: Option<Duration>,
    /// Deadline of one probe (`1s`).
    #[arg(long, requires = "check", value_parser = humantime::parse_duration)]
    pub check_timeout: Option<Duration>,
}

impl CheckArgs {
    /// The check the flags name, its other fields the server's defaults.
    pub fn check(&self) -> Option<Check> {
        let millis = |duration: Duration| u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        let (kind, path) = self.check.clone()?;
        let defaults = Check::default();
        Some(Check {
            kind,
            path: path.map_or(defaults.path.clone(), Into::into),
            interval_ms: self.check_interval.map_or(defaults.interval_ms, millis),
            timeout_ms: self.check_timeout.map_or(defaults.timeout_ms, millis),
            ..defaults
        })
    }
}

fn check_kind(text: &str) -> Result<(CheckKind, Option<String>), String> {
    match text {
        "tcp" => Ok((CheckKind::Tcp, None)),
        "none" => Ok((CheckKind::None, None)),
        _ => match text.strip_prefix("http:") {
            Some(path) if path.starts_with('/') => Ok((CheckKind::Http, Some(path.to_owned()))),
            _ => Err(format!("{text:?} is not tcp, none or http:/PATH")),
        },
    }
}

/// Why a verb failed; each variant has one exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Input that the flags could not check (a file, a `--meta` without `=`).
    #[error("error: {0}")]
    Usage(String),
    /// A router answered with an error (4xx, or 5xx from every router tried).
    #[error("error: {status} {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// No router answered at any address.
    #[error("error: unreachable: {0}")]
    Unreachable(String),
    /// A router answered something this command cannot read.
    #[error("error: unexpected answer: {0}")]
    Unexpected(String),
    /// Writing the output failed.
    #[error("error: cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Refused { .. } | Self::Unexpected(_) | Self::Output(_) => 1,
            Self::Unreachable(_) => 3,
        }
    }
}

impl From<ClientError> for CtlError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Refused { status, code, message } => Self::Refused { status, code, message },
            ClientError::Unavailable(reason) => Self::Unreachable(reason),
        }
    }
}

impl From<serde_json::Error> for CtlError {
    fn from(err: serde_json::Error) -> Self {
        Self::Unexpected(err.to_string())
    }
}

/// Runs one verb on a current-thread runtime and turns its outcome into the exit code.
pub fn run(verb: impl Future<Output = Result<(), CtlError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&CtlError::Unexpected(format!("cannot start the runtime: {err}"))),
    };
    match runtime.block_on(verb) {
        Ok(()) => ExitCode::SUCCESS,
        // `switchboard registrations list | head`: the reader left; nothing went wrong.
        Err(CtlError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &CtlError) -> ExitCode {
    let line = err.to_string();
    eprintln!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
    ExitCode::from(err.exit_code())
}

/// The control API client of the `--addr` routers.
#[derive(Debug)]
pub struct Api {
    client: ControlClient,
}

impl Api {
    pub fn connect(connection: &Connection) -> Result<Self, CtlError> {
        let roots = roots(connection.ca.as_deref())?;
        let routers = connection.addr.iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
        let client = ControlClient::with_roots(routers, connection.token.as_deref(), connection.timeout, roots)
            .map_err(|err| CtlError::Usage(err.to_string()))?;
        Ok(Self { client })
    }

    /// The client itself (for the event stream).
    pub fn client(&self) -> &ControlClient {
        &self.client
    }

    pub async fn get(&self, path: &str) -> Result<Answer, CtlError> {
        Ok(self.client.send_json(Method::GET, path, None::<&()>).await?)
    }

    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, CtlError> {
        Ok(self.client.send_json(method, path, body).await?)
    }
}

/// The root certificates of `--ca`, if given.
pub fn roots(ca: Option<&std::path::Path>) -> Result<Vec<reqwest::Certificate>, CtlError> {
    let Some(path) = ca else { return Ok(Vec::new()) };
    let pem = std::fs::read(path).map_err(|err| CtlError::Usage(format!("--ca {}: {err}", path.display())))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|err| CtlError::Usage(format!("--ca {}: not a PEM certificate: {err}", path.display())))
}

/// A contract key `NAMESPACE/NAME` split at its last `/` (the namespace's trailing `/` is not
/// part of the key).
pub fn split_contract(key: &str) -> Result<(String, String), String> {
    match key.rsplit_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{key:?} is not a contract key NAMESPACE/NAME")),
    }
}

/// A query string of the pairs whose value is present.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    query.finish()
}

/// A path segment from user input, encoded so that it stays one segment (`/`, `?` and `#`
/// cannot change the path).
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_key_splits_at_its_last_slash_and_needs_both_parts() {
        let split = |key: &str| split_contract(key).ok();
        assert_eq!(split("http://tempuri.org/ICalculator"), Some(("http://tempuri.org".into(), "ICalculator".into())));
        assert_eq!(split("urn:shop/IOrders"), Some(("urn:shop".into(), "IOrders".into())));
        for bad in ["IOrders", "urn:shop/", "/IOrders", ""] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn check_flags_name_a_kind_and_keep_the_servers_defaults_for_the_rest() {
        assert_eq!(check_kind("tcp"), Ok((CheckKind::Tcp, None)));
        assert_eq!(check_kind("http:/healthz"), Ok((CheckKind::Http, Some("/healthz".into()))));
        assert!(check_kind("http:healthz").is_err() && check_kind("udp").is_err());
        let flags = CheckArgs {
            check: Some((CheckKind::Http, Some("/up".into()))),
            check_interval: Some(Duration::from_secs(5)),
            check_timeout: None,
        };
        let check = flags.check().unwrap();
        assert_eq!((check.kind, check.path.as_str(), check.interval_ms), (CheckKind::Http, "/up", 5_000));
        assert_eq!((check.timeout_ms, check.rise, check.fall), (Check::default().timeout_ms, 2, 3));
        assert_eq!(CheckArgs { check: None, check_interval: None, check_timeout: None }.check(), None);
    }

    #[test]
    fn each_failure_has_its_exit_code() {
        let refused =
            CtlError::from(ClientError::Refused { status: 503, code: "no_leader".into(), message: "m".into() });
        assert_eq!((refused.exit_code(), refused.to_string().as_str()), (1, "error: 503 no_leader: m"));
        assert_eq!(CtlError::from(ClientError::Unavailable("x".into())).exit_code(), 3);
        assert_eq!(CtlError::Usage("x".into()).exit_code(), 2);
    }
}
