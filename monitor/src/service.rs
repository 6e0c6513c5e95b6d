//! gRPC handlers: authenticate and authorize the caller (`auth`), validate
//! input, call the store, map errors. No SQL and no state-machine logic
//! here.

use pgpilot_proto::delay;
use pgpilot_proto::pb::{self, monitor_server::Monitor};
use pgpilot_proto::ReplicationState as S;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Caller};
use crate::core::node_settings::{self, NodeSettings};
use crate::error::Error;
use crate::fsm;
use crate::store::{Registration, Store};

mod beats;
mod input;
mod parameters;
mod slots;

use input::*;

pub struct MonitorService {
    store: Store,
    /// The heartbeat path, unary and streamed.
    beats: beats::Beats,
    auth: Authenticator,
    /// This monitor process's id, as show-state names the one that answered.
    monitor_id: String,
}

impl MonitorService {
    /// A service that lets every caller do everything (plaintext).
    pub fn new(store: Store) -> Self {
        MonitorService::with_auth(store, Authenticator::open())
    }

    pub fn with_auth(store: Store, auth: Authenticator) -> Self {
        MonitorService {
            beats: beats::Beats::new(store.clone()),
            store,
            auth,
            monitor_id: String::new(),
        }
    }

    /// End the keepers' heartbeat streams when `stop` turns true (the
    /// monitor shuts down).
    pub fn stopping(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.beats = self.beats.stopping(stop);
        self
    }

    /// Wake keepers that stream their heartbeats when their group changes
    /// (a task listening on the monitor database for as long as it runs).
    pub fn waking_keepers(mut self) -> Self {
        let wakes = std::sync::Arc::new(crate::store::wakes::Wakes::default());
        tokio::spawn({
            let store = self.store.clone();
            let wakes = wakes.clone();
            async move { store.listen_for_wakes(wakes).await }
        });
        self.beats = self.beats.waking(wakes);
        self
    }

    /// Name this monitor process in the state it answers.
    pub fn answered_by(mut self, monitor_id: &str) -> Self {
        self.monitor_id = monitor_id.to_string();
        self
    }

    /// The authenticated caller of `request`; a refusal is logged (without
    /// any secret) and answered.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth.caller(request).map_err(refused)
    }

    /// Refuse everyone but operators (and trusted callers).
    fn operator<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        self.caller(request)?
            .require_operator(what)
            .map_err(refused)
    }
}

#[tonic::async_trait]
impl Monitor for MonitorService {
    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        let caller = self.caller(&request)?;
        caller.require_keeper().map_err(refused)?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        valid_name("node name", &r.name)?;
        caller.require_node(&formation, &r.name).map_err(refused)?;
        valid_host(&r.host)?;
        let port = u16::try_from(r.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("port {} is not between 1 and 65535", r.port))
            })?;
        if r.candidate_priority > 100 {
            return Err(Error::InvalidArgument(format!(
                "candidate priority {} is not between 0 and 100",
                r.candidate_priority
            ))
            .into());
        }
        delay::check_millis(r.apply_delay_ms).map_err(Error::InvalidArgument)?;
        node_settings::check_registration(
            &r.name,
            r.candidate_priority,
            r.replication_quorum,
            r.apply_delay_ms,
        )
        .map_err(|refusal| Error::InvalidArgument(refusal.to_string()))?;
        let node = self
            .store
            .register_node(&Registration {
                formation,
                name: r.name,
                host: r.host,
                port,
                system_identifier: r.system_identifier,
                candidate_priority: r.candidate_priority,
                replication_quorum: r.replication_quorum,
                apply_delay_ms: r.apply_delay_ms,
                timings: timings(r.timings, self.store.node_timeout())?,
            })
            .await?;
        tracing::info!(node = %node.snap.name, node_id = node.snap.id, goal = %node.snap.goal, "node registered");
        self.beats
            .remember(node.snap.id, &node.formation, &node.snap.name);
        Ok(Response::new(pb::RegisterNodeReply {
            node_id: node.snap.id,
            group_id: node.group_id as u32,
            goal_state: node.snap.goal.to_wire(),
            formation: node.formation,
        }))
    }

    async fn node_active(
        &self,
        request: Request<pb::NodeActiveRequest>,
    ) -> Result<Response<pb::NodeActiveReply>, Status> {
        let caller = self.caller(&request)?;
        let reply = self.beats.unary(&caller, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    type HeartbeatsStream = ReceiverStream<Result<pb::NodeActiveReply, Status>>;

    async fn heartbeats(
        &self,
        request: Request<Streaming<pb::NodeActiveRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        // Each heartbeat is checked as it comes, in the order a unary
        // call checks it (a request too large is refused as too large,
        // whoever sent it).
        let caller = self.caller(&request)?;
        Ok(Response::new(
            self.beats.stream(caller, request.into_inner()),
        ))
    }

    async fn get_formation_state(
        &self,
        request: Request<pb::GetFormationStateRequest>,
    ) -> Result<Response<pb::FormationState>, Status> {
        self.operator(&request, "show-state")?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        let (nodes, now, nss) = self.store.formation_state(&formation).await?;
        // Why each group waits: the state machine run read-only.
        let mut waiting = std::collections::BTreeMap::new();
        let mut groups: Vec<i32> = nodes.iter().map(|n| n.group_id).collect();
        groups.dedup();
        let mut synchronous_standby_names = String::new();
        let mut streams_from = std::collections::BTreeMap::new();
        for g in groups {
            let snaps: Vec<_> = nodes
                .iter()
                .filter(|n| n.group_id == g)
                .map(|n| n.snap.clone())
                .collect();
            let settings = self.store.fsm_settings(nss);
            let env = crate::core::Env::new(now, settings);
            for (k, n) in snaps.iter().enumerate() {
                let from = crate::core::cascade::follow(&snaps, k, &env);
                streams_from.insert(n.id, from.map(|f| snaps[f].name.clone()));
            }
            let outcome = fsm::decide(&snaps, now, &settings);
            waiting.insert(g, outcome.waiting);
            if let Some(p) = snaps.iter().position(|n| n.goal.is_writable_primary()) {
                synchronous_standby_names =
                    fsm::replication_plan(&snaps, p, nss.number_sync_standbys)
                        .synchronous_standby_names;
            }
        }
        let (declared, held) = self
            .store
            .slot_positions(&formation)
            .await
            .map_err(crate::error::Error::from)?;
        let nodes = nodes
            .iter()
            .map(|n| pb::NodeStatus {
                node_id: n.snap.id,
                name: n.snap.name.clone(),
                host: n.host.clone(),
                port: u32::from(n.port),
                group_id: n.group_id as u32,
                reported_state: n.snap.reported.to_wire(),
                goal_state: n.snap.goal.to_wire(),
                pg_running: n.snap.pg_running,
                lsn: n.snap.lsn,
                timeline: n.snap.timeline,
                health: n.snap.health.as_str().to_string(),
                heartbeat_age_ms: n
                    .snap
                    .last_heartbeat
                    .map(|t| (now - t).num_milliseconds().max(0))
                    .unwrap_or(-1),
                candidate_priority: n.snap.candidate_priority,
                replication_quorum: n.snap.replication_quorum,
                wal_receiver_streaming: n.snap.wal_receiver_streaming,
                system_identifier: n.system_identifier,
                waiting_reason: waiting
                    .get(&n.group_id)
                    .map(|w| {
                        w.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default(),
                waiting_kinds: waiting
                    .get(&n.group_id)
                    .map(|w| w.iter().map(|w| w.kind().to_string()).collect())
                    .unwrap_or_default(),
                work: n.work.clone(),
                unreachable: crate::core::unreachable(&n.snap, now, self.store.node_timeout()),
                restart_requested: n.restart.requested,
                restart_done: n.restart.done,
                pending_restart: n.pending_restart.clone(),
                parameters_applied: n.parameters_applied,
                upstream: n.snap.upstream.clone().unwrap_or_default(),
                streams_from: streams_from
                    .get(&n.snap.id)
                    .cloned()
                    .flatten()
                    .unwrap_or_default(),
                slots: held
                    .get(&n.snap.id)
                    .map(|h| h.iter().map(|p| p.to_wire(false)).collect())
                    .unwrap_or_default(),
                apply_delay_ms: n.snap.apply_delay_ms,
            })
            .collect();
        let monitors = self
            .store
            .monitors()
            .await
            .map_err(crate::error::Error::from)?
            .into_iter()
            .map(|m| pb::MonitorStatus {
                monitor_id: m.id,
                url: m.url,
                seen_ago_ms: m.seen_ago_ms,
                holds_lease: m.holds_lease,
            })
            .collect();
        let paused = self
            .store
            .paused(&formation)
            .await
            .map_err(crate::error::Error::from)?;
        let (paused_by, paused_at) = paused.map(|p| (p.by, p.since)).unwrap_or_default();
        Ok(Response::new(pb::FormationState {
            formation,
            nodes,
            number_sync_standbys: nss.number_sync_standbys,
            synchronous_standby_names,
            monitors,
            answered_by: self.monitor_id.clone(),
            paused_by,
            paused_at,
            parameters_version: nss.parameters_version,
            permanent_slots: declared.iter().map(Into::into).collect(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsReply>, Status> {
        self.operator(&request, "show-events")?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        let count = if r.count == 0 {
            20
        } else {
            r.count.min(10_000)
        };
        let events = self.store.events(&formation, count).await?;
        let wire = |s: &str| s.parse::<S>().map(S::to_wire).unwrap_or(0);
        Ok(Response::new(pb::ListEventsReply {
            events: events
                .into_iter()
                .map(|e| pb::Event {
                    event_id: e.event_id,
                    at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    formation: e.formation,
                    group_id: e.group_id as u32,
                    node_id: e.node_id,
                    node_name: e.node_name,
                    reported_state: wire(&e.reported),
                    goal_from: wire(&e.goal_from),
                    goal_to: wire(&e.goal_to),
                    reason: e.reason,
                    kind: e.kind.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn perform_failover(
        &self,
        request: Request<pb::PerformFailoverRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "perform-failover")?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        let group = i32::try_from(r.group_id)
            .map_err(|_| Error::InvalidArgument(format!("group {} does not exist", r.group_id)))?;
        let target = (!r.target_node.is_empty()).then_some(r.target_node.as_str());
        if let Some(t) = target {
            valid_name("node name", t)?;
        }
        let message = if r.allow_data_loss {
            if target.is_some() {
                return Err(Error::InvalidArgument(
                    "--allow-data-loss cannot name a target: the most advanced reporting standby is promoted".into(),
                )
                .into());
            }
            self.store.force_election(&formation, group).await?
        } else {
            self.store
                .perform_failover(&formation, group, target)
                .await?
        };
        tracing::info!(%formation, group, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn set_number_sync_standbys(
        &self,
        request: Request<pb::SetNumberSyncStandbysRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "set-number-sync-standbys")?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        valid_number_sync_standbys(r.number_sync_standbys)?;
        let message = self
            .store
            .set_number_sync_standbys(&formation, r.number_sync_standbys)
            .await?;
        tracing::info!(%formation, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn set_node_settings(
        &self,
        request: Request<pb::SetNodeSettingsRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(
            &request,
            "set-candidate-priority / set-replication-quorum / set-apply-delay",
        )?;
        let r = request.into_inner();
        let formation = formation_and_node(&r.formation, &r.node)?;
        if r.candidate_priority.is_none()
            && r.replication_quorum.is_none()
            && r.apply_delay_ms.is_none()
        {
            return Err(Error::InvalidArgument(
                "nothing to change: give candidate_priority, replication_quorum or apply_delay_ms"
                    .into(),
            )
            .into());
        }
        if let Some(ms) = r.apply_delay_ms {
            delay::check_millis(ms).map_err(Error::InvalidArgument)?;
        }
        if r.candidate_priority.is_some_and(|p| p > 100) {
            return Err(Error::InvalidArgument(format!(
                "candidate priority {} is not between 0 and 100",
                r.candidate_priority.unwrap_or_default()
            ))
            .into());
        }
        let message = self
            .store
            .set_node_settings(
                &formation,
                &r.node,
                NodeSettings {
                    candidate_priority: r.candidate_priority,
                    replication_quorum: r.replication_quorum,
                    apply_delay_ms: r.apply_delay_ms,
                },
            )
            .await?;
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn set_maintenance(
        &self,
        request: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "enable-maintenance / disable-maintenance")?;
        let r = request.into_inner();
        let formation = formation_and_node(&r.formation, &r.node)?;
        let message = self
            .store
            .set_maintenance(&formation, &r.node, r.enabled)
            .await?;
        tracing::info!(%formation, node = %r.node, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn drop_node(
        &self,
        request: Request<pb::DropNodeRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "drop-node")?;
        let r = request.into_inner();
        let formation = formation_and_node(&r.formation, &r.node)?;
        let message = self.store.drop_node(&formation, &r.node, r.force).await?;
        tracing::info!(%formation, node = %r.node, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn reinit_node(
        &self,
        request: Request<pb::ReinitNodeRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "reinit")?;
        let r = request.into_inner();
        let formation = formation_and_node(&r.formation, &r.node)?;
        let message = self.store.reinit_node(&formation, &r.node).await?;
        tracing::info!(%formation, node = %r.node, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn restart_node(
        &self,
        request: Request<pb::RestartNodeRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = self.caller(&request)?;
        caller.require_operator("restart").map_err(refused)?;
        let r = request.into_inner();
        let formation = formation_and_node(&r.formation, &r.node)?;
        let message = self
            .store
            .restart_node(&formation, &r.node, &caller.operator_identity())
            .await?;
        tracing::info!(%formation, node = %r.node, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn set_parameter(
        &self,
        request: Request<pb::SetParameterRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = self.caller(&request)?;
        let what = if request.get_ref().reset {
            "reset-parameter"
        } else {
            "set-parameter"
        };
        caller.require_operator(what).map_err(refused)?;
        let message = parameters::set(&self.store, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn reload_formation(
        &self,
        request: Request<pb::ReloadFormationRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = self.caller(&request)?;
        caller.require_operator("reload").map_err(refused)?;
        let message = parameters::reload(&self.store, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn set_upstream(
        &self,
        request: Request<pb::SetUpstreamRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = self.caller(&request)?;
        caller.require_operator("set-upstream").map_err(refused)?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        valid_name("node", &r.node)?;
        if !r.upstream.is_empty() {
            valid_name("upstream", &r.upstream)?;
        }
        let upstream = (!r.upstream.is_empty()).then_some(r.upstream.as_str());
        let message = self
            .store
            .set_upstream(&formation, &r.node, upstream)
            .await?;
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn create_slot(
        &self,
        request: Request<pb::CreateSlotRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = self.caller(&request)?;
        caller.require_operator("create-slot").map_err(refused)?;
        let message = slots::create(&self.store, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn drop_slot(
        &self,
        request: Request<pb::DropSlotRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = self.caller(&request)?;
        caller.require_operator("drop-slot").map_err(refused)?;
        let message = slots::drop(&self.store, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn list_parameters(
        &self,
        request: Request<pb::ListParametersRequest>,
    ) -> Result<Response<pb::ListParametersReply>, Status> {
        self.operator(&request, "show-parameters")?;
        let reply = parameters::list(&self.store, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn create_formation(
        &self,
        request: Request<pb::CreateFormationRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "create-formation")?;
        let r = request.into_inner();
        valid_name("formation", &r.formation)?;
        valid_number_sync_standbys(r.number_sync_standbys)?;
        let message = self
            .store
            .create_formation(&r.formation, r.number_sync_standbys)
            .await?;
        tracing::info!(formation = %r.formation, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn drop_formation(
        &self,
        request: Request<pb::DropFormationRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        self.operator(&request, "drop-formation")?;
        let r = request.into_inner();
        valid_name("formation", &r.formation)?;
        let message = self.store.drop_formation(&r.formation).await?;
        tracing::info!(formation = %r.formation, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }

    async fn list_formations(
        &self,
        request: Request<pb::ListFormationsRequest>,
    ) -> Result<Response<pb::ListFormationsReply>, Status> {
        self.operator(&request, "show-formations")?;
        let formations = self
            .store
            .list_formations()
            .await?
            .into_iter()
            .map(|f| {
                let (paused_by, paused_at) = f.paused.map(|p| (p.by, p.since)).unwrap_or_default();
                pb::FormationSummary {
                    formation: f.name,
                    number_sync_standbys: f.number_sync_standbys,
                    nodes: f.nodes,
                    paused_by,
                    paused_at,
                }
            })
            .collect();
        Ok(Response::new(pb::ListFormationsReply { formations }))
    }

    async fn set_paused(
        &self,
        request: Request<pb::SetPausedRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let what = if request.get_ref().paused {
            "pause"
        } else {
            "resume"
        };
        let caller = self.caller(&request)?;
        caller.require_operator(what).map_err(refused)?;
        let r = request.into_inner();
        let formation = formation_or_default(&r.formation).to_string();
        valid_name("formation", &formation)?;
        let message = self
            .store
            .set_paused(&formation, r.paused, &caller.operator_identity())
            .await?;
        tracing::warn!(%formation, operator = %caller, "{message}");
        Ok(Response::new(pb::OperationReply { message }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::KeeperNote;

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in ["127.0.0.1", "node1", "db-1.example.com", "fd00::1"] {
            assert!(valid_host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x' password=y", "h\nhost=evil", &"a".repeat(256)] {
            let err = valid_host(bad).unwrap_err().to_string();
            assert!(err.contains("host"), "{err}");
        }
    }

    #[test]
    fn names_are_refused_in_a_short_sentence() {
        for ok in ["node1", "a", "db-1.x_y", &"n".repeat(MAX_NAME)] {
            assert!(valid_name("node name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a\0b", "nœud", "x'y", &"n".repeat(MAX_NAME + 1)] {
            let err = valid_name("node name", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().starts_with("node name "), "{err}");
        }
        // A huge value is not echoed back whole: the answer travels in a
        // header clients bound.
        let err = valid_name("formation", &"x".repeat(200_000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("(200000 characters) is not valid"), "{err}");
        let err = valid_host(&"h".repeat(100_000)).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn states_and_counts_are_checked() {
        assert_eq!(
            state(S::Primary.to_wire(), "reported_state").unwrap(),
            S::Primary
        );
        for bad in [0, 22, -1, i32::MAX] {
            let err = state(bad, "reported_state").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("reported_state {bad} is not a replication state")),
                "{err}"
            );
            assert!(err.contains("1 to 21 (init to dropped)"), "{err}");
        }
        assert_eq!(start_failures(3).unwrap(), 3);
        assert_eq!(
            start_failures(MAX_START_FAILURES).unwrap(),
            MAX_START_FAILURES
        );
        // Stored as a database integer: more would fail the write.
        let err = start_failures(u32::MAX).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string().contains("pg_start_failures 4294967295"),
            "{err}"
        );
    }

    #[test]
    fn keeper_notes_are_bounded_and_unknown_kinds_named_in_the_text() {
        use pgpilot_proto::notes::{MAX_PER_HEARTBEAT, STANDBY_REWOUND, UNKNOWN};
        let note = |kind: &str, text: &str| pb::KeeperNote {
            kind: kind.into(),
            text: text.into(),
        };
        let got = notes(&[note(STANDBY_REWOUND, "rewound"), note("later_kind", "x")]).unwrap();
        assert_eq!(
            got,
            [
                KeeperNote {
                    kind: STANDBY_REWOUND,
                    text: "rewound".into()
                },
                KeeperNote {
                    kind: UNKNOWN,
                    text: "[later_kind] x".into()
                }
            ]
        );
        assert!(notes(&[]).unwrap().is_empty());
        let many = vec![note(STANDBY_REWOUND, "x"); MAX_PER_HEARTBEAT + 1];
        let err = notes(&many).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("send at most"), "{err}");
    }

    #[test]
    fn timings_are_bounded() {
        let t = |hb, fence, wst| {
            timings(
                Some(pb::KeeperTimings {
                    heartbeat_interval_ms: hb,
                    fence_timeout_ms: fence,
                    wal_sender_timeout_ms: wst,
                }),
                Duration::from_secs(2),
            )
        };
        assert!(t(500, 1500, 2000).is_ok());
        let err = t(0, 1500, 2000).unwrap_err().to_string();
        assert!(err.contains("heartbeat_interval"), "{err}");
        assert!(t(500, u64::MAX, 2000).is_err());
        assert!(timings(None, Duration::from_secs(2)).is_err());
        // The fence must act before the monitor gives up on the primary.
        assert!(t(500, 2000, 2000).is_ok());
        let err = t(500, 2500, 2000).unwrap_err().to_string();
        assert!(
            err.contains("fence_timeout (2s 500ms)") && err.contains("node_timeout (2s)"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
