//! Formations by command: creating one, dropping one that is empty. The
//! store looks up what exists and stores what these decide.

use super::Refusal;

/// The formation every monitor database starts with; never dropped.
pub const DEFAULT: &str = "default";

/// Create formation `name` (`exists`: one of that name is stored); the
/// operator's sentence.
pub fn create(name: &str, exists: bool, number_sync_standbys: u32) -> Result<String, Refusal> {
    if exists {
        return Err(Refusal::FormationExists { name: name.into() });
    }
    Ok(format!(
        "formation {name} created (number_sync_standbys = {number_sync_standbys}): keepers join it with formation = \"{name}\" in their configuration"
    ))
}

/// Drop formation `name`, whose nodes are `nodes` (their names): only an
/// empty formation, and never the default one.
pub fn drop(name: &str, nodes: &[String]) -> Result<String, Refusal> {
    if name == DEFAULT {
        return Err(Refusal::DropDefaultFormation);
    }
    if !nodes.is_empty() {
        return Err(Refusal::FormationNotEmpty {
            name: name.into(),
            nodes: nodes.to_vec(),
        });
    }
    Ok(format!("formation {name} dropped"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::RefusalCode;

    #[test]
    fn a_formation_is_created_once() {
        let ok = create("analytics", false, 1).unwrap();
        assert!(
            ok.contains("formation analytics created") && ok.contains("number_sync_standbys = 1"),
            "{ok}"
        );
        let refused = create("analytics", true, 0).unwrap_err();
        assert_eq!(refused.code(), RefusalCode::FailedPrecondition);
        assert_eq!(
            refused.to_string(),
            "formation analytics already exists: show-formations lists the formations"
        );
    }

    #[test]
    fn only_an_empty_formation_other_than_the_default_is_dropped() {
        assert!(drop("analytics", &[])
            .unwrap()
            .contains("formation analytics dropped"));
        let refused = drop(DEFAULT, &[]).unwrap_err();
        assert!(
            refused.to_string().contains("cannot be dropped"),
            "{refused}"
        );
        let refused = drop("analytics", &["node1".into(), "node2".into()]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "formation analytics still has 2 nodes (node1, node2): drop-node each of them first"
        );
        assert_eq!(refused.code(), RefusalCode::FailedPrecondition);
    }
}
