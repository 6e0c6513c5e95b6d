//! The dispatch: which code runs for each subcommand, one small function
//! per subcommand, printing its result or waiting for the change it asked
//! for.

use std::time::Duration;

use pgpilot_proto::pb::FormationState;
use pgpilot_proto::ReplicationState as S;

use super::args::{Args, Command, GroupOp, OperatorCommand, Wait};
use super::client::Client;
use super::error::CliError;
use super::follow::{follow_events, recent_events, until_interrupted, watch_state};
use super::json::{pretty, EventJson, FormationJson, NodeJson, SettingsJson, StateJson};
use super::render::{find_node, multi_host_uri};
use super::serve;
use super::tables::{
    events_table, formations_table, node_detail, nodes_table, settings_table, state_table,
};
use super::wait::{
    converged, converged_with, handed_over, live_nodes_settled, primary_of, resumed, settled,
    wait_until,
};
use crate::certs;
use crate::core::node_settings::NodeSettings;

mod cascade;
mod parameters;
mod restart;
mod slots;

pub(crate) use slots::{describe as describe_slot, holds as slot_held};

/// Run the subcommand `args` names.
pub async fn run(args: Args) -> Result<(), CliError> {
    let security = args.security();
    match args.command {
        Command::Run { config, .. } => serve::run(&config).await,
        Command::GenCerts {
            dir,
            monitor_hosts,
            keepers,
            operators,
            postgres_servers,
            token,
            days,
        } => gen_certs(certs::Request {
            dir,
            monitor_hosts,
            keepers,
            operators,
            postgres_servers,
            token,
            days,
        }),
        Command::Operate(command) => {
            let client = Client::connect_any(&args.monitor, &security).await?;
            let mut operator = Operator {
                client,
                formation: args.formation,
            };
            operator.run(command).await
        }
    }
}

/// `gen-certs`: write the files and name each one.
fn gen_certs(request: certs::Request) -> Result<(), CliError> {
    let written = certs::generate(&request).map_err(|e| match e {
        certs::CertError::Invalid(m) => CliError::Usage(m),
        other => CliError::Failed(other.to_string()),
    })?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Print a view: JSON for scripts with `json`, else the text for people.
fn print_view<J: serde::Serialize>(
    json: bool,
    as_json: impl FnOnce() -> J,
    text: impl FnOnce() -> String,
) {
    if json {
        println!("{}", pretty(&as_json()));
    } else {
        print!("{}", text());
    }
}

/// An operator connected to a monitor, acting on one formation.
struct Operator {
    client: Client,
    formation: String,
}

impl Operator {
    async fn run(&mut self, command: OperatorCommand) -> Result<(), CliError> {
        use OperatorCommand as C;
        match command {
            C::ShowState { json, watch } => self.show_state(json, watch).await,
            C::ShowNodes { json } => self.show_nodes(json).await,
            C::ShowNode { node, json } => self.show_node(&node, json).await,
            C::ShowSettings { json } => self.show_settings(json).await,
            C::ShowEvents {
                count,
                node,
                follow,
                json,
            } => self.show_events(count, node.as_deref(), follow, json).await,
            C::ShowUri { user, read_only } => self.show_uri(&user, read_only).await,
            C::ShowFormations { json } => {
                let formations = self.client.formations().await?;
                print_view(
                    json,
                    || {
                        formations
                            .iter()
                            .map(FormationJson::from)
                            .collect::<Vec<_>>()
                    },
                    || formations_table(&formations),
                );
                Ok(())
            }
            C::CreateFormation {
                name,
                number_sync_standbys,
            } => {
                let message = self
                    .client
                    .create_formation(&name, number_sync_standbys)
                    .await?;
                println!("{message}");
                Ok(())
            }
            C::DropFormation { name } => {
                println!("{}", self.client.drop_formation(&name).await?);
                Ok(())
            }
            C::Pause { wait } => {
                let message = self.client.set_paused(&self.formation, true).await?;
                self.finish(wait, &message, live_nodes_settled).await
            }
            C::Resume { wait } => {
                let message = self.client.set_paused(&self.formation, false).await?;
                self.finish(wait, &message, resumed).await
            }
            C::PerformFailover {
                allow_data_loss: true,
                op,
            } => self.force_election(op).await,
            C::PerformFailover { op, .. } => self.hand_over(op, None).await,
            C::PerformSwitchover { to, op } => self.hand_over(op, to.as_deref()).await,
            C::PerformPromotion { node, op } => self.hand_over(op, Some(&node)).await,
            C::SetNumberSyncStandbys { value, wait } => {
                self.set_number_sync_standbys(value, wait).await
            }
            C::SetCandidatePriority {
                node,
                priority,
                wait,
            } => {
                let asked = NodeSettings {
                    candidate_priority: Some(priority),
                    ..Default::default()
                };
                self.set_node_settings(&node, asked, wait).await
            }
            C::SetReplicationQuorum { node, quorum, wait } => {
                let asked = NodeSettings {
                    replication_quorum: Some(quorum),
                    ..Default::default()
                };
                self.set_node_settings(&node, asked, wait).await
            }
            C::SetApplyDelay { node, delay, wait } => {
                let asked = NodeSettings {
                    apply_delay_ms: Some(delay),
                    ..Default::default()
                };
                self.set_node_settings(&node, asked, wait).await
            }
            C::EnableMaintenance { node, wait } => self.set_maintenance(&node, true, wait).await,
            C::DisableMaintenance { node, wait } => self.set_maintenance(&node, false, wait).await,
            C::DropNode { node, force, wait } => self.drop_node(&node, force, wait).await,
            C::Reinit { node, wait } => self.reinit(&node, wait).await,
            C::SetParameter { name, value, wait } => {
                self.set_parameter(&name, Some(&value), wait).await
            }
            C::ResetParameter { name, wait } => self.set_parameter(&name, None, wait).await,
            C::Reload { wait } => self.reload(wait).await,
            C::ShowParameters { json } => self.show_parameters(json).await,
            C::CreateSlot {
                name,
                physical,
                plugin,
                database,
                wait,
            } => {
                let slot = pgpilot_proto::pb::PermanentSlot {
                    name,
                    kind: if physical { "physical" } else { "logical" }.into(),
                    plugin: plugin.unwrap_or_default(),
                    database: database.unwrap_or_default(),
                };
                self.create_slot(slot, wait).await
            }
            C::DropSlot { name, wait } => self.drop_slot(&name, wait).await,
            C::SetUpstream {
                node,
                upstream,
                primary: _,
                wait,
            } => self.set_upstream(&node, upstream.as_deref(), wait).await,
            C::ShowSlots { json } => self.show_slots(json).await,
            C::Restart {
                node,
                all: _,
                pending_only,
                in_place,
                op,
            } => {
                self.restart(node.as_deref(), pending_only, in_place, op)
                    .await
            }
        }
    }

    async fn state(&mut self) -> Result<FormationState, CliError> {
        self.client.state(&self.formation).await
    }

    async fn show_state(&mut self, json: bool, watch: Option<Duration>) -> Result<(), CliError> {
        if let Some(interval) = watch {
            return until_interrupted(watch_state(&mut self.client, &self.formation, interval))
                .await;
        }
        let state = self.state().await?;
        print_view(json, || StateJson::from(&state), || state_table(&state));
        Ok(())
    }

    async fn show_nodes(&mut self, json: bool) -> Result<(), CliError> {
        let state = self.state().await?;
        let nodes = || -> Vec<NodeJson> {
            state
                .nodes
                .iter()
                .map(|n| NodeJson::new(&state, n))
                .collect()
        };
        print_view(json, nodes, || nodes_table(&state));
        Ok(())
    }

    async fn show_node(&mut self, name: &str, json: bool) -> Result<(), CliError> {
        let state = self.state().await?;
        let node = find_node(&state, name)?;
        print_view(
            json,
            || NodeJson::new(&state, node),
            || node_detail(&state, node),
        );
        Ok(())
    }

    async fn show_settings(&mut self, json: bool) -> Result<(), CliError> {
        let state = self.state().await?;
        print_view(
            json,
            || SettingsJson::from(&state),
            || settings_table(&state),
        );
        Ok(())
    }

    async fn show_events(
        &mut self,
        count: u32,
        node: Option<&str>,
        follow: bool,
        json: bool,
    ) -> Result<(), CliError> {
        if follow {
            let work = follow_events(&mut self.client, &self.formation, count, node, json);
            return until_interrupted(work).await;
        }
        let (events, _) = recent_events(&mut self.client, &self.formation, count, node).await?;
        print_view(
            json,
            || events.iter().map(EventJson::from).collect::<Vec<_>>(),
            || format!("{}\n", events_table(&events)),
        );
        Ok(())
    }

    async fn show_uri(&mut self, user: &str, read_only: bool) -> Result<(), CliError> {
        let state = self.state().await?;
        println!("{}", multi_host_uri(&state, user, read_only));
        Ok(())
    }

    /// `perform-failover --allow-data-loss`: finish a stuck election; done
    /// once another node is the settled writable primary.
    async fn force_election(&mut self, op: GroupOp) -> Result<(), CliError> {
        let before = self.state().await?;
        let old = primary_of(&before, op.group).map(|n| n.node_id);
        let message = self
            .client
            .force_election(&self.formation, op.group)
            .await?;
        self.finish(op.wait, &message, |s| {
            s.nodes
                .iter()
                .any(|n| Some(n.node_id) != old && settled(n, &[S::WaitPrimary, S::Primary]))
        })
        .await
    }

    /// Planned failover or switchover (to `target` when named).
    async fn hand_over(&mut self, op: GroupOp, target: Option<&str>) -> Result<(), CliError> {
        let before = self.state().await?;
        let old = primary_of(&before, op.group)
            .map(|n| n.node_id)
            .ok_or_else(|| {
                CliError::Failed(format!(
                    "group {} has no primary right now: nothing to hand over",
                    op.group
                ))
            })?;
        let message = self
            .client
            .perform_failover(&self.formation, op.group, target)
            .await?;
        self.finish(op.wait, &message, |s| {
            handed_over(s, old, target, S::Secondary)
        })
        .await
    }

    async fn set_number_sync_standbys(&mut self, value: u32, wait: Wait) -> Result<(), CliError> {
        let message = self
            .client
            .set_number_sync_standbys(&self.formation, value)
            .await?;
        self.finish(wait, &message, converged).await
    }

    async fn set_node_settings(
        &mut self,
        node: &str,
        asked: NodeSettings,
        wait: Wait,
    ) -> Result<(), CliError> {
        let message = self
            .client
            .set_node_settings(&self.formation, node, asked)
            .await?;
        self.finish(wait, &message, converged).await
    }

    /// `enable-maintenance` / `disable-maintenance`: done once the node is
    /// in maintenance, or a secondary again.
    async fn set_maintenance(
        &mut self,
        node: &str,
        enabled: bool,
        wait: Wait,
    ) -> Result<(), CliError> {
        let message = self
            .client
            .set_maintenance(&self.formation, node, enabled)
            .await?;
        let ends = if enabled {
            S::Maintenance
        } else {
            S::Secondary
        };
        self.finish(wait, &message, |s| converged_with(s, node, ends))
            .await
    }

    async fn drop_node(&mut self, node: &str, force: bool, wait: Wait) -> Result<(), CliError> {
        let message = self.client.drop_node(&self.formation, node, force).await?;
        self.finish(wait, &message, |s| !s.nodes.iter().any(|n| n.name == node))
            .await
    }

    async fn reinit(&mut self, node: &str, wait: Wait) -> Result<(), CliError> {
        let message = self.client.reinit_node(&self.formation, node).await?;
        self.finish(wait, &message, |s| converged_with(s, node, S::Secondary))
            .await
    }

    /// Print what the monitor started, then (unless --no-wait) wait for `done`.
    async fn finish(
        &mut self,
        wait: Wait,
        message: &str,
        done: impl Fn(&FormationState) -> bool,
    ) -> Result<(), CliError> {
        println!("{message}");
        if !wait.no_wait {
            wait_until(
                &mut self.client,
                &self.formation,
                wait.timeout,
                "the change",
                done,
            )
            .await?;
            println!("done");
        }
        Ok(())
    }
}
