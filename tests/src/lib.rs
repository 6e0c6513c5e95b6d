//! The end-to-end harness of pgpilot: real PostgreSQL servers, a real monitor
//! and real keepers on 127.0.0.1, driven by tests and by `pgpilot-lab`.
//!
//! A [`Cluster`] owns everything it starts — the monitor's own PostgreSQL,
//! the monitor, one keeper per node and the PostgreSQL servers those keepers
//! start — and kills all of it when dropped, also when a test panics. Tests
//! never sleep to "let things settle": they [`Cluster::wait_until`] a
//! condition with a deadline, and when the deadline passes the error carries
//! the state table, recent events and the tail of every log.
//!
//! Run: `cargo build --workspace && cargo nextest run -p pgpilot-tests` (or
//! `cargo test -p pgpilot-tests -- --test-threads=2`). The tests run the
//! binaries already built in the target directory; `cargo test -p
//! pgpilot-tests` alone does not rebuild the monitor or the keeper.
//!
//! Environment: `PGPILOT_BIN_DIR` (where `pgpilot-monitor` / `pgpilot-keeper`
//! are, default the cargo target dir — run `cargo build --workspace` first),
//! `PGPILOT_PG_BIN_DIR` (PostgreSQL's bin dir, default the newest
//! `/usr/lib/postgresql/*/bin`), `PGPILOT_KEEP_TEST_DIRS` (keep each test's
//! directory), `RUST_LOG` (log filter of monitor and keepers, default `info`).

pub mod cascade;
mod cluster;
pub mod drills;
pub mod http;
pub mod isolation;
pub mod logical;
pub mod operator;
pub mod pgbench;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod raw_grpc;
pub mod security;
pub mod state;
pub mod tools;
pub mod wait;
pub mod writer;

pub use cluster::{random_secret, Cluster, ClusterOptions, FiredFailpoint, KeeperToml};
pub use pgpilot_proto::pb::{FormationState, NodeStatus};
pub use pgpilot_proto::ReplicationState;
pub use probe::{ProbeReport, WritableProbe};
pub use security::{Security, TlsFiles};
pub use state::{FormationStateExt, NodeStatusExt};
pub use tools::{PostgresNotInstalled, Tools};
pub use wait::{poll_every, poll_until, GiveUp, TimedOut};
pub use writer::{Ack, Connection, Outage, WriteReport, Writer, WriterOptions};
