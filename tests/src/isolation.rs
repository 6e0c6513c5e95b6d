//! Cutting a node off from everything, and the bounds the tests of an
//! isolated primary hold it to (`tests/tests/partitions.rs`,
//! `tests/tests/keeper_death.rs`).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{Cluster, Writer, WriterOptions};

/// The documented bound on how long an isolated primary goes on
/// acknowledging writes after the cut, with the default settings: the
/// fence arms after `fence_timeout` (1.5 s) without an answered heartbeat
/// and acts once fewer standbys than required stream, which PostgreSQL
/// notices after `wal_sender_timeout` (2 s); then a fence check period
/// (0.1 s) and the immediate stop. About 2.2 s is measured. A dead keeper
/// does not change it: its fence guard holds the same lease.
pub const FENCE_BOUND: Duration = Duration::from_secs(4);

/// The writer on the primary's host cancels an insert that has had no
/// answer for this long, as an application with a client-side timeout does.
pub const LOCAL_CANCEL_AFTER: Duration = Duration::from_secs(1);

/// Ids of the writer on the primary's host start here (the network writer's
/// at 1), so both write into one table.
pub const LOCAL_FIRST_ID: i64 = 1_000_000_000;

/// In asynchronous mode a write acknowledged just before the cut may not
/// have reached the standby yet; only one acknowledged earlier than this
/// before the cut must survive.
pub const ASYNC_LAG_ALLOWANCE: Duration = Duration::from_secs(1);

/// Cut `name` off from the monitor and from every other node and network
/// client (both of its proxies black-holed); when it was.
pub fn isolate(cluster: &Cluster, name: &str) -> Result<Instant> {
    cluster.monitor_link(name)?.blackhole();
    cluster.ingress(name)?.blackhole();
    Ok(Instant::now())
}

/// Heal both of `name`'s proxies.
pub fn reconnect(cluster: &Cluster, name: &str) -> Result<()> {
    cluster.monitor_link(name)?.heal();
    cluster.ingress(name)?.heal();
    Ok(())
}

/// A duration in seconds, for messages.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The two writers of an isolation test, both warm: one through the
/// group's multi-host URI (it follows the failover), one on `primary`'s
/// own host (it keeps writing to the isolated primary, ids from
/// [`LOCAL_FIRST_ID`], cancelling an insert after [`LOCAL_CANCEL_AFTER`]).
pub async fn start_writers(cluster: &Cluster, primary: &str) -> Result<(Writer, Writer)> {
    let network =
        Writer::start_warm(cluster, &cluster.advertised_uri(), WriterOptions::default()).await?;
    let local = Writer::start_warm(
        cluster,
        &cluster.local_uri(primary)?,
        WriterOptions {
            first_id: LOCAL_FIRST_ID,
            cancel_after: Some(LOCAL_CANCEL_AFTER),
        },
    )
    .await?;
    Ok((network, local))
}

/// Wait until `new` is the writable primary while `old` is cut off, and
/// the writer through the group's URI writes on it; when it was seen.
pub async fn await_new_primary(
    cluster: &Cluster,
    network: &Writer,
    new: &str,
    old: &str,
    timeout: Duration,
) -> Result<Instant> {
    cluster
        .wait_writable_primary(
            new,
            timeout,
            &format!("{new} to become the writable primary while {old} is cut off"),
        )
        .await?;
    let promoted_seen = Instant::now();
    network
        .wait_ack_after(
            cluster,
            promoted_seen,
            timeout,
            "the network writer to write on the new primary",
        )
        .await?;
    Ok(promoted_seen)
}
