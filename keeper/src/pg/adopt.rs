//! The facts of the adoption check (see [`crate::adoption`]): the local
//! control file, and the primary's system identifier, position, timeline
//! history and WAL files, read as the replication role over an ordinary
//! connection (the functions pg_rewind is granted).

use pgpilot_proto::lsn::parse_lsn;

use super::divergence::{controldata_lsn, controldata_value, position_from_controldata};
use super::lifecycle::{CONTROLDATA_CLUSTER_STATE, CONTROLDATA_SYSTEM_IDENTIFIER};
use super::{PgController, PgError, Upstream};
use crate::adoption::{LocalData, UpstreamData};

const CONTROLDATA_REDO: &str = "Latest checkpoint's REDO location";
const CONTROLDATA_SEGMENT_SIZE: &str = "Bytes per WAL segment";

/// The primary's system identifier and current LSN.
const IDENTITY_SQL: &str = "\
SELECT (SELECT system_identifier FROM pg_control_system())::text,
       pg_current_wal_lsn()::text";

/// Whether a file of pg_wal exists (missing_ok: NULL when it does not; a
/// record is NULL only when every field is, hence the size).
const WAL_FILE_SQL: &str = "SELECT (pg_stat_file('pg_wal/' || $1, true)).size IS NOT NULL";

/// The local facts, the primary's, and the WAL segment size; None when
/// PGDATA holds no cluster.
pub type AdoptionFacts = (LocalData, UpstreamData, u64);

impl PgController {
    /// See [`LocalPostgres::adoption_facts`](super::LocalPostgres::adoption_facts).
    pub(super) async fn adoption_facts(
        &self,
        upstream: &Upstream,
    ) -> Result<Option<AdoptionFacts>, PgError> {
        if !self.has_data_directory() {
            return Ok(None);
        }
        let output = self.controldata().await?;
        // Stopped (the plan stops it first): the control file just read.
        let position = if self.postmaster_running() {
            match self.wal_position().await? {
                Some(position) => position,
                None => return Ok(None),
            }
        } else {
            position_from_controldata(&output)?
        };
        let number = |label: &str| -> Result<u64, PgError> {
            let value = controldata_value(&output, label)?;
            value.parse().map_err(|_| {
                PgError::Other(format!("pg_controldata: {label}: {value:?} is no number"))
            })
        };
        let local = LocalData {
            system_identifier: number(CONTROLDATA_SYSTEM_IDENTIFIER)?,
            position,
            redo_lsn: controldata_lsn(&output, CONTROLDATA_REDO)?,
            clean_shutdown: matches!(
                controldata_value(&output, CONTROLDATA_CLUSTER_STATE)?,
                "shut down" | "shut down in recovery"
            ),
        };
        let segment_size = number(CONTROLDATA_SEGMENT_SIZE)?;
        let history = self.upstream_history(upstream).await?;
        let (sysid, lsn): (String, String) = self
            .upstream_row(upstream, "querying", IDENTITY_SQL, None)
            .await?;
        let upstream = UpstreamData {
            system_identifier: sysid.parse().map_err(|_| {
                PgError::Other(format!(
                    "the primary's system identifier {sysid:?} is no number"
                ))
            })?,
            history,
            current_lsn: parse_lsn(&lsn)
                .ok_or_else(|| PgError::Other(format!("the primary's LSN {lsn:?} is no LSN")))?,
        };
        Ok(Some((local, upstream, segment_size)))
    }

    /// See [`LocalPostgres::upstream_has_wal_file`](super::LocalPostgres::upstream_has_wal_file).
    pub(super) async fn upstream_has_wal_file(
        &self,
        upstream: &Upstream,
        name: &str,
    ) -> Result<bool, PgError> {
        let (present,): (bool,) = self
            .upstream_row(upstream, "querying", WAL_FILE_SQL, Some(name))
            .await?;
        Ok(present)
    }
}
