//! `grove admin backup`: a consistent copy of a server's data while it keeps serving.
//!
//! SQLite: the database is copied with `VACUUM INTO` on a read connection of its own (one read
//! transaction, so the copy is the database as of one instant, and a running server's writer is
//! never blocked: WAL readers do not block writers), and the server key is copied beside it.
//! Everything acknowledged before the backup began is in the copy. The copy is a data folder:
//! `grove serve --data COPY` serves it. Blobs of attachments (`files.store`) are plain files
//! and are not copied here (see docs/operating.md). PostgreSQL is backed up with its own tools
//! (`pg_dump`, point-in-time recovery), also in docs/operating.md.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::OpenError;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The copy of the database.
    pub database: PathBuf,
    /// The copy of the server key.
    pub key: PathBuf,
    /// Size of the database copy, bytes.
    pub bytes: u64,
}

/// Copies the data folder's database and server key into the new folder `to` (created 0700;
/// it must not exist, or be empty). SQLite only.
pub fn backup(config: &Config, to: &Path) -> Result<BackupReport, OpenError> {
    let io = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { context, path, source }
    };
    if config.server.database != "sqlite" {
        return Err(OpenError::Io {
            context: "grove admin backup copies SQLite databases; back PostgreSQL up with pg_dump (docs/operating.md)",
            path: to.to_path_buf(),
            source: std::io::Error::other("not a SQLite server"),
        });
    }
    let dir = &config.server.data_dir;
    let key_from = dir.join("server.key");
    let key = std::fs::read(&key_from).map_err(io("cannot read the server key", &key_from))?;
    if to.exists() && std::fs::read_dir(to).map_err(io("cannot read", to))?.next().is_some() {
        return Err(OpenError::Io {
            context: "the backup folder must be new or empty",
            path: to.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    crate::private_dir(to).map_err(io("cannot create the backup folder", to))?;
    let database = to.join("grove.db");
    #[cfg(feature = "sqlite")]
    grove_store_sqlite::backup(&dir.join("grove.db"), &database)?;
    #[cfg(not(feature = "sqlite"))]
    return Err(OpenError::NotBuiltIn("sqlite"));
    let key_to = to.join("server.key");
    crate::write_private(&key_to, &key).map_err(io("cannot write the key's copy", &key_to))?;
    let bytes = std::fs::metadata(&database).map_err(io("cannot read", &database))?.len();
    tracing::info!(to = %to.display(), bytes, "backup written (database and server key)");
    Ok(BackupReport { database, key: key_to, bytes })
}
