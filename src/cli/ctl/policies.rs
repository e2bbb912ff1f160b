//! `switchboard policies get|set`: the routing policy of each contract.

use std::path::PathBuf;

use clap::Args;
use clap::Subcommand;
use clap::ValueEnum;
use reqwest::Method;
use serde_json::Value;
use switchboard_proto::api::PolicyEntry;
use switchboard_proto::registry::CheckKind;
use switchboard_proto::registry::PolicyKind;
use switchboard_proto::registry::PolicyRequest;

use super::Api;
use super::Connection;
use super::CtlError;
use super::output;
use super::output::Output;
use super::output::Table;

/// Routing policies per contract: show and set.
#[derive(Debug, Args)]
pub struct PoliciesArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Every contract's policy (contracts without one route round_robin, not idempotent). With
    /// `--output json`: `{"policies": [...]}` as the server shows them.
    Get {
        /// Only this contract, `NAMESPACE/NAME`.
        #[arg(long)]
        contract: Option<String>,
    },
    /// Sets a contract's policy, replacing the one it had. Needs an admin token.
    Set(SetArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["contract", "file"]))]
pub struct SetArgs {
    /// The contract, `NAMESPACE/NAME`.
    #[arg(long, value_parser = super::split_contract, requires = "policy")]
    pub contract: Option<(String, String)>,
    /// The whole request as JSON (`{"contract_namespace", "contract_name", "policy", ...}`, as
    /// `PUT /v1/policies` takes it) instead of the flags.
    #[arg(long, conflicts_with_all = ["contract", "policy", "hash_header", "idempotent", "keep_to", "panic_threshold", "check"])]
    pub file: Option<PathBuf>,
    /// How an endpoint is picked.
    #[arg(long, value_enum)]
    pub policy: Option<Kind>,
    /// The request header `consistent_hash` hashes (required by it, refused by the others).
    #[arg(long)]
    pub hash_header: Option<String>,
    /// A request that reached a failing endpoint may be retried on another one.
    #[arg(long)]
    pub idempotent: bool,
    /// Forward a SOAP message's WS-Addressing `To` as the client wrote it (default: set it to the
    /// endpoint's address).
    #[arg(long)]
    pub keep_to: bool,
    /// Below this share of passing endpoints (0 to 100), route to all of them [server default: 50].
    #[arg(long)]
    pub panic_threshold: Option<u8>,
    /// The active check of the contract's registrations that name none.
    #[command(flatten)]
    pub check: super::CheckArgs,
}

/// The policy names as the API spells them.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Kind {
    RoundRobin,
    Weighted,
    LeastOutstanding,
    ConsistentHash,
}

pub async fn run(args: PoliciesArgs) -> Result<(), CtlError> {
    let api = Api::connect(&args.connection)?;
    let output = args.connection.output;
    match args.verb {
        Verb::Get { contract } => get(&api, output, contract.as_deref()).await,
        Verb::Set(set) => {
            let request = request(set)?;
            let answer = api.send(Method::PUT, "/v1/policies", Some(&request)).await?;
            if output == Output::Json {
                return output::json(&answer.body);
            }
            let entry: PolicyEntry = serde_json::from_value(answer.body)?;
            table(&[entry])
        }
    }
}

/// The request of `policies set`, from the file or the flags.
fn request(set: SetArgs) -> Result<PolicyRequest, CtlError> {
    if let Some(path) = set.file {
        let text = std::fs::read(&path).map_err(|err| CtlError::Usage(format!("--file {}: {err}", path.display())))?;
        return serde_json::from_slice(&text)
            .map_err(|err| CtlError::Usage(format!("--file {}: not a policy request: {err}", path.display())));
    }
    let (Some((contract_namespace, contract_name)), Some(kind)) = (set.contract, set.policy) else {
        return Err(CtlError::Usage("--contract and --policy, or --file, are required".into()));
    };
    Ok(PolicyRequest {
        contract_namespace,
        contract_name,
        policy: match kind {
            Kind::RoundRobin => PolicyKind::RoundRobin,
            Kind::Weighted => PolicyKind::Weighted,
            Kind::LeastOutstanding => PolicyKind::LeastOutstanding,
            Kind::ConsistentHash => PolicyKind::ConsistentHash,
        },
        hash_header: set.hash_header,
        idempotent: set.idempotent,
        rewrite_to: set.keep_to.then_some(false),
        check: set.check.check(),
        panic_threshold_percent: set.panic_threshold,
    })
}

/// Every page of policies; only `contract`'s when given.
async fn get(api: &Api, output: Output, contract: Option<&str>) -> Result<(), CtlError> {
    let wanted = contract.map(|key| {
        let (namespace, name) = key.rsplit_once('/').unwrap_or(("", key));
        format!("{}/{name}", namespace.trim_end_matches('/'))
    });
    let mut policies = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = super::query([("limit", Some("5000")), ("cursor", cursor.as_deref())]);
        let page = api.get(&format!("/v1/policies?{query}")).await?.body;
        let entries = page["policies"].as_array().cloned().unwrap_or_default();
        policies.extend(entries.into_iter().filter(|p| wanted.as_ref().is_none_or(|key| p["contract"] == **key)));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if output == Output::Json {
        return output::json(&serde_json::json!({ "policies": policies }));
    }
    let entries: Vec<PolicyEntry> = serde_json::from_value(Value::Array(policies))?;
    table(&entries)
}

fn table(entries: &[PolicyEntry]) -> Result<(), CtlError> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let policy = &entry.policy;
            let check = policy.check.as_ref().map(|check| match check.kind {
                CheckKind::Http => format!("http:{} every {} ms", check.path, check.interval_ms),
                kind => format!("{} every {} ms", output::name_of(&kind), check.interval_ms),
            });
            vec![
                entry.contract.clone(),
                output::name_of(&policy.kind),
                output::or_dash(policy.hash_header.as_ref()),
                policy.idempotent.to_string(),
                policy.rewrite_to.to_string(),
                format!("{}%", policy.panic_threshold_percent),
                output::or_dash(check),
            ]
        })
        .collect();
    Table::new(vec!["CONTRACT", "POLICY", "HASH HEADER", "IDEMPOTENT", "REWRITE TO", "PANIC BELOW", "CHECK"])
        .print(&rows)
}
