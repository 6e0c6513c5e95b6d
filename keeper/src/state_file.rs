//! The keeper's local ledger: node id, current state and goal, written
//! atomically ([`crate::durable`]) with a generation number, so a restart
//! never moves backwards.

use std::path::{Path, PathBuf};

use pgpilot_proto::ReplicationState;
use serde::{Deserialize, Serialize};

use crate::durable;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperState {
    pub generation: u64,
    pub node_id: Option<i64>,
    pub group_id: u32,
    pub formation: String,
    /// The state the node has reached.
    pub current: ReplicationState,
    /// The goal it is walking towards.
    pub goal: ReplicationState,
    /// The monitor sent the node back to wait_standby from a state other
    /// than init (a reinit): its next clone replaces the data directory
    /// even when it belongs to the group. Cleared once it is cloned.
    #[serde(default)]
    pub reclone: bool,
    /// The last restart asked through the monitor that this keeper
    /// carried out (the monitor's counter; see `Keeper::restart_step`).
    #[serde(default)]
    pub restart_done: u64,
    /// The formation's parameters (`set-parameter`) as the monitor last
    /// sent them, and their version: written into pgpilot.conf, also
    /// while the monitor cannot be reached.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub parameters_version: u64,
    /// The node's apply delay in milliseconds as the monitor last said
    /// (None: not said yet, the keeper's `apply_delay` counts): written as
    /// `recovery_min_apply_delay` also while the monitor cannot be reached.
    #[serde(default)]
    pub apply_delay_ms: Option<u64>,
}

impl KeeperState {
    pub fn new(formation: &str) -> Self {
        KeeperState {
            generation: 0,
            node_id: None,
            group_id: 0,
            formation: formation.to_string(),
            current: ReplicationState::Init,
            goal: ReplicationState::Init,
            reclone: false,
            restart_done: 0,
            parameters: Default::default(),
            parameters_version: 0,
            apply_delay_ms: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pgpilot keeper state file ({source}): move it away to register as a new node")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub fn load(path: &Path) -> Result<Option<KeeperState>, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateFileError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Write `state` with the next generation number.
pub fn save(path: &Path, state: &mut KeeperState) -> Result<(), StateFileError> {
    state.generation += 1;
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    durable::write_atomic(path, &bytes).map_err(|e| StateFileError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut s = KeeperState::new("default");
        s.node_id = Some(7);
        save(&path, &mut s).unwrap();
        save(&path, &mut s).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.generation, 2);
        assert_eq!(back, s);
        assert!(!durable::sibling_path(&path, ".pgpilot-tmp").exists());
    }

    #[test]
    fn corrupt_file_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("not a pgpilot keeper state file"), "{err}");
    }
}
