//! What the other nodes need of this one to replicate: the replication
//! role with its password, the password file, the pg_hba.conf rules for
//! the group's hosts, and the replication slots.

use pgpilot_proto::lsn::format_lsn;
use tracing::{debug, info};

use super::connection::QUERY_TIMEOUT;
use super::render::write_if_changed;
use super::{PgController, PgError, SLOT_PREFIX};
use crate::access::{self, HbaRules, Method, Secret};

impl PgController {
    /// The replication password now, when one is configured (the file is
    /// read again: a rotated password is used at once).
    pub(super) fn replication_password(&self) -> Result<Option<Secret>, PgError> {
        self.settings
            .replication_password
            .as_ref()
            .map(|source| source.password().map_err(PgError::Other))
            .transpose()
    }

    /// Keep the password file in line with the password (when one is
    /// configured). Returns whether it changed.
    pub(super) fn refresh_passfile(&self) -> Result<bool, PgError> {
        match self.replication_password()? {
            Some(password) => write_if_changed(
                &self.settings.passfile(),
                &access::passfile(&self.settings.replication_user, &password),
            ),
            None => Ok(false),
        }
    }

    /// The keeper's block of pg_hba.conf for `group_hosts`.
    pub(super) fn hba_rules(&self, group_hosts: &[String]) -> HbaRules {
        HbaRules {
            replication_user: self.settings.replication_user.clone(),
            superuser: self.settings.superuser.clone(),
            method: if self.settings.replication_password.is_some() {
                Method::ScramSha256
            } else {
                Method::Trust
            },
            group_hosts: group_hosts.to_vec(),
            trust_networks: self.settings.trust_networks.clone(),
            tls_only: self.settings.postgres_tls.is_some(),
        }
    }

    /// Slots are created with `immediately_reserve => true`, so the primary
    /// keeps WAL for a standby from the moment its slot exists. Each slot
    /// is (name, the node's LSN, the node cascades from another standby).
    pub(super) async fn sync_slots(&self, slots: &[(String, u64, bool)]) -> Result<(), PgError> {
        let names: Vec<String> = slots.iter().map(|(name, _, _)| name.clone()).collect();
        let standby = self.in_recovery().await?;
        let existing: Vec<(String, bool)> = self
            .fetch_all(
                "SELECT slot_name::text, active FROM pg_replication_slots
                  WHERE slot_type = 'physical'",
                &[],
                QUERY_TIMEOUT,
            )
            .await?;
        // A standby moves each slot it keeps to the node's LSN (so a
        // promoted standby holds the WAL its future standbys need); a
        // primary only the slot of a cascading standby, which streams
        // from another standby and so never moves its slot here itself.
        // Never past our replay, never a slot in use (an error).
        for (name, lsn, cascading) in slots {
            let idle = existing
                .iter()
                .any(|(slot, active)| slot == name && !active);
            if *lsn == 0 || !idle || !(standby || *cascading) {
                continue;
            }
            let target = format_lsn(*lsn);
            self.fetch_all::<(bool,)>(
                // CASE: advance only forwards (backwards is an error).
                "SELECT CASE
                     WHEN least($2::text::pg_lsn,
                                CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                     ELSE pg_current_wal_flush_lsn() END)
                          > coalesce(s.restart_lsn, '0/0')
                     THEN pg_replication_slot_advance($1::text::name,
                            least($2::text::pg_lsn,
                                  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                       ELSE pg_current_wal_flush_lsn() END)) IS NOT NULL
                     ELSE false
                 END
                   FROM pg_replication_slots s WHERE s.slot_name = $1::text::name",
                &[name, &target],
                QUERY_TIMEOUT,
            )
            .await?;
        }
        for name in &names {
            if existing.iter().any(|(slot, _)| slot == name) {
                continue;
            }
            self.fetch_all::<(String,)>(
                "SELECT slot_name::text FROM pg_create_physical_replication_slot($1::text::name, true)",
                &[name],
                QUERY_TIMEOUT,
            )
            .await?;
            info!(slot = %name, "postgres: created replication slot");
        }
        for (slot, active) in &existing {
            if !slot.starts_with(SLOT_PREFIX) || names.contains(slot) {
                continue;
            }
            if *active {
                debug!(slot = %slot, "postgres: unwanted replication slot still active; kept for now");
                continue;
            }
            self.fetch_all::<(bool,)>(
                "SELECT true FROM pg_drop_replication_slot($1::text::name)",
                &[slot],
                QUERY_TIMEOUT,
            )
            .await?;
            info!(slot = %slot, "postgres: dropped replication slot");
        }
        Ok(())
    }

    pub(super) async fn ensure_replication_role(&self) -> Result<(), PgError> {
        let password = self.replication_password()?;
        if self
            .role_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&password)
        {
            return Ok(());
        }
        if self.in_recovery().await? {
            return Ok(());
        }
        // A salted SCRAM verifier: the password itself never reaches the
        // server, its logs or its statistics.
        let verifier = password
            .as_ref()
            .map(|p| postgres_protocol::password::scram_sha_256(p.expose().as_bytes()));
        let sql = access::replication_role_sql(
            &self.settings.replication_user,
            &self.settings.superuser,
            verifier.as_deref(),
        );
        if !sql.is_empty() {
            self.execute_batch(&sql).await?;
        }
        info!(
            role = %self.settings.replication_user,
            password = match &self.settings.replication_password {
                Some(source) => format!("SCRAM-SHA-256 from {}", source.origin()),
                None => "none (trust)".to_string(),
            },
            "postgres: replication role ready"
        );
        *self.role_applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(password);
        Ok(())
    }
}
