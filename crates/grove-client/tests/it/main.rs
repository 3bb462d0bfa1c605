//! Clients and a real server (in-process, on 127.0.0.1, SQLite in a temporary folder).

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

mod community;
mod files;
mod homes;
mod journal;
mod link_join;
mod people;
mod poison;
mod privacy;
mod proxy;
mod push;
mod removal;
mod scenarios;
mod socks;
mod tls;

use std::path::{Path, PathBuf};

use grove_client::profile::Profile;

/// A server and a folder for profiles.
pub struct World {
    pub url: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl World {
    pub async fn start() -> World {
        Self::start_with(|_| {}).await
    }

    /// [`World::start`] with a server configured by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut grove_server::Config)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut config = grove_server::Config::default();
        config.server.data_dir = dir.path().join("server");
        config.limits.user_requests_per_sec = 100_000;
        config.limits.ip_requests_per_sec = 100_000;
        tweak(&mut config);
        let state = grove_server::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(grove_server::run(listener, state, async move {
            let _ = stopped.await;
        }));
        World { url, dir, stop: Some(stop), task: Some(task) }
    }

    pub fn profile_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("profiles").join(name)
    }

    pub async fn user(&self, name: &str) -> Profile {
        Profile::init(&self.profile_dir(name), &self.url).await.unwrap()
    }

    /// Starts the server again on the same address and data folder (after [`World::stop`]).
    pub async fn restart(&mut self) {
        let mut config = grove_server::Config::default();
        config.server.data_dir = self.dir.path().join("server");
        config.limits.user_requests_per_sec = 100_000;
        config.limits.ip_requests_per_sec = 100_000;
        let state = grove_server::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind(self.url.trim_start_matches("http://")).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.task = Some(tokio::spawn(grove_server::run(listener, state, async move {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Stops the server and answers its files' bytes.
    pub async fn stop(&mut self) -> Vec<(PathBuf, Vec<u8>)> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.path().join("server")).unwrap() {
            let p = e.unwrap().path();
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
        out
    }
}

pub fn texts(p: &Profile, room: &str) -> Vec<String> {
    p.messages(room, 0).unwrap().into_iter().filter_map(|m| m.text()).collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Alice creates `garden` and invites Bob and Carol, who join.
pub async fn garden(w: &World) -> (Profile, Profile, Profile) {
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut carol = w.user("carol").await;
    alice.create_room(&w.url, "garden").await.unwrap();
    alice.invite("garden", &bob.address().to_string()).await.unwrap();
    alice.invite("garden", &carol.address().to_string()).await.unwrap();
    assert_eq!(bob.sync().await.unwrap().joined.len(), 1);
    assert_eq!(carol.sync().await.unwrap().joined.len(), 1);
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    (alice, bob, carol)
}
