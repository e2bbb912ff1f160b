//! The `switchboard` binary: parse flags, set up logging, run (a node, the dev cluster, a sample
//! service, or one verb of the command line).

use std::process::ExitCode;

mod cli;

use clap::Parser;
use switchboard::config::NodeConfig;

use crate::cli::Cli;
use crate::cli::CliCommand;

// jemalloc returns freed memory to the system in the background and fragments less than the
// system allocator under many threads, so a node's resident memory stays close to what it holds
// even after the peaks of building or installing a snapshot.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => return usage_error(&first_paragraph(&err.render().to_string())),
    };
    match cli.command {
        CliCommand::Serve(args) => {
            let config = match NodeConfig::try_from(args) {
                Ok(config) => config,
                Err(err) => return usage_error(&format!("error: {err}")),
            };
            switchboard::telemetry::init(config.log_format);
            let workers = config.worker_threads;
            run(workers, switchboard::node::run(config, switchboard::node::shutdown_signal()))
        }
        CliCommand::Dev(args) => run(None, cli::dev::run(args)),
        CliCommand::Sample(args) => {
            switchboard::telemetry::init(switchboard::telemetry::LogFormat::Text);
            run(None, cli::sample::run(args))
        }
        CliCommand::Registrations(args) => cli::ctl::run(cli::ctl::registrations::run(args)),
        CliCommand::Cluster(args) => cli::ctl::run(cli::ctl::cluster::run(args)),
        CliCommand::Policies(args) => cli::ctl::run(cli::ctl::policies::run(args)),
        CliCommand::Audit(args) => cli::ctl::run(cli::ctl::audit::run(args)),
        CliCommand::Explain(args) => cli::ctl::run(cli::ctl::explain::run(args)),
        CliCommand::Watch(args) => cli::ctl::run(cli::ctl::watch::run(args)),
        CliCommand::Completions { shell } => {
            cli::completions(shell);
            ExitCode::SUCCESS
        }
    }
}

fn run(workers: Option<usize>, future: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    // One worker: a current-thread runtime does the same work without cross-thread scheduling.
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One line: clap's message with its continuation lines joined, without usage and hints.
fn first_paragraph(rendered: &str) -> String {
    rendered.split("\n\n").next().unwrap_or(rendered).split_whitespace().collect::<Vec<_>>().join(" ")
}

fn usage_error(line: &str) -> ExitCode {
    eprintln!("{line}");
    ExitCode::from(2)
}
