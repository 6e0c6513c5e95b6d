//! Cascading standbys (`set-upstream`): a standby that streams from a
//! named standby instead of the primary, so the primary sends its WAL once
//! to a remote site and the standbys there fan it out.
//!
//! - A cascading standby streams from its upstream while that one can
//!   serve (settled `secondary`, running, streaming from the primary on its
//!   timeline, alive — as for a clone source); otherwise, and during an
//!   election, it is pointed at the primary, and back at its upstream once
//!   that one can serve again.
//! - One level only: an upstream follows the primary itself, and a
//!   cascading standby serves no one.
//! - It never counts for a commit and is never promoted: it does not
//!   stream from the primary, so the primary's synchronous replication and
//!   fence cannot count it, and the promotion rule hears of its WAL only
//!   through its LSN. Setting an upstream sets its candidate priority to 0
//!   and takes it out of the replication quorum; raising either while it
//!   cascades is refused. It still reports its LSN in an election and can
//!   be the standby a candidate fast-forwards from.

use pgpilot_proto::ReplicationState as S;

use super::clone_source::can_serve;
use super::commands::{find, Command};
use super::group::upstream_of;
use super::{Env, Refusal};
use crate::fsm::{self, NodeSnapshot};

/// The node `index` streams from: its upstream when it cascades, is a
/// following standby (`catchingup`, `secondary`) and the upstream can
/// serve; otherwise the node [`upstream_of`] names (the primary).
pub fn follow(nodes: &[NodeSnapshot], index: usize, env: &Env) -> Option<usize> {
    let primary = upstream_of(nodes, index)?;
    let me = &nodes[index];
    let Some(name) = me.upstream.as_deref() else {
        return Some(primary);
    };
    if !matches!(me.goal, S::Secondary | S::Catchingup) {
        return Some(primary);
    }
    let chosen = (0..nodes.len()).find(|&j| {
        j != index
            && nodes[j].name == name
            && nodes[j].upstream.is_none()
            && nodes[primary].goal.is_writable_primary()
            && can_serve(nodes, j, primary, env)
    });
    Some(chosen.unwrap_or(primary))
}

/// Node `name` is to stream from `upstream` (`None`: from the primary
/// again). Setting one also sets its candidate priority to 0 and takes it
/// out of the replication quorum (the primary applies its new settings).
pub fn set_upstream(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    name: &str,
    upstream: Option<&str>,
    number_sync_standbys: u32,
) -> Result<Command, Refusal> {
    let i = find(nodes, formation, name)?;
    let Some(up) = upstream else {
        nodes[i].upstream = None;
        return Ok(Command {
            decisions: Vec::new(),
            message: format!(
                "{name} streams from the primary again (its candidate priority and replication quorum stay as they are: set-candidate-priority and set-replication-quorum change them)"
            ),
        });
    };
    let j = find(nodes, formation, up)?;
    let refuse = |why: String| Err(Refusal::Cascade(why));
    if i == j {
        return refuse(format!(
            "{name} cannot stream from itself: name another standby, or --primary"
        ));
    }
    if nodes[i].goal.is_writable_primary() {
        return refuse(format!(
            "{name} is the primary: an upstream is set on a standby"
        ));
    }
    if nodes[j].goal.is_writable_primary() {
        return refuse(format!(
            "{up} is the primary, which every standby follows: name a standby, or use --primary"
        ));
    }
    if let Some(its) = nodes[j].upstream.as_deref() {
        return refuse(format!(
            "{up} streams from {its} itself and pgpilot cascades one level: name {its}, or another standby that follows the primary"
        ));
    }
    if let Some(k) = nodes.iter().find(|n| n.upstream.as_deref() == Some(name)) {
        return refuse(format!(
            "{} streams from {name}, and a cascading standby serves no one: set-upstream {} --primary first",
            k.name, k.name
        ));
    }
    let mut hypothetical = nodes.to_vec();
    hypothetical[i].candidate_priority = 0;
    hypothetical[i].replication_quorum = false;
    fsm::check_settings(&hypothetical, number_sync_standbys).map_err(Refusal::Settings)?;
    let quorum_changed = nodes[i].replication_quorum;
    nodes[i].upstream = Some(up.to_string());
    nodes[i].candidate_priority = 0;
    nodes[i].replication_quorum = false;
    let what = format!(
        "{name} streams from {up} while {up} can serve (else from the primary); its candidate priority is 0 and it is out of the replication quorum"
    );
    let decisions = if quorum_changed {
        super::commands::apply_settings(nodes, &what)
    } else {
        Vec::new()
    };
    super::group::apply_goals(nodes, &decisions);
    Ok(Command {
        decisions,
        message: what,
    })
}

/// A change of `name`'s candidate priority or quorum that its upstream
/// forbids (see the module).
pub fn check_node_settings(
    nodes: &[NodeSnapshot],
    i: usize,
    candidate_priority: Option<u32>,
    replication_quorum: Option<bool>,
) -> Result<(), Refusal> {
    let n = &nodes[i];
    let Some(up) = n.upstream.as_deref() else {
        return Ok(());
    };
    if candidate_priority.is_some_and(|p| p > 0) || replication_quorum == Some(true) {
        return Err(Refusal::Cascade(format!(
            "{} streams from {up} (a cascading standby): it is never a candidate nor in the replication quorum; set-upstream {} --primary first",
            n.name, n.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::{env, settled_node};

    /// node1 primary, node2 and node3 secondaries.
    fn group() -> (Vec<NodeSnapshot>, Env) {
        let now = chrono::Utc::now();
        let nodes = vec![
            settled_node(1, S::Primary, now),
            settled_node(2, S::Secondary, now),
            settled_node(3, S::Secondary, now),
        ];
        (nodes, env(now))
    }

    fn standby(id: i64, name: &str) -> NodeSnapshot {
        let mut n = settled_node(id, S::Secondary, chrono::Utc::now());
        n.name = name.to_string();
        n
    }

    #[test]
    fn a_cascading_standby_follows_its_upstream_while_it_can_serve() {
        let (mut nodes, env) = group();
        nodes[2].upstream = Some(nodes[1].name.clone());
        assert_eq!(follow(&nodes, 2, &env), Some(1));
        // Its upstream fails: the primary.
        nodes[1].pg_running = false;
        assert_eq!(follow(&nodes, 2, &env), Some(0));
        nodes[1].pg_running = true;
        nodes[1].goal = S::Catchingup;
        assert_eq!(follow(&nodes, 2, &env), Some(0));
        nodes[1].goal = S::Secondary;
        // During an election: the node the election names.
        nodes[2].goal = S::ReportLsn;
        assert_eq!(follow(&nodes, 2, &env), upstream_of(&nodes, 2));
        // Not cascading: the primary.
        assert_eq!(follow(&nodes, 1, &env), Some(0));
    }

    #[test]
    fn setting_an_upstream_takes_the_node_out_of_candidates_and_quorum() {
        let (mut nodes, _) = group();
        nodes.push(standby(4, "d"));
        let name = nodes[2].name.clone();
        let up = nodes[1].name.clone();
        let c = set_upstream(&mut nodes, "f", &name, Some(&up), 0).unwrap();
        assert_eq!(nodes[2].upstream.as_deref(), Some(up.as_str()));
        assert_eq!(nodes[2].candidate_priority, 0);
        assert!(!nodes[2].replication_quorum);
        assert_eq!(c.decisions.len(), 1, "the primary applies its settings");
        assert!(check_node_settings(&nodes, 2, Some(50), None).is_err());
        assert!(check_node_settings(&nodes, 2, None, Some(true)).is_err());
        assert!(check_node_settings(&nodes, 2, Some(0), Some(false)).is_ok());
        let c = set_upstream(&mut nodes, "f", &name, None, 0).unwrap();
        assert!(c.decisions.is_empty());
        assert!(nodes[2].upstream.is_none());
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let (mut nodes, _) = group();
        nodes.push(standby(4, "d"));
        let (p, b, c) = (
            nodes[0].name.clone(),
            nodes[1].name.clone(),
            nodes[2].name.clone(),
        );
        let why = |r: Result<Command, Refusal>| r.unwrap_err().to_string();
        assert!(why(set_upstream(&mut nodes, "f", &b, Some(&b), 0)).contains("itself"));
        assert!(why(set_upstream(&mut nodes, "f", &p, Some(&b), 0)).contains("is the primary"));
        assert!(why(set_upstream(&mut nodes, "f", &b, Some(&p), 0)).contains("--primary"));
        assert!(why(set_upstream(&mut nodes, "f", &b, Some("zz"), 0)).contains("zz"));
        set_upstream(&mut nodes, "f", &c, Some(&b), 0).unwrap();
        assert!(why(set_upstream(&mut nodes, "f", "d", Some(&c), 0)).contains("one level"));
        assert!(why(set_upstream(&mut nodes, "f", &b, Some("d"), 0)).contains("serves no one"));
    }
}
