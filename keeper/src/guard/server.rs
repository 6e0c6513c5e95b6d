//! The fence guard process: one per node, started by the keeper in a
//! session of its own. It holds the lease its keepers hand it over the
//! socket and, every [`GUARD_TICK`], applies the fence rule with its own
//! PostgreSQL connection, whether or not a keeper is connected. The
//! decisions are [`super::rule`]'s; this file is the I/O around them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::rule::{Adopted, ExitReason, GuardState};
use super::wire::{self, Hello, LeaseMessage};
use super::GuardArgs;
use crate::fence::{enforce, Enforced};
use crate::pg::{LocalPostgres, PgController, PgSettings};

/// How often the guard looks at its lease: the keeper's fence tick.
pub const GUARD_TICK: Duration = Duration::from_millis(100);
/// The longest line a keeper may send.
const MAX_LINE: usize = 64 * 1024;

/// Why the guard could not run: one sentence.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Setup(String),
}

/// What a connection's reader tells the guard's loop.
enum Event {
    Lease(LeaseMessage),
    Bad(String),
    Closed,
}

/// Run the guard until it has nothing left to guard. `Ok` also when
/// another guard already watches this node (it exits at once).
pub async fn run(args: GuardArgs) -> Result<(), GuardError> {
    wire::check_socket_path(&args.socket).map_err(GuardError::Setup)?;
    let Some(_lock) = lock(&args.socket)? else {
        tracing::info!(socket = %args.socket.display(), "another fence guard watches this node; exiting");
        return Ok(());
    };
    let listener = bind(&args.socket)?;
    let pg = PgController::new(pg_settings(&args));
    tracing::info!(
        socket = %args.socket.display(),
        pgdata = %args.pgdata.display(),
        pid = std::process::id(),
        "fence guard running"
    );
    let reason = serve(listener, &pg, &args.pgdata).await;
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!(reason = %reason, "fence guard exits: nothing left to guard");
    Ok(())
}

/// The guard's loop: accept keepers, take their leases, tick.
async fn serve<P: LocalPostgres>(listener: UnixListener, pg: &P, pgdata: &Path) -> ExitReason {
    let mut state = GuardState::new(wire::clock_now());
    let (events, mut inbox) = mpsc::channel::<Event>(64);
    let mut tick = tokio::time::interval(GUARD_TICK);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if accept(stream, pgdata, events.clone()) {
                        state.keeper_connected();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "fence guard: accepting a connection failed"),
            },
            Some(event) = inbox.recv() => receive(&mut state, event),
            _ = tick.tick() => {
                if let Some(reason) = guard_tick(&mut state, pg, wire::clock_now()).await {
                    return reason;
                }
            }
        }
    }
}

/// One tick: apply the fence rule if the lease ran out, then say whether
/// the guard has anything left to guard.
pub(crate) async fn guard_tick<P: LocalPostgres>(
    state: &mut GuardState,
    pg: &P,
    now: Duration,
) -> Option<ExitReason> {
    if let Some((fence_set, required)) = state.armed(now) {
        let fence_set = fence_set.to_vec();
        if enforce(pg, &fence_set, required).await == Enforced::Stopped {
            let connected = state.keepers();
            tracing::warn!(
                keepers_connected = connected,
                "fence guard fenced PostgreSQL: its lease ran out"
            );
        }
    }
    state.exit_reason(now, pg.postmaster_alive())
}

fn receive(state: &mut GuardState, event: Event) {
    match event {
        Event::Closed => {
            state.keeper_left(wire::clock_now());
            tracing::info!(
                keepers_connected = state.keepers(),
                "fence guard: a keeper disconnected; the lease it held stays in force"
            );
        }
        Event::Bad(why) => tracing::warn!("fence guard: {why}"),
        Event::Lease(message) => match message.into_lease() {
            Err(why) => tracing::warn!("fence guard: {why}"),
            Ok(lease) => {
                let (state_name, confirmed) = (lease.current, lease.confirmed);
                let before = state.lease().map(|l| l.current);
                match state.receive(lease) {
                    Adopted::First => {
                        tracing::info!(state = %state_name, confirmed, "fence guard: lease taken")
                    }
                    Adopted::Renewed if before != Some(state_name) => {
                        tracing::info!(state = %state_name, "fence guard: lease renewed, node state changed")
                    }
                    Adopted::Renewed => tracing::debug!("fence guard: lease renewed"),
                    Adopted::Ignored => tracing::debug!(
                        "fence guard: a keeper that has not heard from the monitor yet; the held lease stays"
                    ),
                }
            }
        },
    }
}

/// Greet a keeper and read its messages on a task of its own. Refuses
/// (false) a peer running as another user: a lease decides whether a
/// primary is fenced.
fn accept(stream: UnixStream, pgdata: &Path, events: mpsc::Sender<Event>) -> bool {
    let own = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own => {}
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                "fence guard: refused a connection from another user"
            );
            return false;
        }
        Err(e) => {
            tracing::warn!(error = %e, "fence guard: cannot tell who connected; refused");
            return false;
        }
    }
    let hello = Hello {
        version: wire::VERSION,
        pid: std::process::id(),
        pgdata: pgdata.to_path_buf(),
    };
    tokio::spawn(async move {
        read_keeper(stream, hello, &events).await;
        let _ = events.send(Event::Closed).await;
    });
    true
}

async fn read_keeper(stream: UnixStream, hello: Hello, events: &mpsc::Sender<Event>) {
    // The write half stays open as long as this task runs: the keeper
    // takes end of file for the guard's death.
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&hello).unwrap_or_default();
    line.push('\n');
    if write.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(read);
    let mut buf = String::new();
    loop {
        buf.clear();
        match reader.read_line(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) if buf.len() > MAX_LINE => {
                let _ = events
                    .send(Event::Bad(format!(
                        "a keeper sent a line over {MAX_LINE} bytes; connection closed"
                    )))
                    .await;
                return;
            }
            Ok(_) => {}
        }
        let event = match serde_json::from_str::<LeaseMessage>(buf.trim_end()) {
            Ok(m) => Event::Lease(m),
            Err(e) => Event::Bad(format!(
                "a keeper sent a line that is no lease message: {e}"
            )),
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// Take the node's guard lock (`<socket>.lock`), or None when another
/// guard holds it.
fn lock(socket: &Path) -> Result<Option<Flock<std::fs::File>>, GuardError> {
    let path = with_suffix(socket, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| GuardError::Setup(format!("cannot open {}: {e}", path.display())))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(GuardError::Setup(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Bind the socket (a stale one from a dead guard is replaced; the lock
/// says none is alive), readable and writable by its owner only.
fn bind(socket: &Path) -> Result<UnixListener, GuardError> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(GuardError::Setup(format!(
                "cannot remove the stale socket {}: {e}",
                socket.display()
            )))
        }
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| GuardError::Setup(format!("cannot listen on {}: {e}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| GuardError::Setup(format!("cannot restrict {}: {e}", socket.display())))?;
    Ok(listener)
}

/// What the guard's PostgreSQL handle needs: where the server is and how
/// to reach it over its socket. The rest (replication, TLS) is the
/// keeper's business.
fn pg_settings(args: &GuardArgs) -> PgSettings {
    PgSettings {
        pgdata: args.pgdata.clone(),
        bin_dir: args.pg_bin_dir.clone(),
        socket_dir: args.pg_socket_dir.clone(),
        superuser: args.pg_user.clone(),
        port: args.port,
        trust_networks: Vec::new(),
        replication_user: String::new(),
        replication_password: None,
        postgres_tls: None,
        stall_timeout: crate::config::DEFAULT_STALL_TIMEOUT,
        clone_max_rate: None,
        clone_in_place: false,
        clone_command: None,
        restore_command: None,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use pgpilot_proto::ReplicationState as S;

    use super::*;
    use crate::fence::fake::Isolated;
    use crate::guard::rule::GuardLease;

    fn lease(last_answer: Duration) -> GuardLease {
        GuardLease {
            confirmed: true,
            last_answer,
            current: S::Primary,
            fence_set: vec!["pgpilot_2".to_string()],
            required: 1,
            fence_timeout: Duration::from_millis(1500),
        }
    }

    #[tokio::test]
    async fn fences_with_no_keeper_once_the_lease_runs_out() {
        let pg = Isolated::default();
        let t0 = Duration::from_secs(1000);
        let mut state = GuardState::new(t0);
        state.keeper_connected();
        state.receive(lease(t0));
        state.keeper_left(t0 + Duration::from_millis(100));

        // The lease still runs: nothing happens, the guard stays.
        let exit = guard_tick(&mut state, &pg, t0 + Duration::from_millis(1499)).await;
        assert!(!pg.stopped.load(Ordering::SeqCst));
        assert_eq!(exit, None);

        // Ran out, nobody streams: stopped. PostgreSQL is down, but the
        // keeper left only moments ago: stay for its restart.
        let exit = guard_tick(&mut state, &pg, t0 + Duration::from_millis(1500)).await;
        assert!(pg.stopped.load(Ordering::SeqCst));
        assert_eq!(exit, None);

        // Nothing left to guard once the grace is over.
        let exit = guard_tick(&mut state, &pg, t0 + Duration::from_secs(3)).await;
        assert_eq!(exit, Some(ExitReason::PostgresStopped));
    }

    #[tokio::test]
    async fn a_standby_is_never_stopped_and_its_guard_leaves() {
        let pg = Isolated::default();
        let t0 = Duration::from_secs(1000);
        let mut state = GuardState::new(t0);
        state.receive(GuardLease {
            current: S::Secondary,
            ..lease(t0)
        });
        let exit = guard_tick(&mut state, &pg, t0 + Duration::from_secs(5)).await;
        assert!(!pg.stopped.load(Ordering::SeqCst));
        assert_eq!(exit, Some(ExitReason::NotPrimarySide(S::Secondary)));
    }
}
