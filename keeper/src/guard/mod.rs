//! The fence guard: the fence of [`crate::fence`] in a process of its own,
//! so that a primary never outlives its keeper as a writer (DESIGN §5,
//! invariant 7).
//!
//! The keeper's fence task dies with the keeper. If the keeper is killed
//! (SIGKILL, the OOM killer, a crash) while its node is a primary cut off
//! from the monitor, PostgreSQL — daemonised by `pg_ctl`, so it outlives
//! the keeper — would go on taking writes past the fence deadline the
//! monitor counts on, beside the standby it promotes after it.
//!
//! So the keeper starts a guard (`pgpilot-keeper fence-guard`, a hidden
//! subcommand of the same binary) in a session of its own, which a kill of
//! the keeper's process group does not reach. The keeper hands it its
//! lease over a unix socket beside its state file, every time the lease is
//! renewed (the moment the monitor answered) and every time the node's
//! state changes. The guard applies the very rule the keeper's fence task
//! applies ([`crate::fence::fence_armed`], [`crate::fence::enforce`]) every
//! 100 ms, with its own PostgreSQL connection, whether or not a keeper is
//! connected. Both may stop PostgreSQL; stopping is idempotent.
//!
//! - A restarted keeper connects to the guard that outlived it and never
//!   extends its lease before the monitor answered ([`rule::adopt`]): the
//!   fence bound stays the last answered heartbeat's send time plus
//!   `fence_timeout`, however the keeper died. PostgreSQL keeps running
//!   across a planned keeper restart; the guard keeps watching it.
//! - A guard that dies while its keeper lives is noticed (its socket
//!   closes) and replaced, and the keeper hands the new one its lease.
//! - A guard with no keeper connected exits once nothing is left to guard
//!   ([`rule::GuardState::exit_reason`]): no lease, a node off the primary
//!   side, or PostgreSQL stopped.
//!
//! `rule` holds the decisions (pure), `wire` the messages and the clock,
//! `server` the guard process, `link` the keeper's side.

pub mod link;
pub mod rule;
pub mod server;
pub mod wire;

use std::ffi::OsString;
use std::path::PathBuf;

use pgpilot_proto::logs::LogFormat;

pub use link::Link;
pub use server::{run, GuardError};

/// The guard's command line (`pgpilot-keeper fence-guard …`): the keeper
/// builds it; an operator never needs to.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GuardArgs {
    /// The unix socket keepers connect to.
    #[arg(long)]
    pub socket: PathBuf,
    /// The data directory of the PostgreSQL to guard.
    #[arg(long)]
    pub pgdata: PathBuf,
    /// Where pg_ctl is.
    #[arg(long)]
    pub pg_bin_dir: PathBuf,
    /// PostgreSQL's unix socket directory.
    #[arg(long)]
    pub pg_socket_dir: PathBuf,
    /// The superuser the guard connects as.
    #[arg(long)]
    pub pg_user: String,
    /// PostgreSQL's port.
    #[arg(long)]
    pub port: u16,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl GuardArgs {
    /// The arguments after `fence-guard` that give these settings back.
    pub fn to_args(&self) -> Vec<OsString> {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        vec![
            "--socket".into(),
            self.socket.clone().into(),
            "--pgdata".into(),
            self.pgdata.clone().into(),
            "--pg-bin-dir".into(),
            self.pg_bin_dir.clone().into(),
            "--pg-socket-dir".into(),
            self.pg_socket_dir.clone().into(),
            "--pg-user".into(),
            self.pg_user.clone().into(),
            "--port".into(),
            self.port.to_string().into(),
            "--log-format".into(),
            format.into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GuardArgs,
    }

    #[test]
    fn the_command_line_round_trips() {
        let args = GuardArgs {
            socket: "/var/lib/pgpilot/pgpilot-guard.5432.sock".into(),
            pgdata: "/var/lib/pgpilot/data".into(),
            pg_bin_dir: "/usr/lib/postgresql/17/bin".into(),
            pg_socket_dir: "/var/run/postgresql".into(),
            pg_user: "postgres".into(),
            port: 5432,
            log_format: LogFormat::Json,
        };
        let mut argv: Vec<OsString> = vec!["fence-guard".into()];
        argv.extend(args.to_args());
        let parsed = Cli::try_parse_from(argv).expect("parses");
        assert_eq!(parsed.args, args);
    }
}
