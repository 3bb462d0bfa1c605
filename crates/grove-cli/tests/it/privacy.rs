//! Privacy as a person sees it: a profile locked with a passphrase, a server log without
//! addresses, a server on a Unix socket (as behind a Tor onion service).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{grove, ok};
use crate::serve::{spawn_serve, GROVE};

fn grove_env(home: &Path, profile: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(GROVE);
    c.env("GROVE_HOME", home).args(["--profile", profile]).args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("grove runs")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `grove init --passphrase` locks the profile: every command then needs the passphrase, a
/// wrong one says so, `grove passphrase` changes it; a profile made without one is told it is
/// not encrypted.
#[test]
fn a_locked_profile_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::serve::start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();

    let out = grove(&home, "bob", &["init", "--home", &url]);
    assert!(stderr(&out).contains("NOT encrypted"), "{}", stderr(&out));
    let pass = [("GROVE_PASSPHRASE", "tea at four")];
    let out = grove_env(&home, "alice", &pass, &["init", "--home", &url, "--passphrase"]);
    let address = ok(out.clone()).trim().to_string();
    assert!(stderr(&out).contains("encrypted at rest"), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&ok(grove_env(
        &home,
        "carol",
        &pass,
        &["--json", "init", "--home", &url, "--passphrase"],
    )))
    .unwrap();
    assert_eq!(json["encrypted"], true);

    assert_eq!(ok(grove_env(&home, "alice", &pass, &["whoami"])).trim(), address);
    let out = grove(&home, "alice", &["whoami"]);
    assert!(!out.status.success() && stderr(&out).contains("GROVE_PASSPHRASE"), "{}", stderr(&out));
    let out = grove_env(&home, "alice", &[("GROVE_PASSPHRASE", "coffee at five")], &["whoami"]);
    assert!(!out.status.success() && stderr(&out).contains("wrong passphrase"), "{}", stderr(&out));

    ok(grove_env(&home, "alice", &pass, &["room", "create", "parlour"]));
    ok(grove_env(&home, "alice", &pass, &["send", "parlour", "the-secret-recipe-is-lapsang"]));
    let state = std::fs::read(home.join("alice").join("state.db")).unwrap();
    assert!(!state.windows(12).any(|w| w == b"secret-recip"));

    let new = [("GROVE_PASSPHRASE", "tea at four"), ("GROVE_NEW_PASSPHRASE", "tea at five")];
    ok(grove_env(&home, "alice", &new, &["passphrase"]));
    let out = grove_env(&home, "alice", &pass, &["whoami"]);
    assert!(stderr(&out).contains("wrong passphrase"), "{}", stderr(&out));
    let read = ok(grove_env(&home, "alice", &[("GROVE_PASSPHRASE", "tea at five")], &["read", "parlour"]));
    assert!(read.contains("the-secret-recipe-is-lapsang"), "{read}");
    let out = grove(&home, "bob", &["passphrase"]);
    assert!(!out.status.success() && stderr(&out).contains("no passphrase"), "{}", stderr(&out));
}

/// `grove serve` with a configuration and log level of the test's, on `listen`; waits for
/// the line saying where it listens and answers it and the log so far (kept growing).
fn serve(data: &Path, config: &str, level: &str, listen: &str) -> (std::process::Child, String, Arc<Mutex<String>>) {
    std::fs::create_dir_all(data).unwrap();
    let cfg = data.with_extension("toml");
    std::fs::write(&cfg, config).unwrap();
    let mut serve = Command::new(GROVE);
    serve.args(["serve", "--listen", listen, "--config"]).arg(&cfg).arg("--data").arg(data);
    spawn_serve(&mut serve, level)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// By default the server's log names no client address at any level, and user ids only at
/// debug level; `log_ip_addresses = true` names the clients.
#[test]
fn the_servers_log_names_no_address_and_user_ids_only_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let limits = "[limits]\nuser_requests_per_sec = 100000\nip_requests_per_sec = 100000\n";
    let mut user = String::new();
    for (i, (level, log_ips)) in [("info", false), ("debug", false), ("debug", true)].into_iter().enumerate() {
        let config = format!("{limits}[privacy]\nlog_ip_addresses = {log_ips}\n");
        let (child, url, log) = serve(&dir.path().join(format!("server{i}")), &config, level, "127.0.0.1:0");
        let profile = format!("p{i}");
        let addr = ok(grove(&home, &profile, &["init", "--home", &url])).trim().to_string();
        user = addr[..8].to_string();
        ok(grove(&home, &profile, &["room", "create", &format!("room-{i}")]));
        ok(grove(&home, &profile, &["send", &format!("room-{i}"), "hello"]));
        stop(child);
        let log = log.lock().unwrap().clone();
        // Every address in the log but the server's own (in its "listening on" line).
        let others = log.replace(url.trim_start_matches("http://"), "SERVER");
        match (level, log_ips) {
            ("info", _) => {
                assert!(!others.contains("127.0.0.1"), "{log}");
                assert!(!log.contains(&user), "a user id at info level:\n{log}");
                assert!(log.contains("room created"), "{log}");
            }
            (_, false) => {
                assert!(log.contains("request"), "{log}");
                assert!(!others.contains("127.0.0.1"), "an address in the log:\n{log}");
                assert!(log.contains(&user), "debug names the user:\n{log}");
            }
            (_, true) => assert!(others.contains("client=127.0.0.1"), "{log}"),
        }
    }
    assert_eq!(user.len(), 8);
}

/// HTTP/1.1 `GET path` over a Unix socket; answers the status line and the body.
fn unix_get(path: &Path, what: &str) -> (String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {what} HTTP/1.1\r\nHost: grove.onion\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.lines().next().unwrap_or_default().to_string();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// `grove serve --listen unix:PATH`: the server answers on the socket; a second server on the
/// same path is refused while the first runs, and a stale socket left by a killed one is
/// replaced. Behind a forwarder from TCP to the socket (what Tor's `HiddenServicePort` does),
/// people talk through it with the usual commands.
#[test]
fn a_server_on_a_unix_socket_serves_people_behind_a_forwarder_like_tor() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("grove.sock");
    let listen = format!("unix:{}", sock.display());
    let limits = "[limits]\nuser_requests_per_sec = 100000\nip_requests_per_sec = 100000\n";
    let (mut child, at, _log) = serve(&dir.path().join("server"), limits, "info", &listen);
    assert_eq!(at, listen);
    let (status, body) = unix_get(&sock, "/v1/info");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("public_key"), "{body}");

    let second = Command::new(GROVE)
        .args(["serve", "--listen", &listen, "--data"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!second.status.success() && stderr(&second).contains("already listening"), "{}", stderr(&second));

    // Killed without a chance to clean up: the socket file stays, and the next start replaces it.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(sock.exists());
    let (child, _, _log) = serve(&dir.path().join("server"), limits, "info", &listen);

    // A forwarder from a TCP port to the socket, as Tor's onion service is.
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", front.local_addr().unwrap());
    let s = sock.clone();
    std::thread::spawn(move || {
        for down in front.incoming().map_while(Result::ok) {
            let up = std::os::unix::net::UnixStream::connect(&s).unwrap();
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut down, mut up) = (down, up);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up, &mut down);
                let _ = down.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let home = dir.path().join("home");
    ok(grove(&home, "alice", &["init", "--home", &url]));
    let bob = ok(grove(&home, "bob", &["init", "--home", &url])).trim().to_string();
    ok(grove(&home, "alice", &["room", "create", "hideout"]));
    ok(grove(&home, "alice", &["room", "invite", "hideout", &bob]));
    ok(grove(&home, "bob", &["sync"]));
    ok(grove(&home, "alice", &["send", "hideout", "nobody knows where this server is"]));
    let read = ok(grove(&home, "bob", &["read", "hideout"]));
    assert!(read.contains("nobody knows where this server is"), "{read}");
    stop(child);
    assert!(!sock.exists(), "a server that stops removes its socket");
}

/// A proxy that cannot be reached fails the command, and nothing reaches the server; an
/// `ALL_PROXY` that is not SOCKS5 is refused rather than ignored.
#[test]
fn a_dead_proxy_fails_closed_and_a_foreign_all_proxy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // A "server" that counts connections.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    server.set_nonblocking(true).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = format!("socks5h://{dead}");
    let out = grove_env(&home, "alice", &[], &["--proxy", &proxy, "init", "--home", &url]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let out = grove_env(&home, "alice", &[("GROVE_PROXY", &proxy)], &["init", "--home", &url]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let out = grove_env(&home, "alice", &[("ALL_PROXY", &proxy)], &["init", "--home", &url]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(server.accept().is_err(), "a connection reached the server without the proxy");
    let out = grove_env(&home, "alice", &[("ALL_PROXY", "http://127.0.0.1:3128")], &["init", "--home", &url]);
    assert!(!out.status.success() && stderr(&out).contains("ALL_PROXY"), "{}", stderr(&out));
    let out = grove(&home, "alice", &["whoami"]);
    assert!(stderr(&out).contains("grove init --home URL"), "no identity was made: {}", stderr(&out));
}
