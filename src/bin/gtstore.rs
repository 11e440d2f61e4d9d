//! `gtstore`: the command-line client, the launcher and both servers. Flags are in
//! `gtstore::cli::args`; this only dispatches.

use clap::Parser;
use gtstore::cli::args::{reject_client_flags, request, target, Cli, Command, Conn};
use gtstore::cli::{self, cluster, oneshot, serve, shell};
use std::process::ExitCode;

fn main() -> ExitCode {
    gtstore::alloc::configure();
    let args = Cli::parse();
    let top = args.conn;
    let status = match args.command {
        Some(Command::Manager(a)) => {
            reject_client_flags(&top, "manager", false);
            gtstore::init_logging();
            return gtstore::exit_status("gtstore manager", serve::run_manager(a));
        }
        Some(Command::Storage(a)) => {
            reject_client_flags(&top, "storage", false);
            gtstore::init_logging();
            return gtstore::exit_status("gtstore storage", serve::run_storage(a));
        }
        Some(Command::Cluster(mut cfg)) => {
            reject_client_flags(&top, "cluster", true);
            init_client_logging();
            cfg.timeout = cfg.timeout.or(top.timeout);
            cluster::run(cfg)
        }
        None => {
            init_client_logging();
            shell::interactive(target(top))
        }
        Some(cmd) => {
            init_client_logging();
            match request(cmd) {
                Ok((req, format, conn)) => {
                    let conn = Conn {
                        manager: conn.manager.or(top.manager),
                        node: conn.node.or(top.node),
                        timeout: conn.timeout.or(top.timeout),
                        password_file: conn.password_file.or(top.password_file),
                    };
                    oneshot::run(target(conn), req, format)
                }
                Err(e) => {
                    eprintln!("gtstore: {e}");
                    cli::EXIT_ERROR
                }
            }
        }
    };
    ExitCode::from(status)
}

fn init_client_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}
