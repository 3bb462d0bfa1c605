//! One writer per profile at a time, across processes.
//!
//! Any number of `grove` processes may open one profile (a `read --follow`, several `send`s, a
//! script in a loop, `grove chat`). Each holds the profile's group state in memory, and each
//! operation that uses or changes it (encrypt, commit, sync, checkpoint) runs while holding an
//! exclusive advisory lock on `<profile>/lock` (`flock`, released by the kernel if the process
//! dies). On taking the lock, a process whose in-memory state is older than the file reloads it
//! first: SQLite's `PRAGMA data_version` is the generation counter (it changes whenever another
//! connection committed), as matrix-rust-sdk's cross-process lock keeps one to make its crypto
//! store reload after another process wrote.
//!
//! So a ratchet step is always taken from the newest persisted state and persisted before
//! anything derived from it leaves the machine: no key is ever used twice, and no process's
//! checkpoint can erase rows it has not seen.
//!
//! The lock is re-entrant within one [`crate::profile::Profile`]: an operation that calls
//! another (a send that syncs first) takes it once. Waits on the network that change nothing
//! (a long-poll for new entries) happen outside it.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The lock file of one profile, opened once per [`crate::profile::Profile`].
#[derive(Debug, Clone)]
pub(crate) struct ProfileLock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// How many guards of this profile are alive (nesting); the file lock is held while > 0.
    depth: AtomicUsize,
}

/// Holds the profile's lock until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub(crate) struct LockGuard {
    inner: Arc<Inner>,
}

impl ProfileLock {
    /// Opens (creating, owner-only) `<dir>/lock`.
    pub(crate) fn open(dir: &Path) -> io::Result<ProfileLock> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(dir.join("lock"))?;
        Ok(ProfileLock { inner: Arc::new(Inner { file, depth: AtomicUsize::new(0) }) })
    }

    /// Takes the lock, waiting for other processes to release it without blocking the async
    /// runtime. Answers the guard and whether this is the outermost hold (the moment to check
    /// whether another process wrote).
    pub(crate) async fn acquire(&self) -> io::Result<(LockGuard, bool)> {
        if self.inner.depth.load(Ordering::Acquire) > 0 {
            self.inner.depth.fetch_add(1, Ordering::AcqRel);
            return Ok((LockGuard { inner: self.inner.clone() }, false));
        }
        match self.inner.file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let file = self.inner.file.try_clone()?;
                tokio::task::spawn_blocking(move || file.lock())
                    .await
                    .map_err(|e| io::Error::other(format!("waiting for the profile lock: {e}")))??;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        self.inner.depth.store(1, Ordering::Release);
        Ok((LockGuard { inner: self.inner.clone() }, true))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.inner.depth.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Unlocking a held flock cannot fail in a way we could act on; the kernel also
            // releases it when the file is closed.
            let _ = self.inner.file.unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_opener_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProfileLock::open(dir.path()).unwrap();
        let b = ProfileLock::open(dir.path()).unwrap();
        let (ga, first) = a.acquire().await.unwrap();
        assert!(first);
        // Nested in the same profile: no wait, not outermost.
        let (inner, first) = a.acquire().await.unwrap();
        assert!(!first);
        drop(inner);
        let waiter = tokio::spawn(async move { b.acquire().await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "b must wait while a holds the lock");
        drop(ga);
        let (_gb, first) = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("b gets the lock once a releases it")
            .unwrap()
            .unwrap();
        assert!(first);
    }
}
