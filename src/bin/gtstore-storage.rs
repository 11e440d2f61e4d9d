//! `gtstore-storage`: a storage node (the same program as `gtstore storage`; see
//! `gtstore::cli::serve`).

use clap::Parser;
use gtstore::cli::serve::{self, StorageArgs};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(version, about = serve::STORAGE_ABOUT, long_about = serve::STORAGE_LONG_ABOUT)]
struct Cli {
    #[command(flatten)]
    args: StorageArgs,
}

fn main() -> ExitCode {
    gtstore::alloc::configure();
    gtstore::init_logging();
    gtstore::exit_status("gtstore-storage", serve::run_storage(Cli::parse().args))
}
