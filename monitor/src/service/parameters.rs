//! `SetParameter` and `ListParameters`: the request checked and handed to
//! the store (`crate::store::parameters`), which checks the value against
//! `pg_settings` through the decision core.

use pgpilot_proto::pb;
use tonic::Status;

use super::{formation_or_default, is_setting_name, valid_name};
use crate::auth::Caller;
use crate::error::Error;
use crate::store::Store;

/// A setting's name as PostgreSQL spells them (see [`is_setting_name`]).
fn valid_setting(name: &str) -> Result<(), Error> {
    if is_setting_name(name) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{} is not a PostgreSQL setting's name (letters, digits, _ and ., at most 63 bytes)",
        crate::names::quote(name)
    )))
}

pub(super) async fn set(
    store: &Store,
    caller: &Caller,
    r: pb::SetParameterRequest,
) -> Result<String, Status> {
    let formation = formation_or_default(&r.formation).to_string();
    valid_name("formation", &formation)?;
    valid_setting(&r.name)?;
    let value = (!r.reset).then_some(r.value.as_str());
    let message = store
        .set_parameter(&formation, &r.name, value, &caller.operator_identity())
        .await?;
    tracing::warn!(%formation, operator = %caller, "{message}");
    Ok(message)
}

pub(super) async fn reload(
    store: &Store,
    caller: &Caller,
    r: pb::ReloadFormationRequest,
) -> Result<String, Status> {
    let formation = formation_or_default(&r.formation).to_string();
    valid_name("formation", &formation)?;
    let message = store
        .reload_formation(&formation, &caller.operator_identity())
        .await?;
    tracing::warn!(%formation, operator = %caller, "{message}");
    Ok(message)
}

pub(super) async fn list(
    store: &Store,
    r: pb::ListParametersRequest,
) -> Result<pb::ListParametersReply, Status> {
    let formation = formation_or_default(&r.formation).to_string();
    valid_name("formation", &formation)?;
    let (version, set) = store.parameters(&formation).await?;
    Ok(pb::ListParametersReply {
        version,
        parameters: set
            .into_iter()
            .map(|(name, value)| pb::Parameter { name, value })
            .collect(),
    })
}
