//! `pgpilot-monitor`: parse the command line, set up logging for the
//! server, run the subcommand, and turn its outcome into the exit code.

use std::process::ExitCode;

use clap::Parser;
use pgpilot_monitor::cli::{self, Args, Command};

/// The monitor allocates and frees many buffers of a few KiB per
/// heartbeat (HTTP/2 frames, gRPC codec buffers, rows); glibc's malloc
/// spent about half of the monitor's CPU on them at 10,000 heartbeats
/// per second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Run { log_format, .. } = &args.command {
        pgpilot_proto::logs::init(*log_format);
    }
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
