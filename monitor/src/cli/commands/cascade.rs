//! `set-upstream`: the monitor decides (`crate::core::cascade`); the CLI
//! waits until the group converged and says where the node streams from.

use super::super::args::Wait;
use super::super::error::CliError;
use super::super::wait::converged;
use super::Operator;

impl Operator {
    pub(super) async fn set_upstream(
        &mut self,
        node: &str,
        upstream: Option<&str>,
        wait: Wait,
    ) -> Result<(), CliError> {
        let message = self
            .client
            .set_upstream(&self.formation, node, upstream)
            .await?;
        let no_wait = wait.no_wait;
        self.finish(wait, &message, converged).await?;
        if !no_wait {
            let state = self.state().await?;
            if let Some(n) = state.nodes.iter().find(|n| n.name == node) {
                println!("{node} streams from {}", streams_from(n));
            }
        }
        Ok(())
    }
}

/// Where node `n` streams from, as show-state says it.
pub(crate) fn streams_from(n: &pgpilot_proto::pb::NodeStatus) -> String {
    if n.streams_from.is_empty() {
        "no node".to_string()
    } else {
        n.streams_from.clone()
    }
}
