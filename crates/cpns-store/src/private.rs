//! Files on disk are their owner's only (docs/security.md §4.9.1): a store holds usage
//! records a person marked private, charging records and every entity's status, so no other
//! Unix user of the machine may read it, whatever the umask.
//!
//! A new database is created empty with mode 0600 before SQLite opens it (SQLite gives its WAL
//! and shared-memory files the database's mode); an existing database, WAL or shared-memory
//! file that others may read or write is narrowed to 0600, said in a warning. A data directory
//! is narrowed to 0700 the same way. A mode that cannot be narrowed (a file of another user)
//! fails the open with what to do.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::StoreError;

/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;
/// The mode of a private directory.
pub const DIR_MODE: u32 = 0o700;

/// A file or directory whose mode was narrowed, and its mode before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narrowed {
    /// The path.
    pub path: PathBuf,
    /// Its permission bits before.
    pub was: u32,
}

/// Makes the database at `path`, and its WAL and shared-memory files where they exist, readable
/// and writable by their owner only; creates the database (empty, mode 0600) if it is missing.
pub fn private_database(path: &Path) -> Result<Vec<Narrowed>, StoreError> {
    create_private(path)?;
    let mut narrowed = Vec::new();
    for p in [
        path.to_path_buf(),
        with_suffix(path, "-wal"),
        with_suffix(path, "-shm"),
    ] {
        narrowed.extend(narrow(&p, FILE_MODE)?);
    }
    Ok(narrowed)
}

/// Makes the directory at `path` its owner's only (mode 0700); the mode it had if it was open
/// to others.
pub fn private_dir(path: &Path) -> Result<Option<Narrowed>, StoreError> {
    narrow(path, DIR_MODE)
}

/// Makes the existing file at `path` readable and writable by its owner only (mode 0600); the
/// mode it had if it was open to others.
pub fn private_file(path: &Path) -> Result<Option<Narrowed>, StoreError> {
    narrow(path, FILE_MODE)
}

/// `path` with `suffix` added to its file name (`cpns.db` → `cpns.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    // A database that cannot be made here (no such directory, no right to write in it) is
    // SQLite's to report when it opens it, as it would without this.
    drop(created);
    Ok(())
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Narrows `path`'s mode to `mode` if others may read, write or enter it; nothing if it is
/// missing.
#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> Result<Option<Narrowed>, StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(not_private(path, &e.to_string())),
    };
    let was = meta.permissions().mode() & 0o7777;
    if was & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| not_private(path, &format!("mode {was:04o}, {e}")))?;
    warn!(
        path = %path.display(),
        "narrowed its mode from {was:04o} to {mode:04o}: other users could read it"
    );
    Ok(Some(Narrowed {
        path: path.to_path_buf(),
        was,
    }))
}

#[cfg(not(unix))]
fn narrow(_path: &Path, _mode: u32) -> Result<Option<Narrowed>, StoreError> {
    Ok(None)
}

fn not_private(path: &Path, why: &str) -> StoreError {
    StoreError::NotPrivate {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn a_new_database_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        assert_eq!(private_database(&db).unwrap(), []);
        assert_eq!(mode(&db), FILE_MODE);
        assert_eq!(
            std::fs::metadata(&db).unwrap().len(),
            0,
            "an empty database"
        );
    }

    #[test]
    fn an_open_database_and_its_wal_are_narrowed_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let wal = dir.path().join("s.db-wal");
        let shm = dir.path().join("s.db-shm");
        for (p, m) in [(&db, 0o644), (&wal, 0o666), (&shm, 0o600)] {
            std::fs::write(p, b"").unwrap();
            set(p, m);
        }
        let narrowed = private_database(&db).unwrap();
        assert_eq!(
            narrowed,
            [
                Narrowed {
                    path: db.clone(),
                    was: 0o644
                },
                Narrowed {
                    path: wal.clone(),
                    was: 0o666
                },
            ]
        );
        for p in [&db, &wal, &shm] {
            assert_eq!(mode(p), FILE_MODE, "{}", p.display());
        }
        // A private one is left as it is: only the group or others' bits count.
        set(&db, 0o400);
        assert_eq!(private_database(&db).unwrap(), []);
        assert_eq!(mode(&db), 0o400);
    }

    #[test]
    fn a_key_file_open_to_others_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        std::fs::write(&key, b"00").unwrap();
        set(&key, 0o640);
        let narrowed = private_file(&key).unwrap().unwrap();
        assert_eq!(narrowed.was, 0o640);
        assert_eq!(mode(&key), FILE_MODE);
        assert_eq!(private_file(&key).unwrap(), None);
        assert_eq!(private_file(&dir.path().join("missing.key")).unwrap(), None);
    }

    #[test]
    fn a_directory_open_to_others_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("srv");
        std::fs::create_dir(&data).unwrap();
        set(&data, 0o750);
        let narrowed = private_dir(&data).unwrap().unwrap();
        assert_eq!(narrowed.was, 0o750);
        assert_eq!(mode(&data), DIR_MODE);
        assert_eq!(private_dir(&data).unwrap(), None);
        assert_eq!(private_dir(&dir.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn a_database_that_cannot_be_made_here_is_left_to_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("no").join("such").join("s.db");
        assert_eq!(private_database(&db).unwrap(), []);
        assert!(!db.exists());
    }

    /// A mode that cannot be narrowed stops the open with what to do. Only a file of another
    /// user cannot be narrowed by its reader; as root any can, so this runs as another user
    /// only where one exists: here the error itself is checked.
    #[test]
    fn a_mode_that_cannot_be_narrowed_says_what_to_do() {
        let e = not_private(
            Path::new("/srv/cpns/cpns.db"),
            "mode 0644, Operation not permitted",
        );
        assert!(matches!(e, StoreError::NotPrivate { .. }));
        let said = e.to_string();
        assert!(said.contains("/srv/cpns/cpns.db"), "{said}");
        assert!(said.contains("chmod go-rwx /srv/cpns/cpns.db"), "{said}");
    }
}
