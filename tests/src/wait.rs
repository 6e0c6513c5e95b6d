//! Waiting for a condition with a deadline — never a bare sleep.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// Returned by a check to stop waiting at once (e.g. a process the
/// condition depends on has exited).
#[derive(Debug)]
pub struct GiveUp(pub String);

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GiveUp {}

/// A condition that did not hold before its deadline.
#[derive(Debug)]
pub struct TimedOut {
    pub what: String,
    pub waited: Duration,
    pub attempts: u32,
    /// What the last check said (an error, or why the condition was not met).
    pub last: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:.1}s ({} checks) waiting for {}; last check: {}",
            self.waited.as_secs_f64(),
            self.attempts,
            self.what,
            self.last
        )
    }
}

impl std::error::Error for TimedOut {}

/// Poll `check` every [`POLL_INTERVAL`] until it returns `Ok(Some(value))`
/// or `timeout` has passed. `Ok(None)` means "not yet"; an error also means
/// "not yet" and is remembered for the timeout report, unless it is a
/// [`GiveUp`], which ends the wait at once. A check that itself hangs is cut
/// off at the deadline. The error is a [`TimedOut`] or the [`GiveUp`].
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    poll_every(POLL_INTERVAL, timeout, what, check).await
}

/// [`poll_until`] with checks `interval` apart (a benchmark timing the
/// moment a condition starts to hold polls closer than the tests do).
pub async fn poll_every<T, F, Fut>(
    interval: Duration,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts = 0;
    let mut last;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining.max(Duration::from_millis(100)), check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => last = "condition not met".to_string(),
            Ok(Err(err)) if err.is::<GiveUp>() => {
                return Err(err.context(format!("gave up waiting for {what}")))
            }
            Ok(Err(err)) => last = format!("{err:#}"),
            Err(_) => last = "the check itself did not finish before the deadline".to_string(),
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                waited: start.elapsed(),
                attempts,
                last,
            }
            .into());
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
