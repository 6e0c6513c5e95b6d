//! Durable files: a file is replaced whole or not at all, and survives a
//! crash once written (tmp file + fsync + rename + fsync of the directory).
//! The keeper's state file and the files it writes inside PGDATA go
//! through here.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DurableError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn error(path: &Path) -> impl FnOnce(std::io::Error) -> DurableError + '_ {
    move |source| DurableError {
        path: path.to_path_buf(),
        source,
    }
}

/// Replace `path` by `content` (mode 0600): written to a sibling tmp
/// file, fsynced, renamed over `path`, and the directory fsynced.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), DurableError> {
    let tmp = sibling_path(path, ".pgpilot-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(error(&tmp))?;
    file.write_all(content).map_err(error(&tmp))?;
    file.sync_all().map_err(error(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error(path))?;
    fsync_parent(path)
}

/// fsync a directory, so that a rename or a removal in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), DurableError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error(dir))
}

/// fsync the directory holding `path` (the current directory for a bare
/// file name).
pub fn fsync_parent(path: &Path) -> Result<(), DurableError> {
    let normalized: PathBuf = path.components().collect();
    match normalized.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
        _ => fsync_dir(Path::new(".")),
    }
}

/// `path` with `suffix` appended to its last component (`/a/pgdata` +
/// `.log` = `/a/pgdata.log`), ignoring a trailing slash.
pub fn sibling_path(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.components().collect::<PathBuf>().into_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_paths() {
        assert_eq!(
            sibling_path(Path::new("/var/lib/pg/data"), ".log"),
            PathBuf::from("/var/lib/pg/data.log")
        );
        assert_eq!(
            sibling_path(Path::new("/var/lib/pg/data/"), ".clone-tmp"),
            PathBuf::from("/var/lib/pg/data.clone-tmp")
        );
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        write_atomic(&path, b"one\ntwo\n").unwrap();
        write_atomic(&path, b"three\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
        assert!(!sibling_path(&path, ".pgpilot-tmp").exists());
        let err = write_atomic(&dir.path().join("missing/f"), b"x").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
