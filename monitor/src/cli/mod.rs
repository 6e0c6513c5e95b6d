//! The monitor's command line: the `run` subcommand that serves, and the
//! operator subcommands that talk gRPC to a running monitor and print for
//! people (tables) or scripts (`--json`).
//!
//! - `args`: the clap tree (global options, subcommands, flags, help).
//! - `commands`: the dispatch, one function per subcommand.
//! - `serve`: `run`, from a configuration file to a serving monitor.
//! - `client`: the gRPC client and what its failures tell the operator.
//! - `error`: [`CliError`] and its exit codes.
//! - `render`: what every view derives (connection, lag, names, the URI).
//! - `tables`: the text views; `json`: the `--json` views.
//! - `follow`: `show-events --follow`, `show-state --watch`, Ctrl-C.
//! - `wait`: waiting for a change to finish.

pub mod args;
pub mod client;
mod commands;
pub mod error;
pub mod follow;
pub mod json;
pub mod render;
mod serve;
pub mod tables;
pub mod wait;

pub use args::{Args, Command, OperatorCommand};
pub use client::Client;
pub use commands::run;
pub use error::CliError;
pub use follow::{
    emit, follow_events, recent_events, until_interrupted, watch_state, CLEAR_SCREEN,
    FOLLOW_INTERVAL, MAX_EVENTS,
};
pub use json::{
    EventJson, FormationJson, NodeJson, NodeSettingsJson, PausedJson, SettingsJson, StateJson,
};
pub use render::{
    connection, find_node, format_bytes, lag_bytes, multi_host_uri, unknown_node, Connection,
};
pub use tables::{
    event_line, events_table, formations_table, node_detail, nodes_table, settings_table,
    state_table, NODES_COLUMNS, STATE_COLUMNS,
};
pub use wait::{converged, converged_with, handed_over, primary_of, settled, wait_until};

#[cfg(test)]
mod tests;
