//! `grove serve` as a process: start, config errors, graceful shutdown, kill -9 mid-load.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use grove_wire::auth::sign_request;
use serde_json::{json, Value};

pub const GROVE: &str = env!("CARGO_BIN_EXE_grove");

pub struct Running {
    pub child: Child,
    pub base: String,
    pub server_key: [u8; 32],
    pub log: Arc<Mutex<String>>,
}

impl Drop for Running {
    /// A test that fails (or forgets) does not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `grove serve` on a free port and waits until it says where it listens.
pub fn start(data: &Path) -> Running {
    start_with(data, &[])
}

/// Starts `grove serve` again on the address of an earlier run (`http://HOST:PORT`).
pub fn start_on(data: &Path, base: &str) -> Running {
    start_listening(data, base.trim_start_matches("http://"), &[])
}

/// Starts `grove serve` with extra arguments.
pub fn start_with(data: &Path, extra: &[&str]) -> Running {
    start_listening(data, "127.0.0.1:0", extra)
}

/// Starts `grove serve` on a data folder that does not exist yet (the server creates it).
pub fn start_uncreated(data: &Path) -> Running {
    start_inner(data, "127.0.0.1:0", &[], false, "")
}

/// Starts `grove serve` with `config` (TOML) added to the test's configuration file.
pub fn start_configured(data: &Path, extra: &[&str], config: &str) -> Running {
    start_inner(data, "127.0.0.1:0", extra, true, config)
}

fn start_listening(data: &Path, listen: &str, extra: &[&str]) -> Running {
    start_inner(data, listen, extra, true, "")
}

fn start_inner(data: &Path, listen: &str, extra: &[&str], create: bool, config: &str) -> Running {
    // Load tests send far more than a person would: lift the per-user rate limit.
    if create {
        std::fs::create_dir_all(data).unwrap();
    }
    let cfg = data.with_extension("toml");
    let limits = "[limits]\nuser_requests_per_sec = 1000000\nip_requests_per_sec = 1000000\n";
    std::fs::write(&cfg, format!("{limits}{config}")).unwrap();
    let mut serve = Command::new(GROVE);
    serve.args(["serve", "--listen", listen, "--config"]).arg(&cfg).arg("--data").arg(data).args(extra);
    let (child, base, log) = spawn_serve(&mut serve, "info");
    assert!(base.starts_with("http://"), "{base}");
    let info: Value = reqwest::blocking_get(&format!("{base}/v1/info"));
    let key = info["public_key"].as_str().unwrap();
    let server_key: grove_wire::UserId = key.parse().unwrap();
    Running { child, base, server_key: server_key.0, log }
}

/// Spawns a prepared `grove serve` command at log level `level`, and waits for the line saying
/// where it listens. Answers the process, that address as logged (`http://HOST:PORT`,
/// `https://…`, `unix:PATH`) and its log so far, which keeps growing.
pub fn spawn_serve(serve: &mut Command, level: &str) -> (Child, String, Arc<Mutex<String>>) {
    let mut child =
        serve.env("GROVE_LOG", level).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("grove starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("grove listening on ") {
                let _ = tx
                    .send(line[i + "grove listening on ".len()..].split_whitespace().next().unwrap_or("").to_string());
            }
            let mut log = kept.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let at = rx.recv_timeout(Duration::from_secs(20)).expect("grove logs where it listens");
    (child, at, log)
}

pub mod reqwest {
    pub use ::reqwest::*;

    /// A tiny synchronous GET for setup, on a throwaway runtime.
    pub fn blocking_get(url: &str) -> serde_json::Value {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { ::reqwest::get(url).await.unwrap().json().await.unwrap() })
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub async fn signed(
    client: &reqwest::Client,
    r: &Running,
    key: &SigningKey,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let nonce = format!("cli-test-{:012}", NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let h = sign_request(key, &r.server_key, method, path, now(), &nonce, &bytes);
    let resp = client
        .request(method.parse().unwrap(), format!("{}{path}", r.base))
        .header("x-grove-key", h.key)
        .header("x-grove-timestamp", h.timestamp)
        .header("x-grove-nonce", h.nonce)
        .header("x-grove-signature", h.signature)
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

pub async fn read_all(client: &reqwest::Client, r: &Running, key: &SigningKey) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map(|(s, _)| *s).unwrap_or(0);
        let (status, page) =
            signed(client, r, key, "GET", &format!("/v1/rooms/load/log?after={after}"), None).await.unwrap();
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        if entries.is_empty() {
            return out;
        }
        for e in entries {
            out.push((e["seq"].as_u64().unwrap(), e["body"].as_str().unwrap().to_string()));
        }
    }
}

#[test]
fn acknowledged_entries_survive_kill_9_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let alice = SigningKey::from_bytes(&[1; 32]);
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    rt.block_on(async {
        let (status, _) =
            signed(&client, &server, &alice, "POST", "/v1/rooms", Some(json!({"name": "load", "mode": "sender-keys"})))
                .await
                .unwrap();
        assert_eq!(status, 201);
        let server_ref = Arc::new(Running {
            child: Command::new("true").spawn().unwrap(),
            base: server.base.clone(),
            server_key: server.server_key,
            log: server.log.clone(),
        });
        let mut tasks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        for t in 0..16u32 {
            let (client, alice, acked, r) = (client.clone(), alice.clone(), acked.clone(), server_ref.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..100_000u32 {
                    if Instant::now() > deadline {
                        return;
                    }
                    let body = grove_wire::b64::encode(format!("{t}:{n}").as_bytes());
                    let req = json!({"kind": "application", "epoch": 0, "body": body});
                    match signed(&client, &r, &alice, "POST", "/v1/rooms/load/log", Some(req)).await {
                        Ok((201, v)) => acked.lock().unwrap().push((v["seq"].as_u64().unwrap(), body)),
                        Ok((status, v)) => panic!("unexpected {status}: {v}"),
                        Err(_) => return, // the server is gone
                    }
                }
            }));
        }
        // Let load build up, then kill the server without warning.
        let start = Instant::now();
        while acked.lock().unwrap().len() < 2_000 && start.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "only {} entries acknowledged before the kill", acked.len());

    let mut server = start(dir.path());
    let stored = rt.block_on(read_all(&client, &server, &alice));
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free after the crash");
    let stored: std::collections::HashMap<u64, String> = stored.into_iter().collect();
    for (seq, body) in &acked {
        assert_eq!(stored.get(seq), Some(body), "acknowledged entry {seq} lost or changed");
    }
    // The restarted server takes new entries right after the last one.
    let (status, v) = rt
        .block_on(signed(
            &client,
            &server,
            &alice,
            "POST",
            "/v1/rooms/load/log",
            Some(json!({"kind": "application", "epoch": 0, "body": ""})),
        ))
        .unwrap();
    assert_eq!((status, v["seq"].as_u64().unwrap()), (201, stored.len() as u64 + 1));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn sigterm_shuts_down_gracefully_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let alice = SigningKey::from_bytes(&[1; 32]);
    let client = reqwest::Client::new();
    rt.block_on(async {
        signed(&client, &server, &alice, "POST", "/v1/rooms", Some(json!({"name": "load", "mode": "sender-keys"})))
            .await
            .unwrap();
        for _ in 0..10 {
            let req = json!({"kind": "application", "epoch": 0, "body": "AAAA"});
            assert_eq!(signed(&client, &server, &alice, "POST", "/v1/rooms/load/log", Some(req)).await.unwrap().0, 201);
        }
    });
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "grove did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    std::thread::sleep(Duration::from_millis(100));
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("shutting down") && log.contains("grove stopped"), "{log}");
    assert!(dir.path().join("server.key").exists() && dir.path().join("grove.db").exists());
    let mut again = start(dir.path());
    assert_eq!(again.server_key, server.server_key, "the server keeps its key across restarts");
    assert_eq!(rt.block_on(read_all(&client, &again, &alice)).len(), 10);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("grove.toml");
    std::fs::write(&cfg, "[server]\nlisten_at = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(GROVE).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config file") && err.contains("listen_at"), "{err}");
    let out = Command::new(GROVE).args(["serve", "--config"]).arg(dir.path().join("missing.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    // The printed example is itself a valid configuration.
    let out = Command::new(GROVE).args(["serve", "--print-config"]).output().unwrap();
    assert!(out.status.success());
    std::fs::write(&cfg, &out.stdout).unwrap();
    grove_server::Config::load(&cfg).unwrap();
}
