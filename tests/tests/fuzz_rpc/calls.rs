//! The requests the fuzzer sends (one per RPC), their replies, and what
//! has been registered so far.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use pgpilot_proto::pb;
use pgpilot_proto::security::{self};
use prost::Message as _;

use crate::operator::OwnFormations;

#[derive(Debug, Clone)]
pub(crate) enum Call {
    RegisterNode(pb::RegisterNodeRequest),
    NodeActive(Box<pb::NodeActiveRequest>),
    GetFormationState(pb::GetFormationStateRequest),
    ListEvents(pb::ListEventsRequest),
    PerformFailover(pb::PerformFailoverRequest),
    SetNumberSyncStandbys(pb::SetNumberSyncStandbysRequest),
    SetNodeSettings(pb::SetNodeSettingsRequest),
    SetMaintenance(pb::SetMaintenanceRequest),
    DropNode(pb::DropNodeRequest),
    ReinitNode(pb::ReinitNodeRequest),
    SetPaused(pb::SetPausedRequest),
    RestartNode(pb::RestartNodeRequest),
    SetParameter(pb::SetParameterRequest),
    ListParameters(pb::ListParametersRequest),
    ReloadFormation(pb::ReloadFormationRequest),
    CreateFormation(pb::CreateFormationRequest),
    DropFormation(pb::DropFormationRequest),
    ListFormations(pb::ListFormationsRequest),
}

pub(crate) const RPCS: [&str; 18] = [
    "RegisterNode",
    "NodeActive",
    "GetFormationState",
    "ListEvents",
    "PerformFailover",
    "SetNumberSyncStandbys",
    "SetNodeSettings",
    "SetMaintenance",
    "DropNode",
    "ReinitNode",
    "SetPaused",
    "RestartNode",
    "SetParameter",
    "ListParameters",
    "ReloadFormation",
    "CreateFormation",
    "DropFormation",
    "ListFormations",
];

impl Call {
    pub(crate) fn rpc(&self) -> &'static str {
        match self {
            Call::RegisterNode(_) => RPCS[0],
            Call::NodeActive(_) => RPCS[1],
            Call::GetFormationState(_) => RPCS[2],
            Call::ListEvents(_) => RPCS[3],
            Call::PerformFailover(_) => RPCS[4],
            Call::SetNumberSyncStandbys(_) => RPCS[5],
            Call::SetNodeSettings(_) => RPCS[6],
            Call::SetMaintenance(_) => RPCS[7],
            Call::DropNode(_) => RPCS[8],
            Call::ReinitNode(_) => RPCS[9],
            Call::SetPaused(_) => RPCS[10],
            Call::RestartNode(_) => RPCS[11],
            Call::SetParameter(_) => RPCS[12],
            Call::ListParameters(_) => RPCS[13],
            Call::ReloadFormation(_) => RPCS[14],
            Call::CreateFormation(_) => RPCS[15],
            Call::DropFormation(_) => RPCS[16],
            Call::ListFormations(_) => RPCS[17],
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Call::RegisterNode(r) => r.encoded_len(),
            Call::NodeActive(r) => r.encoded_len(),
            Call::GetFormationState(r) => r.encoded_len(),
            Call::ListEvents(r) => r.encoded_len(),
            Call::PerformFailover(r) => r.encoded_len(),
            Call::SetNumberSyncStandbys(r) => r.encoded_len(),
            Call::SetNodeSettings(r) => r.encoded_len(),
            Call::SetMaintenance(r) => r.encoded_len(),
            Call::DropNode(r) => r.encoded_len(),
            Call::ReinitNode(r) => r.encoded_len(),
            Call::SetPaused(r) => r.encoded_len(),
            Call::RestartNode(r) => r.encoded_len(),
            Call::SetParameter(r) => r.encoded_len(),
            Call::ListParameters(r) => r.encoded_len(),
            Call::ReloadFormation(r) => r.encoded_len(),
            Call::CreateFormation(r) => r.encoded_len(),
            Call::DropFormation(r) => r.encoded_len(),
            Call::ListFormations(r) => r.encoded_len(),
        }
    }

    pub(crate) fn is_operator_rpc(&self) -> bool {
        !matches!(self, Call::RegisterNode(_) | Call::NodeActive(_))
    }

    /// The request as a person reads it: long strings shortened.
    pub(crate) fn describe(&self) -> String {
        shorten_debug(&format!("{self:?}"))
    }
}

/// `text` (a `Debug` rendering) with every string literal longer than 120
/// characters replaced by its start and its length.
pub(crate) fn shorten_debug(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut literal = String::new();
        let mut escaped = false;
        for c in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                break;
            }
            literal.push(c);
        }
        if literal.chars().count() > 120 {
            let start: String = literal.chars().take(40).collect();
            let _ = write!(out, "\"{start}…\" ({} chars)", literal.chars().count());
        } else {
            let _ = write!(out, "\"{literal}\"");
        }
    }
    out
}

/// What the monitor answered.
#[derive(Debug)]
pub(crate) enum Reply {
    Registered(pb::RegisterNodeReply),
    Assigned(Box<pb::NodeActiveReply>),
    State(pb::FormationState),
    Events(pb::ListEventsReply),
    Operation(pb::OperationReply),
    Parameters(pb::ListParametersReply),
    Formations(pb::ListFormationsReply),
}

pub(crate) async fn send(
    client: &mut security::Client,
    call: Call,
) -> Result<Reply, tonic::Status> {
    Ok(match call {
        Call::RegisterNode(r) => Reply::Registered(client.register_node(r).await?.into_inner()),
        // Half of the heartbeats go as a one-heartbeat Heartbeats stream:
        // the monitor must answer (and refuse) both the same way.
        Call::NodeActive(r) if r.node_id % 2 != 0 => {
            let mut replies = client
                .heartbeats(tokio_stream::iter([*r]))
                .await?
                .into_inner();
            let reply = replies.message().await?.ok_or_else(|| {
                tonic::Status::internal("the Heartbeats stream ended without a reply")
            })?;
            Reply::Assigned(Box::new(reply))
        }
        Call::NodeActive(r) => {
            Reply::Assigned(Box::new(client.node_active(*r).await?.into_inner()))
        }
        Call::GetFormationState(r) => {
            Reply::State(client.get_formation_state(r).await?.into_inner())
        }
        Call::ListEvents(r) => Reply::Events(client.list_events(r).await?.into_inner()),
        Call::PerformFailover(r) => {
            Reply::Operation(client.perform_failover(r).await?.into_inner())
        }
        Call::SetNumberSyncStandbys(r) => {
            Reply::Operation(client.set_number_sync_standbys(r).await?.into_inner())
        }
        Call::SetNodeSettings(r) => {
            Reply::Operation(client.set_node_settings(r).await?.into_inner())
        }
        Call::SetMaintenance(r) => Reply::Operation(client.set_maintenance(r).await?.into_inner()),
        Call::DropNode(r) => Reply::Operation(client.drop_node(r).await?.into_inner()),
        Call::ReinitNode(r) => Reply::Operation(client.reinit_node(r).await?.into_inner()),
        Call::RestartNode(r) => Reply::Operation(client.restart_node(r).await?.into_inner()),
        Call::SetPaused(r) => Reply::Operation(client.set_paused(r).await?.into_inner()),
        Call::SetParameter(r) => Reply::Operation(client.set_parameter(r).await?.into_inner()),
        Call::ListParameters(r) => Reply::Parameters(client.list_parameters(r).await?.into_inner()),
        Call::ReloadFormation(r) => {
            Reply::Operation(client.reload_formation(r).await?.into_inner())
        }
        Call::CreateFormation(r) => {
            Reply::Operation(client.create_formation(r).await?.into_inner())
        }
        Call::DropFormation(r) => Reply::Operation(client.drop_formation(r).await?.into_inner()),
        Call::ListFormations(r) => Reply::Formations(client.list_formations(r).await?.into_inner()),
    })
}

// ---- what has been registered ------------------------------------------------

/// Nodes the monitor has confirmed, shared by the workers.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// node id → (formation, name).
    pub(crate) ids: BTreeMap<i64, (String, String)>,
    /// Every formation a node was registered in during the run (a node
    /// dropped later still counts: its heartbeats were tried meanwhile).
    pub(crate) registered_in: BTreeSet<String>,
    /// The formations of the fuzzer's own (`fz-…`) and whether each exists.
    pub(crate) own: OwnFormations,
}

pub(crate) type Shared = Arc<Mutex<Registry>>;

pub(crate) fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}
