//! The binary's command line: `serve` (flags in the library's [`switchboard::config::ServeArgs`],
//! validated into a `NodeConfig`), `dev` (a local three-node cluster with sample services),
//! `sample` (a sample service), the verbs that operate a running cluster ([`ctl`]) and
//! `completions`. Everything but `serve` belongs to the binary alone.

pub mod ctl;
pub mod dev;
pub mod sample;

use std::path::PathBuf;

use clap::Args;
use clap::Parser;
use clap::Subcommand;
use switchboard::config::ServeArgs;

/// Switchboard: a highly available service router.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

// Parsed once at start; the size difference between commands does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run one node of a cluster.
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Run a local three-node cluster on loopback with sample services (stops on Ctrl-C).
    Dev(DevArgs),
    /// Run a sample service that registers itself with the cluster.
    Sample(sample::SampleArgs),
    /// List, show, register, unregister and drain registrations.
    Registrations(ctl::registrations::RegistrationsArgs),
    /// Show the cluster's status; add and remove nodes.
    Cluster(ctl::cluster::ClusterArgs),
    /// Show and set contracts' routing policies.
    Policies(ctl::policies::PoliciesArgs),
    /// Show the audit trail, newest first.
    Audit(ctl::audit::AuditArgs),
    /// Show which contract, rule and endpoint a request would get, without sending it anywhere.
    Explain(ctl::explain::ExplainArgs),
    /// Print each change of the cluster as it happens (Ctrl-C ends it).
    Watch(ctl::watch::WatchArgs),
    /// Print a shell completion script (`switchboard completions bash > /etc/bash_completion.d/switchboard`).
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Writes the completion script of `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "switchboard", &mut std::io::stdout());
}

/// Flags of `switchboard dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Directory that holds the three nodes' data.
    #[arg(long, env = "SWITCHBOARD_DEV_DIR", default_value = ".local/dev")]
    pub dir: PathBuf,
    /// First port; node N uses base+10N (data), +1 (API), +2 (peer).
    #[arg(long, env = "SWITCHBOARD_DEV_BASE_PORT", default_value_t = 7000)]
    pub base_port: u16,
    /// Sample services to start.
    #[arg(long, env = "SWITCHBOARD_DEV_SAMPLES", default_value_t = 3)]
    pub samples: u16,
}
