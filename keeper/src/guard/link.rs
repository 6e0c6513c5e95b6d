//! The keeper's side of the fence guard: connect to the node's guard
//! (starting one when none answers), and hand it the lease every time it
//! changes. When the guard's socket closes — the guard died — start a new
//! one and hand it the lease the keeper holds.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::wire::{self, Hello, LeaseMessage};
use super::GuardArgs;
use crate::fence::SharedLease;

/// How long a guard just started may take to answer on its socket.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a guard may take to greet a new connection.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the socket is tried while a new guard starts.
const CONNECT_POLL: Duration = Duration::from_millis(20);
/// Pause before trying again after a guard could not be reached or started.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The keeper's link to its fence guard; [`Link::run`] runs it until the
/// keeper aborts it.
pub struct Link {
    /// How to start a guard; its socket is where to find one.
    pub args: GuardArgs,
    pub lease: SharedLease,
    pub fence_timeout: Duration,
}

/// Why the guard could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot start the fence guard: {0}")]
    Spawn(std::io::Error),
    #[error("the fence guard started but did not answer on {0} within {SPAWN_TIMEOUT:?}")]
    NoAnswer(PathBuf),
    #[error("the fence guard on {socket} did not greet: {why}")]
    Greeting { socket: PathBuf, why: String },
    #[error("the fence guard on {socket} watches {theirs}, not {ours}: give each node its own state directory or port")]
    OtherNode {
        socket: PathBuf,
        theirs: PathBuf,
        ours: PathBuf,
    },
}

impl Link {
    /// Keep a guard connected and up to date, forever.
    pub async fn run(self) {
        let changed = self.lease.lock().await.changed.clone();
        let mut last_error: Option<String> = None;
        loop {
            let (reader, writer, hello) = match self.connect_or_spawn().await {
                Ok(linked) => linked,
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::error!(error = %text, "no fence guard: PostgreSQL would outlive this keeper as a writer if it died cut off from the monitor; retrying");
                        last_error = Some(text);
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            last_error = None;
            tracing::info!(guard_pid = hello.pid, socket = %self.args.socket.display(), "fence guard connected");
            self.hand_over(reader, writer, &changed).await;
            tracing::warn!(
                guard_pid = hello.pid,
                "the fence guard is gone; starting a new one"
            );
        }
    }

    /// Send the lease now and at every change, until the guard's socket
    /// closes.
    async fn hand_over(
        &self,
        mut reader: BufReader<OwnedReadHalf>,
        mut writer: OwnedWriteHalf,
        changed: &tokio::sync::Notify,
    ) {
        let mut buf = String::new();
        loop {
            if self.send(&mut writer).await.is_err() {
                return;
            }
            tokio::select! {
                _ = changed.notified() => {}
                read = reader.read_line(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    // The guard says nothing after its greeting.
                    Ok(_) => buf.clear(),
                },
            }
        }
    }

    async fn send(&self, writer: &mut OwnedWriteHalf) -> std::io::Result<()> {
        let message = {
            let lease = self.lease.lock().await;
            LeaseMessage::of(
                &lease,
                self.fence_timeout,
                Instant::now(),
                wire::clock_now(),
            )
        };
        let mut line = serde_json::to_string(&message).map_err(std::io::Error::other)?;
        line.push('\n');
        writer.write_all(line.as_bytes()).await
    }

    async fn connect_or_spawn(
        &self,
    ) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf, Hello), LinkError> {
        let socket = &self.args.socket;
        if let Ok(stream) = UnixStream::connect(socket).await {
            return self.greeted(stream).await;
        }
        self.spawn()?;
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        loop {
            if let Ok(stream) = UnixStream::connect(socket).await {
                return self.greeted(stream).await;
            }
            if Instant::now() >= deadline {
                return Err(LinkError::NoAnswer(socket.clone()));
            }
            tokio::time::sleep(CONNECT_POLL).await;
        }
    }

    /// Read the guard's greeting and check it watches our PostgreSQL.
    async fn greeted(
        &self,
        stream: UnixStream,
    ) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf, Hello), LinkError> {
        let socket = self.args.socket.clone();
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        let greeting = |why: String| LinkError::Greeting {
            socket: socket.clone(),
            why,
        };
        match tokio::time::timeout(HELLO_TIMEOUT, reader.read_line(&mut line)).await {
            Err(_) => return Err(greeting(format!("nothing within {HELLO_TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(greeting(e.to_string())),
            Ok(Ok(0)) => return Err(greeting("the connection closed".to_string())),
            Ok(Ok(_)) => {}
        }
        let hello: Hello =
            serde_json::from_str(line.trim_end()).map_err(|e| greeting(e.to_string()))?;
        check_hello(&hello, &self.args.pgdata).map_err(|e| match e {
            HelloProblem::Version(v) => greeting(format!(
                "it speaks version {v}, this keeper {}",
                wire::VERSION
            )),
            HelloProblem::OtherNode(theirs) => LinkError::OtherNode {
                socket: socket.clone(),
                theirs,
                ours: self.args.pgdata.clone(),
            },
        })?;
        Ok((reader, write, hello))
    }

    /// Start a guard: this very binary (`/proc/self/exe`, which still
    /// works after an upgrade replaced the file), in a new session so that
    /// a signal to the keeper's process group does not reach it. Its output
    /// goes where the keeper's goes. A task reaps it when it exits.
    fn spawn(&self) -> Result<(), LinkError> {
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg0("pgpilot-keeper")
            .arg("fence-guard")
            .args(self.args.to_args())
            .stdin(Stdio::null());
        // SAFETY: setsid is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(LinkError::Spawn)?;
        let pid = child.id();
        tracing::info!(guard_pid = ?pid, "fence guard started");
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(guard_pid = ?pid, %status, "fence guard exited"),
                Err(e) => {
                    tracing::warn!(guard_pid = ?pid, error = %e, "cannot wait for the fence guard")
                }
            }
        });
        Ok(())
    }
}

/// What is wrong with a guard's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloProblem {
    Version(u32),
    OtherNode(PathBuf),
}

/// Whether `hello` comes from a guard this keeper can use: same version,
/// same PGDATA.
pub fn check_hello(hello: &Hello, pgdata: &Path) -> Result<(), HelloProblem> {
    if hello.version != wire::VERSION {
        return Err(HelloProblem::Version(hello.version));
    }
    if hello.pgdata != pgdata {
        return Err(HelloProblem::OtherNode(hello.pgdata.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_of_another_node_or_version_is_not_used() {
        let hello = Hello {
            version: wire::VERSION,
            pid: 1,
            pgdata: "/a/data".into(),
        };
        assert_eq!(check_hello(&hello, Path::new("/a/data")), Ok(()));
        assert_eq!(
            check_hello(&hello, Path::new("/b/data")),
            Err(HelloProblem::OtherNode("/a/data".into()))
        );
        let old = Hello {
            version: wire::VERSION + 1,
            ..hello
        };
        assert_eq!(
            check_hello(&old, Path::new("/a/data")),
            Err(HelloProblem::Version(wire::VERSION + 1))
        );
    }
}
