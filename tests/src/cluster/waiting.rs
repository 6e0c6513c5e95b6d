//! Waiting on the cluster with a deadline: conditions on the monitor's state
//! or on anything else, failing at once when a process the harness did not
//! kill has exited, and with the full diagnostics when the deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pgpilot_proto::pb::FormationState;
use pgpilot_proto::ReplicationState;

use crate::state::{FormationStateExt, NodeStatusExt};
use crate::wait::{poll_until, GiveUp};

use super::{lock, Cluster};

/// How much longer than its window [`Cluster::hold_state`] may take, for
/// slow state reads on a loaded machine.
const HOLD_MARGIN: Duration = Duration::from_secs(30);

impl Cluster {
    /// Poll the monitor's state until the async predicate holds; on timeout
    /// the error carries the state table, recent events and log tails. Fails
    /// at once if the monitor or a keeper the harness did not kill exits.
    pub async fn wait_until<F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        mut predicate: F,
    ) -> Result<FormationState>
    where
        F: FnMut(FormationState) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        // The predicate's future owns what it needs, so a short borrow of
        // the predicate per check is enough.
        let predicate = std::cell::RefCell::new(&mut predicate);
        self.wait_for(timeout, what, || async {
            let state = self.state().await?;
            let holds = (predicate.borrow_mut())(state.clone());
            Ok(holds.await?.then_some(state))
        })
        .await
    }

    /// [`Cluster::wait_until`] with a plain predicate on the state.
    pub async fn wait_state<F>(
        &self,
        timeout: Duration,
        what: &str,
        mut predicate: F,
    ) -> Result<FormationState>
    where
        F: FnMut(&FormationState) -> bool,
    {
        self.wait_until(timeout, what, |state| {
            let holds = predicate(&state);
            async move { Ok(holds) }
        })
        .await
    }

    /// Wait until `node` reports a writable primary state (single,
    /// wait_primary, primary, …); `what` names the wait in a timeout report.
    pub async fn wait_writable_primary(
        &self,
        node: &str,
        timeout: Duration,
        what: &str,
    ) -> Result<FormationState> {
        self.wait_state(timeout, what, |s| {
            s.node(node).is_some_and(|n| n.reports_writable_primary())
        })
        .await
    }

    /// Wait until a node other than `old` reports a writable primary state.
    pub async fn wait_other_primary(&self, old: &str, timeout: Duration) -> Result<FormationState> {
        self.wait_state(timeout, "another writable primary", |s| {
            s.writable_primaries()
                .iter()
                .any(|p| p.name != old && p.reports_writable_primary())
        })
        .await
    }

    /// Wait until `old` has rejoined as a settled secondary of `new`, a
    /// settled primary.
    pub async fn wait_rejoined(&self, old: &str, new: &str, timeout: Duration) -> Result<()> {
        self.wait_state(
            timeout,
            &format!("{old} to rejoin as secondary with {new} primary"),
            |s| {
                s.node(old)
                    .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
                    && s.node(new)
                        .is_some_and(|n| n.settled_in(ReplicationState::Primary))
            },
        )
        .await
        .map(|_| ())
    }

    /// Wait until the keepers' `on_role_change` hook has pointed the
    /// stand-in virtual IP (the file `hooks/vip`) at `node`.
    pub async fn wait_vip(&self, node: &str, timeout: Duration) -> Result<()> {
        let vip = self.root.join("hooks").join("vip");
        self.wait_for(
            timeout,
            &format!("the role-change hook to point the virtual IP at {node}"),
            || {
                let on = std::fs::read_to_string(&vip).is_ok_and(|text| text.trim() == node);
                async move { Ok(on.then_some(())) }
            },
        )
        .await
    }

    /// Poll any check (`Ok(Some(v))` = done, `Ok(None)`/`Err` = not yet)
    /// with the same failure report as [`Cluster::wait_until`].
    pub async fn wait_for<T, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let result = poll_until(timeout, what, || {
            let processes = self.check_processes();
            let fut = check();
            async move {
                processes?;
                fut.await
            }
        })
        .await;
        match result {
            Ok(value) => Ok(value),
            Err(err) => Err(self.failure(format!("{err:#}")).await),
        }
    }

    /// Check the state at every poll for `window` (the window is the
    /// scenario: "nothing changes for this long"); fails at once, with the
    /// diagnostics, the first time `predicate` does not hold. A state that
    /// cannot be read is retried, as in [`Cluster::wait_for`].
    pub async fn hold_state<F>(&self, window: Duration, what: &str, predicate: F) -> Result<()>
    where
        F: FnMut(&FormationState) -> bool,
    {
        let until = Instant::now() + window;
        let predicate = std::cell::RefCell::new(predicate);
        self.wait_for(
            window + HOLD_MARGIN,
            &format!("{what} for {window:?}"),
            || async {
                let state = self.state().await?;
                if !(predicate.borrow_mut())(&state) {
                    return Err(GiveUp(format!("{what} no longer holds")).into());
                }
                Ok((Instant::now() >= until).then_some(()))
            },
        )
        .await
    }

    /// One node settled in `primary`, all others in `secondary`.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<FormationState> {
        let n = self.nodes.len();
        self.wait_state(
            timeout,
            &format!(
                "a healthy group: 1 primary and {} secondaries, reported == goal",
                n - 1
            ),
            |s| s.is_healthy(n),
        )
        .await
    }

    /// A two-node cluster with one primary and one secondary, settled.
    pub async fn wait_healthy_pair(&self) -> Result<FormationState> {
        if self.nodes.len() != 2 {
            bail!(
                "wait_healthy_pair needs 2 nodes, this cluster has {}",
                self.nodes.len()
            );
        }
        self.wait_healthy(Duration::from_secs(120)).await
    }

    /// The monitor or a keeper that should be running has exited.
    /// (Supervised keepers a failpoint killed are started again first.)
    pub(super) fn check_processes(&self) -> Result<()> {
        self.restart_killed_keepers()?;
        self.check_monitors().map_err(GiveUp)?;
        for node in &self.nodes {
            if let Some(child) = lock(&node.keeper).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(
                        GiveUp(format!("the keeper of {} exited ({status})", node.name)).into(),
                    );
                }
            }
        }
        Ok(())
    }
}
