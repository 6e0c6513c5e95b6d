//! Where the programs are and who runs them.
//!
//! PostgreSQL refuses to run as root, and CI runs the tests as root, so when
//! the effective user is root every PostgreSQL program and every keeper runs
//! as the unprivileged user `postgres`; the directories the harness creates
//! are handed over to that user. Otherwise everything runs as the current user.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::{Gid, Uid, User};

/// Environment variable naming the directory that holds `pgpilot-monitor`
/// and `pgpilot-keeper` (default: the cargo target directory of this test).
pub const BIN_DIR_ENV: &str = "PGPILOT_BIN_DIR";
/// Environment variable naming PostgreSQL's bin directory (default: the
/// newest `/usr/lib/postgresql/*/bin`, then `PATH`).
pub const PG_BIN_DIR_ENV: &str = "PGPILOT_PG_BIN_DIR";
/// Set to keep each test's directory (data, configs, logs) after the test.
pub const KEEP_DIRS_ENV: &str = "PGPILOT_KEEP_TEST_DIRS";

/// The unprivileged user PostgreSQL and the keepers run as when we are root.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    /// `None` when the current user is not root: run as ourselves.
    pub fn detect() -> Result<Option<RunAs>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let user = User::from_name("postgres")
            .context("looking up the user `postgres`")?
            .ok_or_else(|| {
                anyhow!(
                    "the tests run as root, so they run PostgreSQL as the user `postgres`, \
                     which does not exist; install PostgreSQL (it creates that user) or run \
                     the tests as a normal user"
                )
            })?;
        Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        }))
    }
}

/// PostgreSQL's server programs were not found.
#[derive(Debug)]
pub struct PostgresNotInstalled {
    pub searched: Vec<PathBuf>,
}

impl fmt::Display for PostgresNotInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let searched: Vec<String> = self
            .searched
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        write!(
            f,
            "PostgreSQL server programs (initdb, pg_ctl, postgres) were not found (looked in: {}); \
             install them with `sudo apt-get install postgresql-15`, or set {PG_BIN_DIR_ENV} to \
             their directory",
            if searched.is_empty() {
                "PATH".to_string()
            } else {
                searched.join(", ")
            }
        )
    }
}

impl std::error::Error for PostgresNotInstalled {}

/// The programs the harness runs, and the user it runs PostgreSQL as.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `pgpilot-monitor`, run as the current user.
    pub monitor: PathBuf,
    /// `pgpilot-keeper`, at a path `run_as` can execute.
    pub keeper: PathBuf,
    /// PostgreSQL's bin directory (initdb, pg_ctl, psql, …).
    pub pg_bin_dir: PathBuf,
    pub run_as: Option<RunAs>,
}

impl Tools {
    pub fn locate() -> Result<Tools> {
        let pg_bin_dir = find_pg_bin_dir()?;
        let run_as = RunAs::detect()?;
        let bin_dir = pgpilot_bin_dir()?;
        let monitor = bin_dir.join("pgpilot-monitor");
        let keeper = bin_dir.join("pgpilot-keeper");
        for program in [&monitor, &keeper] {
            if !program.is_file() {
                bail!(
                    "{} does not exist; build the binaries first with `cargo build --workspace` \
                     (or set {BIN_DIR_ENV} to the directory that holds them)",
                    program.display()
                );
            }
        }
        let keeper = match run_as {
            Some(_) => readable_copy(&keeper)?,
            None => keeper,
        };
        Ok(Tools {
            monitor,
            keeper,
            pg_bin_dir,
            run_as,
        })
    }

    pub fn pg_program(&self, name: &str) -> PathBuf {
        self.pg_bin_dir.join(name)
    }

    /// A command for a PostgreSQL program or a keeper: run as `postgres` when
    /// we are root, with `dir` as working and home directory.
    pub fn command_as_pg_user(&self, program: impl AsRef<OsStr>, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some(run_as) = self.run_as {
            cmd.uid(run_as.uid.as_raw()).gid(run_as.gid.as_raw());
        }
        cmd.current_dir(dir).env("HOME", dir);
        cmd
    }

    /// `pgpilot-keeper run --config <config>` as the PostgreSQL user, in its own
    /// process group (so a Ctrl-C aimed at the lab does not reach it first).
    pub fn keeper_command(&self, config: &Path, dir: &Path) -> Command {
        let mut cmd = self.command_as_pg_user(&self.keeper, dir);
        cmd.arg("run").arg("--config").arg(config);
        cmd.process_group(0);
        set_default_log_filter(&mut cmd);
        cmd
    }

    /// `pgpilot-monitor <args>` as the current user, without a
    /// `PGPILOT_MONITOR`, TLS settings or token inherited from the
    /// environment.
    pub fn monitor_command(&self) -> Command {
        let mut cmd = Command::new(&self.monitor);
        for var in [
            "PGPILOT_MONITOR",
            "PGPILOT_TLS_CA",
            "PGPILOT_TLS_CERT",
            "PGPILOT_TLS_KEY",
            "PGPILOT_TLS_SERVER_NAME",
            "PGPILOT_TOKEN",
            "PGPILOT_TOKEN_FILE",
        ] {
            cmd.env_remove(var);
        }
        set_default_log_filter(&mut cmd);
        cmd
    }

    /// Give `path` to the PostgreSQL user (no-op when not root).
    pub fn hand_over(&self, path: &Path) -> Result<()> {
        if let Some(run_as) = self.run_as {
            nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid))
                .with_context(|| format!("chown {} to postgres", path.display()))?;
        }
        Ok(())
    }

    /// Create `path` (and parents) and hand it over to the PostgreSQL user.
    pub fn make_dir(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        self.hand_over(path)
    }

    /// A fresh temporary directory owned by the PostgreSQL user.
    pub fn scratch_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating a temporary directory")?;
        self.hand_over(dir.path())?;
        Ok(dir)
    }
}

/// Logs go to files: no colours, `info` unless RUST_LOG says otherwise.
fn set_default_log_filter(cmd: &mut Command) {
    cmd.env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
}

/// `$PGPILOT_BIN_DIR`, else the cargo target directory this executable lives
/// in (`target/debug/deps/<test>` → `target/debug`, `target/debug/pgpilot-lab`
/// → `target/debug`).
fn pgpilot_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?
        .to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    Ok(dir)
}

fn find_pg_bin_dir() -> Result<PathBuf> {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        return Err(PostgresNotInstalled {
            searched: vec![dir],
        }
        .into());
    }
    let mut searched = Vec::new();
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    for (_, dir) in versions {
        if has_server(&dir) {
            return Ok(dir);
        }
        searched.push(dir);
    }
    if searched.is_empty() {
        searched.push(PathBuf::from("/usr/lib/postgresql/*/bin"));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    Err(PostgresNotInstalled { searched }.into())
}

/// A copy of `program` the `postgres` user can execute: `/root` is mode 700,
/// so a binary in a checkout under it is out of that user's reach. The copy is
/// named after the source's size and mtime, and published with a rename so
/// that test processes running in parallel never see a half-written file.
fn readable_copy(program: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(program).with_context(|| format!("stat {}", program.display()))?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = program
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", program.display()))?;
    let tmp_root = std::env::temp_dir();
    let dir = tmp_root.join(format!("pgpilot-bin-{}-{mtime}", meta.len()));
    let target = dir.join(name);
    if target.is_file() {
        return Ok(target);
    }
    let staging = tempfile::Builder::new()
        .prefix(".pgpilot-bin-staging-")
        .tempdir_in(&tmp_root)
        .context("creating a staging directory for the keeper binary")?;
    fs::copy(program, staging.path().join(name))
        .with_context(|| format!("copying {}", program.display()))?;
    fs::set_permissions(staging.path().join(name), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))?;
    let staging = staging.keep();
    if let Err(err) = fs::rename(&staging, &dir) {
        let _ = fs::remove_dir_all(&staging);
        if !target.is_file() {
            return Err(err).with_context(|| format!("publishing {}", dir.display()));
        }
        // Another test process published the same copy first.
    }
    remove_stale_copies(&tmp_root, &dir);
    Ok(target)
}

/// Copies of older builds, untouched for a day, are removed (each is ~100 MB).
fn remove_stale_copies(tmp_root: &Path, current: &Path) {
    const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let Ok(entries) = fs::read_dir(tmp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_copy = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with("pgpilot-bin-"));
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if is_copy && stale && path != current {
            let _ = fs::remove_dir_all(&path);
        }
    }
}
