//! Views that keep running until Ctrl-C: `show-events --follow` and
//! `show-state --watch`, with the event fetch `show-events` shares and the
//! writing to stdout that ends quietly when the reader goes away.

use std::time::Duration;

use pgpilot_proto::pb;

use super::client::Client;
use super::error::CliError;
use super::json::EventJson;
use super::render::find_node;
use super::tables::{event_line, state_table};

/// The most events one ListEvents call returns.
pub const MAX_EVENTS: u32 = 10_000;
/// How often `show-events --follow` asks for new events.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Events fetched per `--follow` poll; when all of them are new, some may
/// have been missed and the poll is repeated with [`MAX_EVENTS`].
const FOLLOW_BATCH: u32 = 100;

/// The latest `count` events (of `node` only, when given), and the highest
/// event id the monitor returned, filtered out or not.
pub async fn recent_events(
    client: &mut Client,
    formation: &str,
    count: u32,
    node: Option<&str>,
) -> Result<(Vec<pb::Event>, i64), CliError> {
    let all = client
        .events(formation, if node.is_some() { MAX_EVENTS } else { count })
        .await?;
    if all.is_empty() {
        // ListEvents answers an unknown formation with no events; a typo
        // should not print an empty table (or follow nothing forever).
        client.state(formation).await?;
    }
    let last = all.last().map_or(0, |e| e.event_id);
    let Some(name) = node else {
        return Ok((all, last));
    };
    let mut mine: Vec<pb::Event> = all.into_iter().filter(|e| e.node_name == name).collect();
    if mine.is_empty() {
        // A typo would otherwise print nothing (forever, with --follow).
        let state = client.state(formation).await?;
        find_node(&state, name)?;
    }
    let skip = mine.len().saturating_sub(count as usize);
    mine.drain(..skip);
    Ok((mine, last))
}

/// Write to stdout; `Ok(false)` when the reader has gone away (a closed pipe,
/// e.g. `show-events --follow | head`), which ends a follow or watch quietly.
pub fn emit(text: &str) -> Result<bool, CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
}

fn event_text(e: &pb::Event, json: bool) -> String {
    if json {
        let mut line = serde_json::to_string(&EventJson::from(e)).expect("serializable");
        line.push('\n');
        line
    } else {
        event_line(e)
    }
}

/// `show-events --follow`: print the latest `count` events, then every new
/// one as the monitor records it, polling every [`FOLLOW_INTERVAL`]. Runs
/// until interrupted; a monitor that stops answering is reported once on
/// stderr and polled again.
pub async fn follow_events(
    client: &mut Client,
    formation: &str,
    count: u32,
    node: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let (backlog, mut last) = recent_events(client, formation, count, node).await?;
    for e in &backlog {
        if !emit(&event_text(e, json))? {
            return Ok(());
        }
    }
    let mut failing = false;
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let mut batch = match client.events(formation, FOLLOW_BATCH).await {
            Ok(batch) => batch,
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e) => {
                if !failing {
                    eprintln!("{e} (still following; retrying every second)");
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            eprintln!("the monitor answers again");
            failing = false;
        }
        if batch.len() == FOLLOW_BATCH as usize && batch.first().is_some_and(|e| e.event_id > last)
        {
            batch = client.events(formation, MAX_EVENTS).await?;
        }
        for e in batch.iter().filter(|e| e.event_id > last) {
            if node.is_none_or(|name| e.node_name == name) && !emit(&event_text(e, json))? {
                return Ok(());
            }
        }
        last = batch.last().map_or(last, |e| e.event_id.max(last));
    }
}

/// Clears a terminal and moves the cursor home.
pub const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// `show-state --watch`: redraw the state table every `interval` until
/// interrupted. A monitor that stops answering is shown in the frame and
/// asked again; an unknown formation ends the watch (exit 2).
pub async fn watch_state(
    client: &mut Client,
    formation: &str,
    interval: Duration,
) -> Result<(), CliError> {
    loop {
        let body = match client.state(formation).await {
            Ok(state) => state_table(&state),
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e) => format!("error: {e}\n"),
        };
        let frame = format!(
            "{CLEAR_SCREEN}every {}: pgpilot-monitor show-state --formation {formation}    {}    (Ctrl-C to stop)\n\n{body}",
            humantime::format_duration(interval),
            chrono::Local::now().format("%H:%M:%S"),
        );
        if !emit(&frame)? {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// Run `work` until it ends or Ctrl-C (SIGINT) arrives; Ctrl-C is success.
pub async fn until_interrupted(
    work: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Failed(format!("cannot catch Ctrl-C: {e}")))?;
    tokio::select! {
        result = work => result,
        _ = interrupt.recv() => Ok(()),
    }
}
