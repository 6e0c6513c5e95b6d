//! Running PostgreSQL's programs: with a timeout, their exit status and
//! stderr kept in a typed error, dying with the keeper; killing ones an
//! earlier keeper left running; finding the directory that holds them.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::process::Command;
use tracing::{debug, warn};

use super::progress::{parse_kb, Board, Watch, WorkProgress};
use super::PgError;

/// Environment for programs whose output we parse or whose messages we log:
/// untranslated messages and labels.
pub(super) const C_LOCALE: &[(&str, &str)] = &[("LC_ALL", "C")];

pub(super) struct ProgramOutput {
    pub(super) stdout: String,
    pub(super) stderr: String,
}

pub(super) fn os_args<const N: usize>(args: [OsString; N]) -> Vec<OsString> {
    args.into()
}

/// Run `program` with a timeout. The child is killed when the timeout
/// expires (or the caller's future is dropped). A non-zero exit becomes
/// [`PgError::Program`] carrying stderr (stdout when stderr is empty), whose
/// lines are also logged at WARN with a `postgres:` prefix.
pub(super) async fn run_program(
    label: &str,
    program: &Path,
    args: &[OsString],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Result<ProgramOutput, PgError> {
    let started = Instant::now();
    let child = spawn(label, program, args, envs, Stdio::piped())?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(PgError::Spawn {
                program: label.to_string(),
                source,
            })
        }
        Err(_) => {
            // Dropping the future dropped the child: kill_on_drop killed it.
            warn!(
                program = label,
                ?timeout,
                "postgres: {label} timed out and was killed"
            );
            return Err(PgError::Timeout {
                program: label.to_string(),
                timeout,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        debug!(program = label, elapsed = ?started.elapsed(), "postgres: {label} done");
        return Ok(ProgramOutput { stdout, stderr });
    }
    let said = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    for line in said.lines() {
        warn!(program = label, "postgres: {label}: {line}");
    }
    Err(PgError::Program {
        program: label.to_string(),
        status: output.status.to_string(),
        stderr: said.to_string(),
    })
}

/// Start `program` with no stdin, stderr piped, killed when dropped and
/// when the keeper dies.
fn spawn(
    label: &str,
    program: &Path,
    args: &[OsString],
    envs: &[(&str, &str)],
    stdout: Stdio,
) -> Result<tokio::process::Child, PgError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_keeper(&mut command);
    debug!(
        program = label,
        ?args,
        "postgres: running {}",
        program.display()
    );
    command.spawn().map_err(|source| PgError::Spawn {
        program: format!("{label} ({})", program.display()),
        source,
    })
}

/// Make the program `command` starts die with the keeper. `kill_on_drop`
/// covers a timeout or a cancelled action, but a keeper that is killed
/// (SIGKILL, OOM killer, a crash) runs no destructor: without this its
/// pg_rewind or pg_basebackup would go on, and the restarted keeper, redoing
/// the same action, would run a second one on the same directory. The
/// kernel sends the child SIGKILL when the thread that spawned it ends; the
/// keeper spawns from its runtime's threads, which live as long as the
/// process. Not inherited across fork: the postmaster that `pg_ctl start`
/// forks outlives the keeper, as it must.
pub(super) fn die_with_keeper(command: &mut Command) {
    let keeper = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes two system calls; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The keeper died between fork and prctl: go too.
            if nix::unistd::getppid() != keeper {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// SIGKILL every process called `program` (its `comm`) that has `arg` among
/// its arguments, other than this one, and wait (up to `timeout`) until they
/// are gone. Returns their pids. Linux only (`/proc`); elsewhere none.
pub(super) async fn kill_programs_naming(
    program: &str,
    arg: &std::ffi::OsStr,
    timeout: Duration,
) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.strip_suffix(b"\n").unwrap_or(&comm) == program.as_bytes())
        })
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect();
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    // Gone, or a zombie (its files are closed) that its parent reaps.
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_none_or(|state| state == "Z" || state == "X")
        })
    };
    let deadline = Instant::now() + timeout;
    while !pids.iter().all(|&pid| gone(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pids
}

/// Where to find the PostgreSQL server programs: `configured` when given
/// (it must hold pg_ctl), else the directory of the pg_ctl found on PATH
/// (symlinks resolved, so a `/usr/local/bin/pg_ctl` link leads to the real
/// bin directory), else the highest version under `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, PgError> {
    find_bin_dir_in(
        configured,
        std::env::var_os("PATH"),
        Path::new("/usr/lib/postgresql"),
    )
}

pub(super) fn find_bin_dir_in(
    configured: Option<&Path>,
    path_var: Option<OsString>,
    lib_root: &Path,
) -> Result<PathBuf, PgError> {
    if let Some(dir) = configured {
        return if dir.join("pg_ctl").is_file() {
            Ok(dir.to_path_buf())
        } else {
            Err(PgError::Other(format!(
                "pg_bin_dir {} does not contain pg_ctl; set pg_bin_dir to the directory \
                 holding the PostgreSQL server programs (for example /usr/lib/postgresql/15/bin)",
                dir.display()
            )))
        };
    }
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join("pg_ctl");
            if !candidate.is_file() {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            // Skip wrappers (Debian's pg_wrapper) that are not pg_ctl itself.
            if let Some(parent) = real.parent().filter(|p| p.join("pg_ctl").is_file()) {
                return Ok(parent.to_path_buf());
            }
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(lib_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if !bin.join("pg_ctl").is_file() {
                continue;
            }
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        PgError::Other(format!(
            "PostgreSQL server binaries (pg_ctl) were not found on PATH or under {}/*/bin; \
             install them (for example `apt-get install postgresql-15`) or set `pg_bin_dir` \
             to the directory holding pg_ctl",
            lib_root.display()
        ))
    })
}

pub(super) fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.')
        .map(|part| part.parse::<u32>().ok())
        .collect()
}

/// Stderr lines of a watched program kept for its error message.
const KEPT_LINES: usize = 50;
/// How often a watched program's progress is sampled.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// Run long work (`program` printing `done/total kB` progress lines on
/// stderr) with no time limit: it is stopped only when nothing moved
/// (neither its count nor its processes' I/O) for `stall_timeout`. Its
/// progress is published on `board` every second, and cleared at the end.
/// Failures as [`run_program`], a stall as [`PgError::Stalled`].
pub(super) async fn run_watched(
    label: &str,
    program: &Path,
    args: &[OsString],
    envs: &[(&str, &str)],
    mut watch: Watch,
    board: &Board,
    stall_timeout: Duration,
) -> Result<(ProgramOutput, WorkProgress), PgError> {
    use tokio::io::AsyncReadExt;
    let mut child = spawn(label, program, args, envs, Stdio::null())?;
    let pid = child.id();
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut pending = String::new();
    let mut buf = vec![0u8; 8192];
    let mut tick = tokio::time::interval(WATCH_TICK);
    let mut stderr_open = true;
    let clear = ClearOnDrop(board);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            read = stderr.read(&mut buf), if stderr_open => match read {
                Ok(0) | Err(_) => stderr_open = false,
                Ok(n) => {
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    // Lines end in '\n', or in '\r' on a terminal.
                    while let Some(end) = pending.find(['\n', '\r']) {
                        let line: String = pending.drain(..=end).collect();
                        let line = line.trim_end();
                        if let Some((done, total)) = parse_kb(line) {
                            watch.copied(Instant::now(), done, total);
                        } else if !line.trim().is_empty() {
                            kept.push_back(line.to_string());
                            if kept.len() > KEPT_LINES {
                                kept.pop_front();
                            }
                        }
                    }
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(pid) = pid {
                    watch.io(now, tree_io(pid));
                }
                let progress = watch.progress(now);
                board.set(Some(progress.clone()));
                if progress.idle >= stall_timeout {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    warn!(program = label, "postgres: {label} stalled and was stopped: {}", progress.describe());
                    return Err(PgError::Stalled {
                        program: label.to_string(),
                        stall_timeout,
                        progress: progress.describe(),
                    });
                }
            }
        }
    };
    drop(clear);
    let status = status.map_err(|source| PgError::Spawn {
        program: label.to_string(),
        source,
    })?;
    // What is left of stderr once the program is gone.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WATCH_TICK, stderr.read_to_end(&mut rest)).await;
    pending.push_str(&String::from_utf8_lossy(&rest));
    for line in pending.split(['\n', '\r']) {
        if parse_kb(line).is_none() && !line.trim().is_empty() {
            kept.push_back(line.trim_end().to_string());
        }
    }
    let said = Vec::from(kept).join("\n");
    if status.success() {
        let done = watch.progress(Instant::now());
        board.finish(done.clone());
        debug!(
            program = label,
            "postgres: {label} done: {}",
            done.describe()
        );
        return Ok((
            ProgramOutput {
                stdout: String::new(),
                stderr: said,
            },
            done,
        ));
    }
    for line in said.lines() {
        warn!(program = label, "postgres: {label}: {line}");
    }
    Err(PgError::Program {
        program: label.to_string(),
        status: status.to_string(),
        stderr: said,
    })
}

/// Empties the board when the work ends, however it ends.
struct ClearOnDrop<'a>(&'a Board);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// Bytes read and written (`rchar + wchar` of `/proc/<pid>/io`) by `pid`
/// and its descendants; 0 for what cannot be read.
fn tree_io(pid: u32) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![pid];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{p}/io")) {
            for line in io.lines() {
                if let Some(v) = line
                    .strip_prefix("rchar: ")
                    .or_else(|| line.strip_prefix("wchar: "))
                {
                    total = total.wrapping_add(v.trim().parse().unwrap_or(0));
                }
            }
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}
