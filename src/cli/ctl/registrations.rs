//! `switchboard registrations list|get|register|unregister|drain`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use clap::Subcommand;
use clap::ValueEnum;
use reqwest::Method;
use serde_json::Value;
use serde_json::json;
use switchboard_proto::api::RegistrationList;
use switchboard_proto::api::RegistrationView;
use switchboard_proto::registry::Registration;
use switchboard_proto::registry::RegistrationRequest;

use super::Api;
use super::Connection;
use super::CtlError;
use super::output;
use super::output::Output;
use super::output::Table;

/// Registrations: list, show, register, unregister, drain.
#[derive(Debug, Args)]
pub struct RegistrationsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Every registration with its check and health, in id order, printed page by page as the
    /// pages arrive. With `--output json`: JSON lines, one registration (as the server shows it)
    /// a line.
    List(ListArgs),
    /// One registration with its check and health.
    Get {
        /// The registration's id (32 hex digits).
        id: String,
    },
    /// Registers an endpoint (or refreshes its options when it is registered already).
    Register(RegisterArgs),
    /// Removes a registration, named by its id or by its address and contract.
    Unregister(UnregisterArgs),
    /// Stops routing new requests to a registration; requests in flight continue.
    Drain {
        /// The registration's id (32 hex digits).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this contract, `NAMESPACE/NAME`.
    #[arg(long, value_parser = super::split_contract)]
    pub contract: Option<(String, String)>,
    /// Only registrations whose committed health is this.
    #[arg(long, value_enum)]
    pub health: Option<Health>,
    /// Read what is committed cluster-wide at the time of the call (linearizable), not the
    /// answering node's replica.
    #[arg(long)]
    pub consistent: bool,
    /// Registrations per page.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub page_size: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Health {
    Passing,
    Critical,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The endpoint's absolute http(s) URL.
    #[arg(long)]
    pub address: String,
    /// The contract it serves, `NAMESPACE/NAME`.
    #[arg(long, value_parser = super::split_contract)]
    pub contract: (String, String),
    /// A lease: the registration is removed unless renewed within this (`10s`); none: until
    /// unregistered.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Share of the traffic under the `weighted` policy (1 to 1000, default 1).
    #[arg(long)]
    pub weight: Option<u32>,
    /// Metadata `key=value`; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    #[command(flatten)]
    pub check: super::CheckArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("by").required(true).args(["id", "address"]))]
pub struct UnregisterArgs {
    /// The registration's id.
    pub id: Option<String>,
    /// The endpoint's address (with `--contract`), as the seed's `Unregister` names it.
    #[arg(long, requires = "contract")]
    pub address: Option<String>,
    /// The contract, `NAMESPACE/NAME` (with `--address`).
    #[arg(long, value_parser = super::split_contract, requires = "address")]
    pub contract: Option<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

pub async fn run(args: RegistrationsArgs) -> Result<(), CtlError> {
    let api = Api::connect(&args.connection)?;
    let output = args.connection.output;
    match args.verb {
        Verb::List(list) => self::list(&api, output, &list).await,
        Verb::Get { id } => show(output, &api.get(&format!("/v1/registrations/{}", super::segment(&id))).await?.body),
        Verb::Register(register) => {
            let (contract_namespace, contract_name) = register.contract;
            let request = RegistrationRequest {
                address: register.address,
                contract_name,
                contract_namespace,
                ttl_ms: register.ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
                weight: register.weight,
                metadata: register.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                check: register.check.check(),
            };
            let answer = api.send(Method::POST, "/v1/registrations", Some(&request)).await?;
            let done = if answer.status == 201 { "registered" } else { "already registered; options refreshed" };
            changed(output, &answer.body, done)
        }
        Verb::Unregister(unregister) => {
            let answer = match (unregister.id, unregister.address, unregister.contract) {
                (Some(id), _, _) => {
                    api.send(Method::DELETE, &format!("/v1/registrations/{}", super::segment(&id)), None::<&()>).await?
                }
                (None, Some(address), Some((namespace, name))) => {
                    let body = json!({ "address": address, "contract_namespace": namespace, "contract_name": name });
                    api.send(Method::POST, "/v1/registrations/unregister", Some(&body)).await?
                }
                _ => {
                    return Err(CtlError::Usage(
                        "name the registration by its id or by --address and --contract".into(),
                    ));
                }
            };
            changed(output, &answer.body, "unregistered")
        }
        Verb::Drain { id } => {
            let path = format!("/v1/registrations/{}/drain", super::segment(&id));
            changed(output, &api.send(Method::POST, &path, None::<&()>).await?.body, "draining")
        }
    }
}

/// Walks the pages, printing each as it arrives.
async fn list(api: &Api, output: Output, args: &ListArgs) -> Result<(), CtlError> {
    let mut table = Table::new(vec!["ID", "CONTRACT", "ADDRESS", "HEALTH", "STATE", "WEIGHT", "TTL"]);
    let page_size = args.page_size.to_string();
    let (namespace, name) = args.contract.clone().unzip();
    let health = args.health.map(|h| match h {
        Health::Passing => "passing",
        Health::Critical => "critical",
    });
    let mut cursor: Option<String> = None;
    loop {
        let query = super::query([
            ("contract_namespace", namespace.as_deref()),
            ("contract_name", name.as_deref()),
            ("health", health),
            ("consistency", args.consistent.then_some("linearizable")),
            ("limit", Some(page_size.as_str())),
            ("cursor", cursor.as_deref()),
        ]);
        let page = api.get(&format!("/v1/registrations?{query}")).await?.body;
        match output {
            Output::Json => {
                let registrations = page["registrations"].as_array().map(Vec::as_slice).unwrap_or_default();
                output::json_lines(registrations)?;
            }
            Output::Table => {
                let typed: RegistrationList = serde_json::from_value(page.clone())?;
                let rows: Vec<Vec<String>> = typed.registrations.iter().map(row).collect();
                table.print_part(&rows)?;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}

fn row(view: &RegistrationView) -> Vec<String> {
    vec![
        view.id.to_string(),
        contract(view),
        view.address.to_string(),
        output::name_of(&view.health.status),
        output::name_of(&view.state),
        view.weight.to_string(),
        ttl(view),
    ]
}

fn contract(registration: &Registration) -> String {
    format!("{}/{}", registration.contract_namespace.trim_end_matches('/'), registration.contract_name)
}

fn ttl(registration: &Registration) -> String {
    registration
        .ttl_ms
        .map_or_else(|| "-".to_owned(), |ms| humantime::format_duration(Duration::from_millis(ms)).to_string())
}

/// The fields of a registration, one a line.
fn fields(registration: &Registration) -> Vec<(&'static str, String)> {
    let metadata: Vec<String> = registration.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        ("id", registration.id.to_string()),
        ("contract", contract(registration)),
        ("address", registration.address.to_string()),
        ("state", output::name_of(&registration.state)),
        ("weight", registration.weight.to_string()),
        ("ttl", ttl(registration)),
        ("metadata", if metadata.is_empty() { "-".to_owned() } else { metadata.join(", ") }),
        ("epoch", registration.epoch.to_string()),
        ("registered", output::time(registration.registered_at_ms)),
        ("owner", output::or_dash(registration.owner.as_ref())),
    ]
}

fn show(output: Output, body: &Value) -> Result<(), CtlError> {
    if output == Output::Json {
        return output::json(body);
    }
    let view: RegistrationView = serde_json::from_value(body.clone())?;
    let mut lines = fields(&view);
    lines.push(("health", output::name_of(&view.health.status)));
    lines.push(("health since", output::time(view.health.since)));
    if !view.health.output.is_empty() {
        lines.push(("health output", view.health.output.clone()));
    }
    lines.push(("checked by", output::or_dash(view.health.checked_by)));
    let check = &view.check;
    let mut probe = output::name_of(&check.kind);
    if check.kind == switchboard_proto::registry::CheckKind::Http {
        probe.push_str(&format!(" {}", check.path));
    }
    lines.push((
        "check",
        format!(
            "{probe}, every {} ms, timeout {} ms, rise {}, fall {}",
            check.interval_ms, check.timeout_ms, check.rise, check.fall
        ),
    ));
    output::record(&lines)
}

/// A registration a write answered, with what became of it.
fn changed(output: Output, body: &Value, done: &str) -> Result<(), CtlError> {
    if output == Output::Json {
        return output::json(body);
    }
    let registration: Registration = serde_json::from_value(body.clone())?;
    let mut lines = vec![("result", done.to_owned())];
    lines.extend(fields(&registration));
    output::record(&lines)
}
