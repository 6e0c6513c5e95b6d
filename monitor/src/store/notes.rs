//! A keeper's notes (what it did on its own: a diverged standby rewound or
//! cloned afresh) recorded as events of its node, in the heartbeat's
//! transaction. The keeper sends a note until a heartbeat carrying it is
//! answered, so the same note may arrive twice (an answer lost on the
//! way): a note equal to the node's latest event is not recorded again.

use pgpilot_proto::ReplicationState as S;

use super::{insert_event, KeeperNote, Result, StoredNode, Tx};

/// Record `notes` of node `me`, whose goal was `goal` when its keeper
/// sent them, as events (kind and text as sent), and tell the listeners of
/// the formation's events.
pub(super) async fn record(
    tx: &mut Tx<'_>,
    me: &StoredNode,
    goal: S,
    notes: &[KeeperNote],
) -> Result<()> {
    if notes.is_empty() {
        return Ok(());
    }
    let mut latest: Option<(Option<String>, String)> = sqlx::query_as(
        "SELECT kind, reason FROM event WHERE node_id = $1 ORDER BY event_id DESC LIMIT 1",
    )
    .bind(me.snap.id)
    .fetch_optional(&mut **tx)
    .await?;
    for note in notes {
        let repeated = latest.as_ref().is_some_and(|(kind, reason)| {
            kind.as_deref() == Some(note.kind) && *reason == note.text
        });
        if repeated {
            continue;
        }
        // No goal change: the goal before and after is the node's goal.
        insert_event(tx, me, goal, goal, note.kind, &note.text).await?;
        tracing::info!(
            formation = %me.formation,
            group = me.group_id,
            node = %me.snap.name,
            kind = note.kind,
            "keeper note: {}",
            note.text
        );
        latest = Some((Some(note.kind.to_string()), note.text.clone()));
    }
    sqlx::query("SELECT pg_notify('pgpilot_events', $1)")
        .bind(&me.formation)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
