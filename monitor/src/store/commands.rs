//! The SQL shell of each operator command: lock the group, let the
//! decision core decide (`crate::core::commands`), persist what it returns.

use super::{no_formation, retry, snaps, take_back, Error, Result, Store, StoredNode, Tx};
use crate::core::commands::{self, Command};
use crate::core::node_settings::{self, NodeSettings};
use crate::core::restart;
use crate::fsm::NodeSnapshot;

impl Store {
    /// Run a command on the locked `nodes`: decide, then write its goal
    /// changes with their events. The command's answer.
    async fn run(
        &self,
        tx: &mut Tx<'_>,
        nodes: &mut [StoredNode],
        decide: impl FnOnce(&mut [NodeSnapshot]) -> std::result::Result<Command, crate::core::Refusal>,
    ) -> Result<String> {
        let mut group = snaps(nodes);
        let command = decide(&mut group)?;
        take_back(nodes, group);
        self.apply(tx, nodes, &command.decisions).await?;
        Ok(command.message)
    }

    /// Planned failover: the primary drains, the secondaries report their
    /// LSN (to `target` only: a switchover).
    pub async fn perform_failover(
        &self,
        formation: &str,
        group_id: i32,
        target: Option<&str>,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, now, f) = self.lock_group(&mut tx, formation, group_id).await?;
            if nodes.is_empty() {
                return Err(Error::NotFound(format!(
                    "formation {formation:?} has no group {group_id}"
                )));
            }
            let env = self.env(now, f);
            let message = self
                .run(&mut tx, &mut nodes, |g| {
                    commands::perform_failover(g, formation, target, &env)
                })
                .await?;
            tx.commit().await?;
            Ok(message)
        })
        .await
    }

    /// Allow the election that waits in `formation` to finish without the
    /// promotion rule's quorum of reports (a double fault).
    pub async fn force_election(&self, formation: &str, group_id: i32) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, now, f) = self.lock_group(&mut tx, formation, group_id).await?;
            let mut group = snaps(&nodes);
            let evaluation = commands::force_election(&mut group, &self.env(now, f))?;
            sqlx::query(
                "UPDATE formation SET election_forced_at = clock_timestamp() WHERE name = $1",
            )
            .bind(formation)
            .execute(&mut *tx)
            .await?;
            take_back(&mut nodes, group);
            self.persist(&mut tx, &nodes, &evaluation).await?;
            tx.commit().await?;
            tracing::warn!(
                formation,
                "election forced by the operator: acknowledged commits may be lost"
            );
            Ok(commands::ELECTION_FORCED.to_string())
        })
        .await
    }

    /// Change number_sync_standbys; the primary applies it.
    pub async fn set_number_sync_standbys(&self, formation: &str, value: u32) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let found: Option<String> =
                sqlx::query_scalar("SELECT name FROM formation WHERE name = $1 FOR UPDATE")
                    .bind(formation)
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Err(no_formation(formation));
            }
            let (mut nodes, _, _) = self.lock_group(&mut tx, formation, 0).await?;
            let mut group = snaps(&nodes);
            let command = commands::set_number_sync_standbys(&mut group, formation, value)?;
            sqlx::query("UPDATE formation SET number_sync_standbys = $2 WHERE name = $1")
                .bind(formation)
                .bind(value as i32)
                .execute(&mut *tx)
                .await?;
            take_back(&mut nodes, group);
            self.apply(&mut tx, &nodes, &command.decisions).await?;
            tx.commit().await?;
            Ok(command.message)
        })
        .await
    }

    /// Change a node's candidate priority, replication quorum and/or apply
    /// delay: the three values the decision core leaves are stored together.
    pub async fn set_node_settings(
        &self,
        formation: &str,
        name: &str,
        asked: NodeSettings,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, _, f) = self.lock_named_group(&mut tx, formation, name).await?;
            let mut group = snaps(&nodes);
            let command = node_settings::set_node_settings(
                &mut group,
                formation,
                name,
                asked,
                f.number_sync_standbys,
            )?;
            let node = &group[commands::find(&group, formation, name)?];
            sqlx::query(
                "UPDATE node SET candidate_priority = $2, replication_quorum = $3,
                    apply_delay_ms = $4 WHERE node_id = $1",
            )
            .bind(node.id)
            .bind(node.candidate_priority as i32)
            .bind(node.replication_quorum)
            .bind(node.apply_delay_ms.min(i64::MAX as u64) as i64)
            .execute(&mut *tx)
            .await?;
            take_back(&mut nodes, group);
            self.apply(&mut tx, &nodes, &command.decisions).await?;
            tx.commit().await?;
            tracing::info!(formation, node = name, "{}", command.message);
            Ok(command.message)
        })
        .await
    }

    /// Make `name` stream from the standby `upstream` (`None`: from the
    /// primary again); see `crate::core::cascade`.
    pub async fn set_upstream(
        &self,
        formation: &str,
        name: &str,
        upstream: Option<&str>,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, _, f) = self.lock_named_group(&mut tx, formation, name).await?;
            let mut group = snaps(&nodes);
            let command = crate::core::cascade::set_upstream(
                &mut group,
                formation,
                name,
                upstream,
                f.number_sync_standbys,
            )?;
            let me = &group[commands::find(&group, formation, name)?];
            sqlx::query(
                "UPDATE node SET upstream = $2, candidate_priority = $3, replication_quorum = $4
                  WHERE node_id = $1",
            )
            .bind(me.id)
            .bind(me.upstream.as_deref())
            .bind(me.candidate_priority as i32)
            .bind(me.replication_quorum)
            .execute(&mut *tx)
            .await?;
            take_back(&mut nodes, group);
            self.apply(&mut tx, &nodes, &command.decisions).await?;
            let stored = nodes.clone();
            super::wakes::notify(&mut tx, &stored).await?;
            tx.commit().await?;
            tracing::info!(formation, node = name, "{}", command.message);
            Ok(command.message)
        })
        .await
    }

    /// Put a node into maintenance, or bring it back.
    pub async fn set_maintenance(
        &self,
        formation: &str,
        name: &str,
        enabled: bool,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, now, f) = self.lock_named_group(&mut tx, formation, name).await?;
            let env = self.env(now, f);
            let message = self
                .run(&mut tx, &mut nodes, |g| {
                    commands::set_maintenance(g, formation, name, enabled, &env)
                })
                .await?;
            tx.commit().await?;
            Ok(message)
        })
        .await
    }

    /// Rebuild a standby from a fresh clone of the primary (its data
    /// directory is lost or diverged).
    pub async fn reinit_node(&self, formation: &str, name: &str) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, _, f) = self.lock_named_group(&mut tx, formation, name).await?;
            let message = self
                .run(&mut tx, &mut nodes, |g| {
                    commands::reinit_node(g, formation, name, f.number_sync_standbys)
                })
                .await?;
            tx.commit().await?;
            Ok(message)
        })
        .await
    }

    /// Remove a node: its keeper stops PostgreSQL and the row is deleted
    /// when it reports so (at once with `force`).
    pub async fn drop_node(&self, formation: &str, name: &str, force: bool) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (mut nodes, _, f) = self.lock_named_group(&mut tx, formation, name).await?;
            let mut group = snaps(&nodes);
            let command =
                commands::drop_node(&mut group, formation, name, force, f.number_sync_standbys)?;
            take_back(&mut nodes, group);
            self.apply(&mut tx, &nodes, &command.decisions).await?;
            if force {
                for d in &command.decisions {
                    sqlx::query("DELETE FROM node WHERE node_id = $1")
                        .bind(d.node_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(command.message)
        })
        .await
    }

    /// Ask node `name`'s keeper to restart PostgreSQL in place (see
    /// `crate::core::restart`): the counter raised, the event recorded, the
    /// keeper woken.
    pub async fn restart_node(
        &self,
        formation: &str,
        name: &str,
        operator: &str,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, _, _) = self.lock_named_group(&mut tx, formation, name).await?;
            let counters: Vec<_> = nodes.iter().map(|n| n.restart).collect();
            let asked = restart::request(&snaps(&nodes), &counters, formation, name, operator)?;
            let node = &nodes[asked.index];
            sqlx::query(
                "UPDATE node SET restart_requested = restart_requested + 1 WHERE node_id = $1",
            )
            .bind(node.snap.id)
            .execute(&mut *tx)
            .await?;
            let goal = node.snap.goal;
            super::insert_event(&mut tx, node, goal, goal, restart::REQUESTED, &asked.event)
                .await?;
            sqlx::query("SELECT pg_notify('pgpilot_events', $1)")
                .bind(formation)
                .execute(&mut *tx)
                .await?;
            super::wakes::notify(&mut tx, std::slice::from_ref(node)).await?;
            tx.commit().await?;
            Ok(asked.message.clone())
        })
        .await
    }
}
