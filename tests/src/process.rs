//! Small process and file utilities: free ports, `/proc`, signals, log tails.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A 127.0.0.1 port nothing listens on right now (bind port 0, read,
/// close), never one this process handed out before: the kernel may give
/// a just-closed port again, and two parts of one cluster (the monitor
/// database and a monitor) must not be given the same port before either
/// binds it. Another test process may still take it meanwhile; the
/// harness starts a part again on fresh ports when its bind fails.
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return Ok(port);
        }
    }
}

/// Become the reaper of orphaned descendants, so that the PostgreSQL
/// processes a killed keeper leaves behind become our children and can be
/// reaped as soon as they are killed (a zombie postmaster would keep its
/// `postmaster.pid` "alive" and block the node's restart).
pub fn become_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// The postmaster's pid: the first line of `<pgdata>/postmaster.pid`.
pub fn postmaster_pid(pgdata: &Path) -> Option<i32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether a process with this pid exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match proc_stat(pid) {
        Some((state, _)) => state != 'Z' && state != 'X',
        None => false,
    }
}

/// The command name of a process (`/proc/<pid>/comm`).
pub fn comm(pid: i32) -> Option<String> {
    Some(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_string(),
    )
}

/// The arguments of a process (`/proc/<pid>/cmdline`).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Live `pgpilot-keeper fence-guard` processes watching `pgdata`.
pub fn fence_guards_of(pgdata: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgdata = pgdata.display().to_string();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| is_alive(pid))
        .filter(|&pid| {
            cmdline(pid).is_some_and(|args| {
                args.iter().any(|a| a == "fence-guard")
                    && args
                        .windows(2)
                        .any(|w| w[0] == "--pgdata" && w[1] == pgdata)
            })
        })
        .collect()
}

/// (state, parent pid) from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every live process whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(
            |&pid| matches!(proc_stat(pid), Some((state, ppid)) if ppid == parent && state != 'Z'),
        )
        .collect()
}

pub fn signal(pid: i32, sig: Signal) -> Result<(), Errno> {
    kill(Pid::from_raw(pid), sig)
}

/// A process stopped with SIGSTOP; SIGCONT when dropped, also when the test
/// fails half-way.
pub struct Frozen(i32);

impl Frozen {
    pub fn stop(pid: i32) -> Result<Frozen> {
        signal(pid, Signal::SIGSTOP).with_context(|| format!("SIGSTOP to {pid}"))?;
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = signal(self.0, Signal::SIGCONT);
    }
}

/// The child of `postmaster` whose process title says `walreceiver`.
pub fn walreceiver_of(postmaster: i32) -> Option<i32> {
    children_of(postmaster).into_iter().find(|pid| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("walreceiver"))
    })
}

/// Freeze a postmaster (SIGSTOP, so it cannot fork any more), then each of
/// its children, and list them all. Kill them with [`kill_all`].
pub fn freeze_postmaster_tree(postmaster: i32) -> Vec<i32> {
    if signal(postmaster, Signal::SIGSTOP).is_err() {
        return Vec::new();
    }
    let mut pids = vec![postmaster];
    for child in children_of(postmaster) {
        let _ = signal(child, Signal::SIGSTOP);
        pids.push(child);
    }
    pids
}

pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = signal(pid, Signal::SIGKILL);
    }
}

/// Kill a postmaster and everything it forked, the way a host dies.
/// Returns the pids killed.
pub fn kill_postmaster_tree(postmaster: i32) -> Vec<i32> {
    let pids = freeze_postmaster_tree(postmaster);
    kill_all(&pids);
    pids
}

/// SIGKILL a child we spawned in its own process group, and the whole
/// group (whatever it was running: pg_basebackup, pg_rewind, …), then reap it.
pub fn kill_child_group(child: &mut std::process::Child) {
    let pid = child.id() as i32;
    let _ = signal(-pid, Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Wait (bounded) for killed processes to be gone, reaping those that are
/// our children (we are a subreaper, see [`become_subreaper`]).
pub fn reap(pids: &[i32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<i32> = pids.to_vec();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|&pid| {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => false,
                // Not our child: someone else reaps it; wait until it is gone.
                Err(_) => is_alive(pid),
            }
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `lines` lines of a text file (reads at most its last 256 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 256 * 1024;
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) => return format!("(cannot read: {err})"),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX {
        let _ = file.seek(SeekFrom::Start(len - MAX));
    }
    let mut bytes = Vec::new();
    if let Err(err) = file.read_to_end(&mut bytes) {
        return format!("(cannot read: {err})");
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    if all.is_empty() {
        return "(empty)".to_string();
    }
    all[start..].join("\n")
}
