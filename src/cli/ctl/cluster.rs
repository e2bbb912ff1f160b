//! `switchboard cluster status|add-node|remove-node`: the answering node's view of the cluster,
//! and membership changes.

use clap::Args;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use serde_json::json;
use switchboard_proto::api::ClusterView;

use super::Api;
use super::Connection;
use super::CtlError;
use super::output;
use super::output::Output;
use super::output::Table;

/// The cluster: status and membership.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// The answering node's view: its role, the leader, the term, its indexes, and every member
    /// with its role, peer address and (on the leader) how far it trails.
    Status,
    /// Adds a node (a learner until it caught up, then a voter); the node must already run with
    /// the cluster secret. Needs an admin token (in dev mode: `--token <cluster secret>`).
    AddNode {
        /// The new node's id.
        id: u64,
        /// Its peer endpoint, `HOST:PORT`.
        peer_addr: String,
    },
    /// Removes a node from the membership. Needs an admin token (in dev mode: the cluster secret).
    RemoveNode {
        /// The node's id.
        id: u64,
    },
}

pub async fn run(args: ClusterArgs) -> Result<(), CtlError> {
    let api = Api::connect(&args.connection)?;
    let answer = match args.verb {
        Verb::Status => api.get("/v1/cluster").await?,
        Verb::AddNode { id, peer_addr } => {
            let body = json!({ "node_id": id, "peer_addr": peer_addr });
            api.send(Method::POST, "/v1/cluster/nodes", Some(&body)).await?
        }
        Verb::RemoveNode { id } => api.send(Method::DELETE, &format!("/v1/cluster/nodes/{id}"), None::<&()>).await?,
    };
    print(args.connection.output, &answer.body)
}

fn print(output: Output, body: &Value) -> Result<(), CtlError> {
    if output == Output::Json {
        return output::json(body);
    }
    let view: ClusterView = serde_json::from_value(body.clone())?;
    output::record(&[
        ("node", view.node_id.to_string()),
        ("role", view.role.clone()),
        ("admitted", view.admitted.to_string()),
        ("leader", output::or_dash(view.leader_id)),
        ("term", view.term.to_string()),
        ("last log index", output::or_dash(view.last_log_index)),
        ("last applied index", output::or_dash(view.last_applied_index)),
        ("snapshot index", output::or_dash(view.snapshot_index)),
        ("purged index", output::or_dash(view.purged_index)),
        ("quorum heard", view.millis_since_quorum_ack.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms ago"))),
    ])?;
    output::blank()?;
    let rows: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|member| {
            let lag = member.matched_index.map(|matched| view.last_log_index.unwrap_or(0).saturating_sub(matched));
            let mut role = member.role.clone();
            if Some(member.id) == view.leader_id {
                role.push_str(" (leader)");
            }
            vec![
                member.id.to_string(),
                role,
                member.peer_addr.clone(),
                output::or_dash(member.matched_index),
                output::or_dash(lag),
                output::or_dash(member.incarnation.as_ref()),
            ]
        })
        .collect();
    Table::new(vec!["ID", "ROLE", "PEER ADDRESS", "MATCHED", "LAG", "INCARNATION"]).print(&rows)
}
