//! Watching a cascading standby: where its WAL receiver streams from, and
//! whether it replayed a writer's acknowledged rows (shared by the test
//! and `pgpilot-bench cascade`).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{Cluster, Writer};

/// How long each wait may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The port `node`'s WAL receiver streams from (None when it does not).
pub async fn sender_port(cluster: &Cluster, node: &str) -> Result<Option<u16>> {
    let out = cluster
        .psql(
            node,
            "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )
        .await?;
    Ok(out.trim().parse().ok())
}

/// Wait until `leaf` streams from `from` (its PostgreSQL port).
pub async fn wait_streams_from(cluster: &Cluster, leaf: &str, from: &str) -> Result<()> {
    let port = cluster.node_port(from)?;
    cluster
        .wait_for(
            TIMEOUT,
            &format!("{leaf} to stream from {from}"),
            || async move {
                Ok((sender_port(cluster, leaf).await.ok().flatten() == Some(port)).then_some(()))
            },
        )
        .await
}

/// Wait until `node` holds every row `writer` had acknowledged once one
/// was acknowledged after `since`.
pub async fn wait_caught_up(
    cluster: &Cluster,
    writer: &Writer,
    node: &str,
    since: Instant,
) -> Result<()> {
    writer
        .wait_ack_after(cluster, since, TIMEOUT, "a write after the fault")
        .await?;
    let ids = writer.acked_ids();
    cluster
        .wait_for(TIMEOUT, &format!("{node} to replay the writes"), || {
            let ids = ids.clone();
            async move {
                let missing = cluster.missing_ids(node, &ids).await.unwrap_or(ids);
                Ok(missing.is_empty().then_some(()))
            }
        })
        .await
}
