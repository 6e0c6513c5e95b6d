//! `CreateSlot` and `DropSlot`: the request checked and handed to the
//! store (`crate::store::slots`), which decides through the core
//! (`crate::core::slots`); and the slots a keeper reports in its
//! heartbeats, checked.

use pgpilot_proto::pb;
use tonic::Status;

use super::{formation_or_default, valid_name};
use crate::auth::Caller;
use crate::core::slots::{self, Declared, Position};
use crate::error::Error;
use crate::store::Store;

pub(super) async fn create(
    store: &Store,
    caller: &Caller,
    r: pb::CreateSlotRequest,
) -> Result<String, Status> {
    let formation = formation_or_default(&r.formation).to_string();
    valid_name("formation", &formation)?;
    let Some(slot) = r.slot else {
        return Err(Error::InvalidArgument(
            "create-slot names no slot: give its name and kind".into(),
        )
        .into());
    };
    let declared = Declared {
        name: slot.name,
        kind: slot.kind,
        plugin: slot.plugin,
        database: slot.database,
    };
    let message = store
        .create_slot(&formation, &declared, &caller.operator_identity())
        .await?;
    tracing::warn!(%formation, operator = %caller, "{message}");
    Ok(message)
}

pub(super) async fn drop(
    store: &Store,
    caller: &Caller,
    r: pb::DropSlotRequest,
) -> Result<String, Status> {
    let formation = formation_or_default(&r.formation).to_string();
    valid_name("formation", &formation)?;
    if !slots::valid_slot_name(&r.name) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a replication slot name (lower-case letters, digits and _): show-slots lists the formation's slots",
            crate::names::quote(&r.name)
        ))
        .into());
    }
    let message = store
        .drop_slot(&formation, &r.name, &caller.operator_identity())
        .await?;
    tracing::warn!(%formation, operator = %caller, "{message}");
    Ok(message)
}

/// The slots a heartbeat reports (`None` when it reports none), checked.
pub(super) fn reported(r: &pb::NodeActiveRequest) -> Result<Option<Vec<Position>>, Error> {
    if !r.slots_reported {
        return Ok(None);
    }
    if r.slots.len() > slots::MAX_REPORTED {
        return Err(Error::InvalidArgument(format!(
            "{} slots reported in one heartbeat: at most {}",
            r.slots.len(),
            slots::MAX_REPORTED
        )));
    }
    r.slots
        .iter()
        .map(Position::from_wire)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(Error::InvalidArgument)
}
