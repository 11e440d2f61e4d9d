//! `gtstore-manager`: the coordinator (the same program as `gtstore manager`; see
//! `gtstore::cli::serve`).

use clap::Parser;
use gtstore::cli::serve::{self, ManagerArgs};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(version, about = serve::MANAGER_ABOUT, long_about = serve::MANAGER_LONG_ABOUT)]
struct Cli {
    #[command(flatten)]
    args: ManagerArgs,
}

fn main() -> ExitCode {
    gtstore::alloc::configure();
    gtstore::init_logging();
    gtstore::exit_status("gtstore-manager", serve::run_manager(Cli::parse().args))
}
