//! The servers' keys a profile has met (like SSH's `known_hosts`): every request is signed
//! for the server's Ed25519 key from its `/v1/info`, so a machine in the middle that swapped
//! that key could read what was meant for the server. The first contact with a server
//! remembers its key; from then on a different key is refused
//! ([`crate::TransportError::KeyChanged`]) until the user accepts it
//! ([`KnownServers::trust`], `grove server trust URL KEY`).
//!
//! The file is `known_servers` in the profile folder, one `URL KEY` line per server. A first
//! contact appends its line with one `write` (`O_APPEND`), so processes sharing the profile
//! never interleave lines; [`KnownServers::trust`] rewrites the file through a temporary file
//! and a rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use grove_wire::UserId;

use crate::transport::TransportError;

/// The `known_servers` file of one profile.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    /// The file in the profile folder `dir`.
    pub fn in_profile(dir: &Path) -> KnownServers {
        KnownServers { path: dir.join("known_servers") }
    }

    /// Every remembered server and key, in the order first met.
    pub fn list(&self) -> std::io::Result<Vec<(String, UserId)>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut out: Vec<(String, UserId)> = Vec::new();
        for line in text.lines() {
            let Some((url, key)) = line.split_once(' ') else { continue };
            let Ok(key) = key.trim().parse() else { continue };
            // Two processes meeting a server at once may both append it: the first line counts.
            if !out.iter().any(|(u, _)| u == url) {
                out.push((url.to_string(), key));
            }
        }
        Ok(out)
    }

    /// The key remembered for `url`.
    pub fn get(&self, url: &str) -> std::io::Result<Option<UserId>> {
        let url = url.trim_end_matches('/');
        Ok(self.list()?.into_iter().find(|(u, _)| u == url).map(|(_, k)| k))
    }

    /// Checks that `url` presents `key`: remembers it if the server is met for the first time,
    /// refuses it if another key is remembered.
    pub fn check(&self, url: &str, key: &UserId) -> Result<(), TransportError> {
        let url = url.trim_end_matches('/');
        let io = |e: std::io::Error| TransportError::Unreachable {
            url: url.to_string(),
            detail: format!("cannot read or write the known servers' keys in {}: {e}", self.path.display()),
        };
        match self.get(url).map_err(io)? {
            Some(known) if known == *key => Ok(()),
            Some(known) => Err(TransportError::KeyChanged { url: url.to_string(), known, presented: *key }),
            None => {
                let mut o = std::fs::OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                let mut f = o.open(&self.path).map_err(io)?;
                f.write_all(format!("{url} {key}\n").as_bytes()).map_err(io)?;
                tracing::info!(server = url, %key, "first contact: the server's key is remembered");
                Ok(())
            }
        }
    }

    /// Replaces the key remembered for `url` with `key` (a rotation its operator announced);
    /// answers the key it replaces, if any.
    pub fn trust(&self, url: &str, key: &UserId) -> std::io::Result<Option<UserId>> {
        let url = url.trim_end_matches('/');
        let mut all = self.list()?;
        let old = all.iter().find(|(u, _)| u == url).map(|(_, k)| *k);
        all.retain(|(u, _)| u != url);
        all.push((url.to_string(), *key));
        let text: String = all.iter().map(|(u, k)| format!("{u} {k}\n")).collect();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_remembered_on_first_contact_and_a_new_key_refused_until_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::in_profile(dir.path());
        let (a, b) = (UserId([1; 32]), UserId([2; 32]));
        known.check("https://chat.example/", &a).unwrap();
        known.check("https://chat.example", &a).unwrap();
        known.check("https://other.example", &b).unwrap();
        let err = known.check("https://chat.example", &b).unwrap_err();
        assert!(matches!(err, TransportError::KeyChanged { known, presented, .. } if known == a && presented == b));
        assert!(err.to_string().contains(&format!("grove server trust https://chat.example {b}")), "{err}");
        assert!(!err.is_transient());
        assert_eq!(known.trust("https://chat.example", &b).unwrap(), Some(a));
        known.check("https://chat.example", &b).unwrap();
        assert_eq!(known.get("https://other.example").unwrap(), Some(b));
        assert_eq!(known.list().unwrap().len(), 2);
    }
}
