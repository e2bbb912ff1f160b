//! `switchboard audit`: the newest records of the audit trail (who changed what, through which
//! node, and why).

use clap::Args;
use switchboard_proto::api::AuditList;

use super::Api;
use super::Connection;
use super::CtlError;
use super::output;
use super::output::Output;
use super::output::Table;

/// The audit trail, newest first.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only records about this registration id.
    #[arg(long)]
    pub id: Option<String>,
    /// Most records to show (1 to 5000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub limit: u32,
}

pub async fn run(args: AuditArgs) -> Result<(), CtlError> {
    let api = Api::connect(&args.connection)?;
    let limit = args.limit.to_string();
    let query = super::query([("limit", Some(limit.as_str())), ("id", args.id.as_deref())]);
    let page = api.get(&format!("/v1/audit?{query}")).await?.body;
    if args.connection.output == Output::Json {
        return output::json(&page);
    }
    let list: AuditList = serde_json::from_value(page)?;
    let rows: Vec<Vec<String>> = list
        .records
        .iter()
        .map(|record| {
            vec![
                record.seq.to_string(),
                output::time(record.at_ms),
                record.node.to_string(),
                output::or_dash(record.principal.as_ref()),
                output::name_of(&record.action),
                record.contract.clone(),
                output::or_dash(record.id),
                output::or_dash(record.address.as_ref()),
            ]
        })
        .collect();
    Table::new(vec!["SEQ", "TIME", "NODE", "PRINCIPAL", "ACTION", "CONTRACT", "ID", "ADDRESS"]).print(&rows)
}
