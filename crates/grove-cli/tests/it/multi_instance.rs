//! Two `grove serve` processes on one PostgreSQL database, as an operator runs them behind a
//! load balancer: both share the server key and one public URL; each client is pinned to one
//! instance with `--connect-to PUBLIC=INSTANCE` (a test has no load balancer).
//!
//! They need PostgreSQL: the admin URL in `GROVE_TEST_POSTGRES` (default: the local server);
//! without one they fail and say what to set (`cargo test -- --skip postgresql` leaves them out).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use grove_client::profile::{ConnectTo, Profile};
use serde_json::{json, Value};

use crate::client::{ok, psql, texts};
use crate::serve::{read_all, reqwest, signed, start_configured, Running, GROVE};

/// The URL clients know the server by; it never resolves: every request is routed by
/// `--connect-to` to an instance.
const PUBLIC: &str = "http://grove.test:8080";

/// Two instances on a fresh database, sharing one server key; dropped with the database.
struct Pair {
    a: Running,
    b: Running,
    admin: String,
    db: String,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn start() -> Pair {
        Self::start_configured("")
    }

    /// Two instances with `config` (TOML) added to their configuration.
    fn start_configured(config: &str) -> Pair {
        let admin = std::env::var("GROVE_TEST_POSTGRES")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let db =
            format!("grove_cli_multi_{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        psql(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        psql(&admin, &format!("CREATE DATABASE {db}"));
        let (base, _) = admin.rsplit_once('/').expect("the admin URL names a database");
        let url = format!("{base}/{db}");
        let dir = tempfile::tempdir().unwrap();
        let a = start_configured(&dir.path().join("a"), &["--database", &url], config);
        // The instances of one server share its key: clients sign requests for it.
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::copy(dir.path().join("a/server.key"), dir.path().join("b/server.key")).unwrap();
        let b = start_configured(&dir.path().join("b"), &["--database", &url], config);
        assert_eq!(a.server_key, b.server_key);
        Pair { a, b, admin, db, _dir: dir }
    }

    /// `--connect-to` pinning a client to instance A or B.
    fn to_a(&self) -> String {
        format!("{PUBLIC}={}", self.a.base)
    }

    fn to_b(&self) -> String {
        format!("{PUBLIC}={}", self.b.base)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for r in [&mut self.a, &mut self.b] {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        psql(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
    }
}

fn grove_via(home: &Path, profile: &str, connect_to: &str, args: &[&str]) -> Output {
    Command::new(GROVE)
        .env("GROVE_HOME", home)
        .args(["--profile", profile, "--connect-to", connect_to])
        .args(args)
        .output()
        .expect("grove runs")
}

/// The three-person conversation of `client.rs`, with Alice on instance A and Bob and Carol on
/// instance B: they create, invite, join, chat (everyone sees the same messages in the same
/// order), Carol is removed through A and can neither read the next message nor post on B.
#[test]
fn postgresql_three_people_on_two_instances_chat_and_carol_is_removed() {
    let pair = Pair::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let via = |name: &str| if name == "alice" { pair.to_a() } else { pair.to_b() };
    let g = |name: &str, args: &[&str]| ok(grove_via(home, name, &via(name), args));

    let mut addr = std::collections::HashMap::new();
    for name in ["alice", "bob", "carol"] {
        let a = g(name, &["init", "--home", PUBLIC]).trim().to_string();
        // Plain http:// to a host that is not loopback is written out in the address.
        assert!(a.ends_with("@http://grove.test:8080"), "{a}");
        addr.insert(name, a);
    }
    let link = g("alice", &["room", "create", "garden"]).trim().to_string();
    assert_eq!(link, format!("{PUBLIC}/rooms/garden"));
    g("alice", &["room", "invite", "garden", &addr["bob"]]);
    g("alice", &["room", "invite", &link, &addr["carol"]]);
    assert!(g("bob", &["sync"]).contains("joined"));
    assert!(g("carol", &["sync"]).contains("joined"));

    g("alice", &["send", "garden", "hello from alice"]);
    g("bob", &["send", "garden", "hello from bob"]);
    g("carol", &["send", "garden", "hello from carol"]);
    let want = ["hello from alice", "hello from bob", "hello from carol"];
    let mut seen = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let got = texts(&g(name, &["read", "garden", "--json"]));
        assert_eq!(got.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), want, "{name}");
        seen.push(got);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "same sequence numbers everywhere: {seen:?}");
    let members = g("bob", &["room", "members", "garden", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&members).unwrap().as_array().unwrap().len(), 3);

    let carol_id = addr["carol"].split('@').next().unwrap().to_string();
    g("alice", &["room", "remove", "garden", &carol_id]);
    g("alice", &["send", "garden", "not for carol"]);
    let bob_sees = texts(&g("bob", &["read", "garden", "--json"]));
    assert_eq!(bob_sees.last().unwrap().1, "not for carol");
    let carol_sees = g("carol", &["read", "garden", "--json"]);
    assert!(!carol_sees.contains("not for carol"));
    let out = grove_via(home, "carol", &pair.to_b(), &["send", "garden", "let me in"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Alice (through the library, on A) and Bob (on B) write 15 messages each at the same time
/// into one MLS room; afterwards both histories hold all 30, in the same order.
#[test]
fn postgresql_profiles_on_two_instances_see_one_order() {
    let pair = Pair::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pin = |actual: &str| {
        let mut c = ConnectTo::none();
        c.add(PUBLIC, actual);
        c
    };
    let (to_a, to_b) = (pin(&pair.a.base), pin(&pair.b.base));
    rt.block_on(async {
        let mut alice = Profile::init_with(&dir.path().join("alice"), PUBLIC, to_a).await.unwrap();
        let mut bob = Profile::init_with(&dir.path().join("bob"), PUBLIC, to_b).await.unwrap();
        let room = alice.create_room(PUBLIC, "duet").await.unwrap().link;
        alice.invite(&room, &bob.address().to_string()).await.unwrap();
        assert_eq!(bob.sync().await.unwrap().joined, vec![room.clone()]);

        let (r1, r2) = (room.clone(), room.clone());
        let ta = tokio::spawn(async move {
            for n in 0..15 {
                alice.send(&r1, &format!("alice {n}")).await.unwrap();
            }
            alice
        });
        let tb = tokio::spawn(async move {
            for n in 0..15 {
                bob.send(&r2, &format!("bob {n}")).await.unwrap();
            }
            bob
        });
        let (mut alice, mut bob) = (ta.await.unwrap(), tb.await.unwrap());
        alice.sync().await.unwrap();
        bob.sync().await.unwrap();
        let history = |p: &Profile| -> Vec<(u64, String)> {
            p.messages(&room, 0).unwrap().into_iter().filter_map(|m| m.text().map(|t| (m.seq, t))).collect()
        };
        let (ha, hb) = (history(&alice), history(&bob));
        assert_eq!(ha.len(), 30, "{ha:?}");
        assert_eq!(ha, hb, "both see one order");
        for who in ["alice", "bob"] {
            let mine: Vec<&str> = ha.iter().map(|(_, t)| t.as_str()).filter(|t| t.starts_with(who)).collect();
            let want: Vec<String> = (0..15).map(|n| format!("{who} {n}")).collect();
            assert_eq!(mine, want, "{who}'s messages in the order sent");
        }
    });
}

/// Writers post to both instances; instance A is killed with SIGKILL mid-load. Every entry
/// either instance acknowledged is in the log, at its sequence number, and B keeps serving.
#[test]
fn postgresql_killing_one_instance_loses_no_acknowledged_entry() {
    let mut pair = Pair::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let alice = SigningKey::from_bytes(&[1; 32]);
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<(u64, String, char)>>> = Arc::default();
    let view = |r: &Running| {
        Arc::new(Running {
            child: Command::new("true").spawn().unwrap(),
            base: r.base.clone(),
            server_key: r.server_key,
            log: r.log.clone(),
        })
    };
    let (va, vb) = (view(&pair.a), view(&pair.b));
    rt.block_on(async {
        let (status, _) =
            signed(&client, &va, &alice, "POST", "/v1/rooms", Some(json!({"name": "load", "mode": "sender-keys"})))
                .await
                .unwrap();
        assert_eq!(status, 201);
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let (client, alice, acked) = (client.clone(), alice.clone(), acked.clone());
            let (r, which) = if t % 2 == 0 { (va.clone(), 'a') } else { (vb.clone(), 'b') };
            tasks.push(tokio::spawn(async move {
                for n in 0..100_000u32 {
                    if Instant::now() > deadline {
                        return;
                    }
                    let body = grove_wire::b64::encode(format!("{t}:{n}").as_bytes());
                    let req = json!({"kind": "application", "epoch": 0, "body": body});
                    match signed(&client, &r, &alice, "POST", "/v1/rooms/load/log", Some(req)).await {
                        Ok((201, v)) => acked.lock().unwrap().push((v["seq"].as_u64().unwrap(), body, which)),
                        Ok((status, v)) => panic!("unexpected {status}: {v}"),
                        Err(_) => return, // the instance is gone
                    }
                }
            }));
        }
        let start = Instant::now();
        while acked.lock().unwrap().len() < 500 && start.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pair.a.child.kill().unwrap(); // SIGKILL
        pair.a.child.wait().unwrap();
        let acked_at_kill = acked.lock().unwrap().len();
        for t in tasks {
            t.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        let by_a = acked.iter().filter(|e| e.2 == 'a').count();
        let after_kill_by_b = acked.len() - acked_at_kill;
        assert!(by_a >= 50, "only {by_a} entries acknowledged by A before the kill");
        assert!(after_kill_by_b > 0, "B stopped serving when A was killed");

        let log = read_all(&client, &vb, &alice).await;
        let seqs: Vec<u64> = log.iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "gap-free log");
        let stored: std::collections::HashMap<u64, &String> = log.iter().map(|(s, b)| (*s, b)).collect();
        for (seq, body, _) in &acked {
            assert_eq!(stored.get(seq), Some(&body), "acknowledged entry {seq} lost or changed");
        }
        eprintln!(
            "{} acknowledged ({by_a} by A, {after_kill_by_b} by B after the kill), {} stored",
            acked.len(),
            log.len()
        );
    });
}

/// With blobs in one S3 bucket (`GROVE_TEST_S3`, as `.ci/run` sets it): Alice sends a file
/// through instance A, Bob saves it through instance B, byte for byte. Without `GROVE_TEST_S3`
/// it says why and checks nothing.
#[test]
fn postgresql_s3_a_file_sent_through_one_instance_is_saved_through_the_other() {
    let Some(endpoint) = std::env::var("GROVE_TEST_S3").ok().filter(|u| !u.trim().is_empty()) else {
        eprintln!("skipped: GROVE_TEST_S3 is not set (an S3-compatible server's URL; .ci/run starts moto's)");
        return;
    };
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let bucket = format!("grove-cli-{}", std::process::id());
    let made = tokio::runtime::Runtime::new().unwrap().block_on(async {
        ::reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap().status()
    });
    assert!(made.is_success(), "cannot make bucket {bucket}: {made}");
    let pair = Pair::start_configured(&format!(
        "[files]\nstore = \"s3://{bucket}/cli\"\npart_bytes = 65536\n[files.s3]\nendpoint = \"{endpoint}\"\nallow_http = {}\n",
        endpoint.starts_with("http:")
    ));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let via = |name: &str| if name == "alice" { pair.to_a() } else { pair.to_b() };
    let g = |name: &str, args: &[&str]| ok(grove_via(home, name, &via(name), args));
    g("alice", &["init", "--home", PUBLIC]);
    let bob = g("bob", &["init", "--home", PUBLIC]).trim().to_string();
    g("alice", &["room", "create", "garden"]);
    g("alice", &["room", "invite", "garden", &bob]);
    g("bob", &["sync"]);

    let photo = home.join("photo.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&photo, &bytes).unwrap();
    let sent = g("alice", &["--json", "send", "garden", "--file", photo.to_str().unwrap()]);
    let seq = serde_json::from_str::<Value>(&sent).unwrap()["seq"].as_u64().unwrap().to_string();
    let out = home.join("saved.bin");
    g("bob", &["save", "garden", &seq, "--out", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes, "Bob saved, through B, the file Alice sent through A");
}
