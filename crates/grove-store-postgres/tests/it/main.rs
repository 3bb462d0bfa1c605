//! Integration tests of the PostgreSQL store against a real server: the conformance suite, and
//! two store instances sharing one database.
//!
//! Every test makes its own database (`grove_test_<pid>_<n>_<nanos>`) through the admin URL in
//! `GROVE_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and drops it at the
//! end, even when the test fails. Without the variable every test fails and says so: these tests
//! are never skipped silently.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;
mod multi_instance;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

/// The variable that names the admin URL of the test server.
pub const ENV: &str = "GROVE_TEST_POSTGRES";

/// Where the tests look when the variable is unset: the local server of this project's
/// machines (user postgres, trust auth).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL: the variable, or the local default. If the server is not there, the first
/// connection fails with a message that says what to set.
pub fn admin_url() -> String {
    match std::env::var(ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => DEFAULT_URL.to_string(),
    }
}

/// A fresh database on the test server, dropped (`WITH (FORCE)`) when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    /// Creates a database with a name unique across concurrent tests and processes.
    pub async fn create() -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let admin = admin_url();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("grove_test_{}_{}_{nanos:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let (client, conn) = tokio_postgres::connect(&admin, NoTls).await.unwrap_or_else(|e| {
            panic!(
                "these tests need PostgreSQL: cannot connect to {admin} ({e}). Start it, or set {ENV} to an \
                     admin URL of a server where databases may be created and dropped"
            )
        });
        let conn = tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        drop(client);
        let _ = conn.await;
        let url = database_url(&admin, &name);
        TestDb { admin, name, url }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The admin URL's connection settings with another database, as a key=value string.
fn database_url(admin: &str, dbname: &str) -> String {
    let config: tokio_postgres::Config = admin.parse().expect("admin URL parses");
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = vec![format!("dbname={}", quote(dbname))];
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", quote(&hosts.join(","))));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(pw) = config.get_password() {
        parts.push(format!("password={}", quote(&String::from_utf8_lossy(pw))));
    }
    parts.join(" ")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin, NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}: the dropping thread panicked", self.name),
        }
    }
}

pub use grove_store::conformance::{create_room, entry, user};
