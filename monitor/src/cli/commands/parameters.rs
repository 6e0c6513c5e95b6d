//! `set-parameter`, `reset-parameter` and `show-parameters`: the monitor
//! checks and stores; the CLI waits until every node that answers has
//! applied the new version, then says which nodes need a restart.

use pgpilot_proto::pb::{self, FormationState};
use serde::Serialize;

use super::super::args::Wait;
use super::super::error::CliError;
use super::super::tables::pending_restart_line;
use super::super::wait::wait_until;
use super::{print_view, Operator};

/// `show-parameters --json`.
#[derive(Debug, Serialize)]
struct ParametersJson {
    formation: String,
    version: u64,
    parameters: std::collections::BTreeMap<String, String>,
    nodes: Vec<NodeParametersJson>,
}

#[derive(Debug, Serialize)]
struct NodeParametersJson {
    name: String,
    /// The version its keeper last wrote into pgpilot.conf.
    parameters_applied: u64,
    pending_restart: Vec<String>,
}

impl Operator {
    /// Set `name` to `value` (reset it when `None`) and wait until every
    /// node that answers applied it.
    pub(super) async fn set_parameter(
        &mut self,
        name: &str,
        value: Option<&str>,
        wait: Wait,
    ) -> Result<(), CliError> {
        let message = self
            .client
            .set_parameter(&self.formation, name, value)
            .await?;
        println!("{message}");
        self.wait_applied(wait, "applying the parameters", "applied")
            .await
    }

    /// Have every node reload its configuration and wait until each did.
    pub(super) async fn reload(&mut self, wait: Wait) -> Result<(), CliError> {
        let message = self.client.reload(&self.formation).await?;
        println!("{message}");
        self.wait_applied(wait, "reloading the configuration", "reloaded")
            .await
    }

    /// Unless `--no-wait`: wait until every node that answers applied the
    /// formation's parameters version as it is now, then name the
    /// settings pending a restart.
    async fn wait_applied(&mut self, wait: Wait, what: &str, done: &str) -> Result<(), CliError> {
        if wait.no_wait {
            return Ok(());
        }
        let version = self.client.parameters(&self.formation).await?.version;
        wait_until(&mut self.client, &self.formation, wait.timeout, what, |s| {
            applied(s, version)
        })
        .await?;
        let state = self.state().await?;
        println!("{done} by every node (version {version})");
        print!("{}", pending_lines(&state));
        Ok(())
    }

    pub(super) async fn show_parameters(&mut self, json: bool) -> Result<(), CliError> {
        let reply = self.client.parameters(&self.formation).await?;
        let state = self.state().await?;
        print_view(
            json,
            || view(&self.formation, &reply, &state),
            || text(&reply, &state),
        );
        Ok(())
    }
}

/// Every node that answers has applied parameters `version`.
pub(crate) fn applied(state: &FormationState, version: u64) -> bool {
    state
        .nodes
        .iter()
        .filter(|n| !n.unreachable)
        .all(|n| n.parameters_applied >= version)
}

fn view(
    formation: &str,
    reply: &pb::ListParametersReply,
    state: &FormationState,
) -> ParametersJson {
    ParametersJson {
        formation: formation.to_string(),
        version: reply.version,
        parameters: reply
            .parameters
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect(),
        nodes: state
            .nodes
            .iter()
            .map(|n| NodeParametersJson {
                name: n.name.clone(),
                parameters_applied: n.parameters_applied,
                pending_restart: n.pending_restart.clone(),
            })
            .collect(),
    }
}

fn text(reply: &pb::ListParametersReply, state: &FormationState) -> String {
    let mut out = if reply.parameters.is_empty() {
        "no parameters set for the formation (set-parameter NAME VALUE)\n".to_string()
    } else {
        let width = reply
            .parameters
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(0);
        reply
            .parameters
            .iter()
            .map(|p| format!("{:<width$}  {}\n", p.name, p.value))
            .collect()
    };
    for n in &state.nodes {
        let behind = if n.parameters_applied >= reply.version {
            "applied".to_string()
        } else {
            format!("not applied yet (has version {})", n.parameters_applied)
        };
        out.push_str(&format!("{}: {behind}\n", n.name));
    }
    out.push_str(&pending_lines(state));
    out
}

/// A line per node with settings pending a restart.
fn pending_lines(state: &FormationState) -> String {
    state
        .nodes
        .iter()
        .filter_map(pending_restart_line)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FormationState {
        FormationState {
            formation: "default".into(),
            nodes: vec![
                pb::NodeStatus {
                    name: "node1".into(),
                    parameters_applied: 3,
                    ..Default::default()
                },
                pb::NodeStatus {
                    name: "node2".into(),
                    parameters_applied: 2,
                    pending_restart: vec!["shared_buffers".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_version_is_applied_once_every_node_that_answers_has_it() {
        let mut s = state();
        assert!(applied(&s, 2));
        assert!(!applied(&s, 3));
        s.nodes[1].unreachable = true;
        assert!(applied(&s, 3), "an unreachable node is not waited for");
    }

    #[test]
    fn the_view_names_values_versions_and_pending_restarts() {
        let reply = pb::ListParametersReply {
            version: 3,
            parameters: vec![pb::Parameter {
                name: "work_mem".into(),
                value: "16MB".into(),
            }],
        };
        let out = text(&reply, &state());
        assert!(out.contains("work_mem  16MB"), "{out}");
        assert!(out.contains("node1: applied"), "{out}");
        assert!(
            out.contains("node2: not applied yet (has version 2)"),
            "{out}"
        );
        assert!(
            out.contains("pending restart: node2 (shared_buffers)"),
            "{out}"
        );
        let json = view("default", &reply, &state());
        assert_eq!(json.parameters["work_mem"], "16MB");
        let empty = text(
            &pb::ListParametersReply::default(),
            &FormationState::default(),
        );
        assert!(empty.contains("no parameters set"), "{empty}");
    }
}
