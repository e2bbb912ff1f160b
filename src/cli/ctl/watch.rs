//! `switchboard watch`: prints each change of the cluster (or of one contract) as it happens,
//! from the event stream, until interrupted. A lost router is replaced by the next `--addr`
//! without a gap or a repeat; a reset (the router no longer holds the stream's position) is
//! printed as such.

use clap::Args;
use switchboard_client::Received;
use switchboard_proto::registry::Event;
use switchboard_proto::registry::EventChange;

use super::Api;
use super::Connection;
use super::CtlError;
use super::output;
use super::output::Output;
use super::output::Table;

/// Prints each change as it happens (Ctrl-C ends it).
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only the changes of this contract (`NAMESPACE/NAME`).
    #[arg(long, value_parser = super::split_contract)]
    pub contract: Option<(String, String)>,
    /// Start after this applied index (an `X-Switchboard-Index`) instead of now.
    #[arg(long)]
    pub after: Option<u64>,
    /// Stop after this many changes (default: never).
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn run(args: WatchArgs) -> Result<(), CtlError> {
    let api = Api::connect(&args.connection)?;
    let contract = args.contract.map(|(namespace, name)| format!("{namespace}/{name}"));
    let mut stream = api.client().events(contract.as_deref(), args.after);
    let mut table = Table::new(vec!["ID", "TIME", "CHANGE", "CONTRACT", "ADDRESS", "DETAIL"]);
    let mut printed = 0;
    while args.count.is_none_or(|count| printed < count) {
        let received = stream.next().await?;
        if args.connection.output == Output::Json {
            let value = match &received {
                Received::Event(event) => serde_json::to_value(event)?,
                Received::Reset { index } => serde_json::json!({ "type": "reset", "index": index }),
            };
            output::json_lines([&value])?;
        } else {
            table.print_part(&[row(&received)])?;
        }
        printed += 1;
    }
    Ok(())
}

fn row(received: &Received) -> Vec<String> {
    let event: &Event = match received {
        Received::Event(event) => event,
        Received::Reset { index } => {
            let detail = format!("events were lost here: reload the list at index {index} or later");
            return vec![index.to_string(), "-".into(), "reset".into(), "-".into(), "-".into(), detail];
        }
    };
    let time = output::or_dash(event.at_ms.map(output::time));
    let (contract, address) = match event.change.registration() {
        Some(registration) => (registration.contract_key().to_string(), registration.address.to_string()),
        None => ("-".into(), "-".into()),
    };
    let detail = match &event.change {
        EventChange::Registered { registration } => format!("weight {}", registration.weight),
        EventChange::HealthCritical { output, .. } => output.clone(),
        EventChange::PolicySet { policy, .. } => output::name_of(&policy.kind),
        EventChange::MembershipChanged { voters, learners } => format!("voters {voters:?}, learners {learners:?}"),
        _ => String::new(),
    };
    let contract = match &event.change {
        EventChange::PolicySet { contract, .. } => contract.to_string(),
        _ => contract,
    };
    vec![event.id.to_string(), time, event.change.kind().to_owned(), contract, address, detail]
}
