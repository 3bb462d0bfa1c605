//! The client commands as a person runs them: several profiles on one machine, one server.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::{start, start_with, GROVE};

pub fn grove(home: &Path, profile: &str, args: &[&str]) -> Output {
    Command::new(GROVE).env("GROVE_HOME", home).args(["--profile", profile]).args(args).output().expect("grove runs")
}

#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "grove failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn texts(json_lines: &str) -> Vec<(u64, String)> {
    json_lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "text")
        .map(|v| (v["seq"].as_u64().unwrap(), v["text"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn three_people_chat_through_the_cli_and_carol_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();

    // No identity yet: the error says what to do.
    let out = grove(&home, "alice", &["whoami"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grove init --home URL"));

    let mut addr = std::collections::HashMap::new();
    for name in ["alice", "bob", "carol"] {
        let a = ok(grove(&home, name, &["init", "--home", &url])).trim().to_string();
        assert!(a.contains('@') && a.ends_with(url.trim_start_matches("http://")), "{a}");
        assert_eq!(ok(grove(&home, name, &["whoami"])).trim(), a);
        addr.insert(name, a);
    }
    let link = ok(grove(&home, "alice", &["room", "create", "garden", "--server", &url])).trim().to_string();
    assert_eq!(link, format!("{url}/rooms/garden"));
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
    ok(grove(&home, "alice", &["room", "invite", &link, &addr["carol"]]));
    let synced = ok(grove(&home, "bob", &["sync"]));
    assert!(synced.contains("joined") && synced.contains("grove room accept garden"), "{synced}");
    assert!(ok(grove(&home, "carol", &["sync"])).contains("joined"));
    // Bob's invitation waits for his answer; he accepts it. Carol will accept by writing.
    assert!(ok(grove(&home, "bob", &["room", "list"])).contains("(invited by "), "bob's room list");
    ok(grove(&home, "bob", &["room", "accept", "garden"]));
    assert!(!ok(grove(&home, "bob", &["room", "list"])).contains("invited by"));
    let again = grove(&home, "bob", &["room", "accept", "garden"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("no invitation"));

    ok(grove(&home, "alice", &["send", "garden", "hello from alice"]));
    ok(grove(&home, "bob", &["send", "garden", "hello from bob"]));
    ok(grove(&home, "carol", &["send", "garden", "hello from carol"]));
    let want = ["hello from alice", "hello from bob", "hello from carol"];
    for name in ["alice", "bob", "carol"] {
        let got: Vec<String> =
            texts(&ok(grove(&home, name, &["read", "garden", "--json"]))).into_iter().map(|(_, t)| t).collect();
        assert_eq!(got, want, "{name}");
    }
    let members = ok(grove(&home, "bob", &["room", "members", "garden", "--json"]));
    assert_eq!(serde_json::from_str::<Value>(&members).unwrap().as_array().unwrap().len(), 3);
    // Nothing to void: Alice is not behind a commit she cannot process.
    let void = grove(&home, "alice", &["room", "void-stuck", "garden"]);
    assert!(!void.status.success());
    assert!(String::from_utf8_lossy(&void.stderr).contains("not behind a commit it cannot process"), "{void:?}");
    assert!(ok(grove(&home, "carol", &["room", "list"])).contains(&link));

    let carol_id = addr["carol"].split('@').next().unwrap().to_string();
    ok(grove(&home, "alice", &["room", "remove", "garden", &carol_id]));
    ok(grove(&home, "alice", &["send", "garden", "not for carol"]));
    let bob_sees = texts(&ok(grove(&home, "bob", &["read", "garden", "--json"])));
    assert_eq!(bob_sees.last().unwrap().1, "not for carol");
    let carol_sees = ok(grove(&home, "carol", &["read", "garden", "--json"]));
    assert!(!carol_sees.contains("not for carol"));
    let out = grove(&home, "carol", &["send", "garden", "let me in"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ok(grove(&home, "carol", &["room", "list"])).contains("(removed)"));

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Neither the server's files nor its log hold any plaintext.
    let log = server.log.lock().unwrap().clone();
    for text in want.iter().chain(["not for carol"].iter()) {
        assert!(!log.contains(text));
        for e in std::fs::read_dir(dir.path().join("server")).unwrap() {
            let path = e.unwrap().path();
            if !path.is_file() {
                continue; // the admin socket a killed server leaves behind holds nothing
            }
            let data = std::fs::read(path).unwrap();
            assert!(!data.windows(text.len()).any(|w| w == text.as_bytes()), "{text} on the server");
        }
    }
}

/// Five people say hello in turn, in each mode; carol, away, is removed by alice, and the
/// others go on. Carol's next `grove sync` says she was removed; `grove read` shows every hello
/// (dave's and eve's, sent while she was away, too), then that alice removed her, and nothing
/// after.
#[test]
fn carol_removed_while_away_reads_every_hello_then_that_alice_removed_her() {
    let names = ["alice", "bob", "carol", "dave", "eve"];
    for mode in ["mls", "sender-keys"] {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir.path().join("server"));
        let home = dir.path().join("home");
        let url = server.base.clone();
        let mut addr = std::collections::HashMap::new();
        for name in names {
            addr.insert(name, ok(grove(&home, name, &["init", "--home", &url])).trim().to_string());
            ok(grove(&home, name, &["name", name]));
        }
        ok(grove(&home, "alice", &["room", "create", "garden", "--server", &url, "--mode", mode]));
        for name in &names[1..] {
            ok(grove(&home, "alice", &["room", "invite", "garden", &addr[name]]));
            assert!(ok(grove(&home, name, &["sync"])).contains("joined"), "{mode}: {name}");
        }
        for name in names {
            ok(grove(&home, name, &["send", "garden", &format!("hello from {name}")]));
        }
        let carol_id = addr["carol"].split('@').next().unwrap().to_string();
        ok(grove(&home, "alice", &["room", "remove", "garden", &carol_id]));
        ok(grove(&home, "alice", &["send", "garden", "not for carol"]));

        assert!(ok(grove(&home, "carol", &["sync"])).contains("removed from"), "{mode}");
        let read = ok(grove(&home, "carol", &["read", "garden"]));
        let lines: Vec<&str> = read.lines().collect();
        let hellos: Vec<usize> = names
            .iter()
            .map(|n| {
                let said = format!("{n}: hello from {n}");
                let said = if *n == "carol" { "you: hello from carol".to_string() } else { said };
                lines
                    .iter()
                    .position(|l| l.ends_with(&said))
                    .unwrap_or_else(|| panic!("{mode}: no {said:?} in\n{read}"))
            })
            .collect();
        assert!(hellos.windows(2).all(|w| w[0] < w[1]), "{mode}: in turn\n{read}");
        let last = lines.last().unwrap();
        assert!(last.ends_with("* alice removed you; nothing after this reaches you"), "{mode}: {read}");
        assert!(!read.contains("not for carol") && !read.contains("unreadable"), "{mode}: {read}");
    }
}

#[test]
fn a_sync_killed_at_any_moment_resumes_with_no_loss_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();
    let alice = ok(grove(&home, "alice", &["init", "--home", &url])).trim().to_string();
    let bob = ok(grove(&home, "bob", &["init", "--home", &url])).trim().to_string();
    let _ = alice;
    ok(grove(&home, "alice", &["room", "create", "r"]));
    ok(grove(&home, "alice", &["room", "invite", "r", &bob]));
    ok(grove(&home, "bob", &["sync"]));

    // Alice writes 600 messages (through the library: 600 processes would be slow). Enough
    // that Bob's sync outlasts several kills even on a fast machine.
    let total = 600;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut p = grove_client::profile::Profile::open(&home.join("alice")).unwrap();
        for n in 0..total {
            p.send("r", &format!("message {n}")).await.unwrap();
        }
    });

    // Bob's sync is killed again and again, each time a little later (from the start-up on).
    let mut delay = Duration::from_millis(10);
    let started = Instant::now();
    let mut kills = 0;
    loop {
        let mut child = Command::new(GROVE)
            .env("GROVE_HOME", &home)
            .args(["--profile", "bob", "sync"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        delay += Duration::from_millis(10);
        assert!(started.elapsed() < Duration::from_secs(120), "sync never completed");
    }
    assert!(kills >= 2, "the sync finished before it could be interrupted ({kills} kills)");
    let got = texts(&ok(grove(&home, "bob", &["read", "r", "--json"])));
    let bodies: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(bodies, (0..total).map(|n| format!("message {n}")).collect::<Vec<_>>(), "after {kills} kills");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn the_demo_runs_the_whole_story() {
    let out = Command::new(GROVE).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "alice creates the MLS room",
        "carol cannot post",
        "none of the messages is there in plaintext",
        "demo complete",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

/// Runs SQL through psql against the admin URL CI provides.
pub fn psql(admin: &str, sql: &str) {
    let out =
        Command::new("psql").arg(admin).args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]).output().expect("psql runs");
    assert!(
        out.status.success(),
        "this test needs PostgreSQL (set GROVE_TEST_POSTGRES to an admin URL); psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn grove_serve_on_postgresql_carries_a_conversation() {
    // The local server of this project's machines unless GROVE_TEST_POSTGRES says otherwise.
    let admin = std::env::var("GROVE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let db = format!("grove_cli_test_{}", std::process::id());
    psql(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql(&admin, &format!("CREATE DATABASE {db}"));
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{db}");
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with(&dir.path().join("server"), &["--database", &url]);
    let home = dir.path().join("home");
    let result = std::panic::catch_unwind(|| {
        let bob = ok(grove(&home, "bob", &["init", "--home", &server.base])).trim().to_string();
        ok(grove(&home, "alice", &["init", "--home", &server.base]));
        ok(grove(&home, "alice", &["room", "create", "pg"]));
        ok(grove(&home, "alice", &["room", "invite", "pg", &bob]));
        ok(grove(&home, "bob", &["sync"]));
        ok(grove(&home, "bob", &["send", "pg", "stored in postgres"]));
        let got = texts(&ok(grove(&home, "alice", &["read", "pg", "--json"])));
        assert_eq!(got.last().unwrap().1, "stored in postgres");
    });
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let log = server.log.lock().unwrap().clone();
    psql(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    assert!(log.contains("database open (PostgreSQL)"), "{log}");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A community room from the command line: Alice names it, opens it to requests by link and
/// hands one out; Bob asks, she sees him in `grove room requests` and approves him; Carol is
/// denied; Bob reads the room's name and writes; `grove join` of a revoked link says so.
#[test]
fn alice_names_her_room_and_lets_bob_in_by_a_link_she_approves() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();
    for name in ["alice", "bob", "carol"] {
        ok(grove(&home, name, &["init", "--home", &url]));
    }
    ok(grove(&home, "alice", &["room", "create", "square", "--server", &url, "--mode", "sender-keys"]));
    ok(grove(&home, "alice", &["room", "profile", "square", "--name", "Paris protests", "--topic", "Saturday, 2pm"]));
    ok(grove(&home, "alice", &["room", "policy", "square", "approval"]));
    let link =
        ok(grove(&home, "alice", &["room", "link", "square", "--uses", "5", "--expires", "7d"])).trim().to_string();
    assert!(link.starts_with(&format!("{url}/rooms/square#")), "{link}");

    let bad = grove(&home, "bob", &["join", "not-a-link"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not an invite link"));
    let asked = grove(&home, "bob", &["join", &link]);
    assert!(String::from_utf8_lossy(&ok_keep(&asked)).is_empty());
    assert!(String::from_utf8_lossy(&asked.stderr).contains("an admin of the room decides"));
    ok(grove(&home, "carol", &["join", &link]));
    let bob_id = ok(grove(&home, "bob", &["whoami"])).trim().split('@').next().unwrap().to_string();
    let carol_id = ok(grove(&home, "carol", &["whoami"])).trim().split('@').next().unwrap().to_string();
    let waiting = ok(grove(&home, "alice", &["room", "requests", "square"]));
    assert!(waiting.contains(&bob_id) && waiting.contains(&carol_id), "{waiting}");
    ok(grove(&home, "alice", &["room", "approve", "square", &bob_id]));
    ok(grove(&home, "alice", &["room", "deny", "square", &carol_id]));
    assert!(ok(grove(&home, "alice", &["room", "requests", "square"])).trim().is_empty());

    assert!(ok(grove(&home, "bob", &["sync"])).contains("joined"));
    let info = ok(grove(&home, "bob", &["room", "info", "square"]));
    assert!(info.contains("name:\tParis protests") && info.contains("join:\tapproval"), "{info}");
    assert!(info.contains("members:\t2") && info.contains("you:\tmember"), "{info}");
    let list = ok(grove(&home, "bob", &["room", "list"]));
    assert!(list.contains("\"Paris protests\"") && !list.contains("invited by"), "{list}");
    let profile = ok(grove(&home, "bob", &["room", "profile", "square", "--json"]));
    let profile: Value = serde_json::from_str(&profile).unwrap();
    assert_eq!((profile["name"].as_str(), profile["topic"].as_str()), (Some("Paris protests"), Some("Saturday, 2pm")));
    // Bob, a plain member, may not rename the room.
    let rename = grove(&home, "bob", &["room", "profile", "square", "--name", "Bob's"]);
    assert!(!rename.status.success() && String::from_utf8_lossy(&rename.stderr).contains("ask an admin"));
    ok(grove(&home, "bob", &["send", "square", "glad to be here"]));
    let read = ok(grove(&home, "alice", &["read", "square"]));
    assert!(read.contains("glad to be here"), "{read}");
    assert!(read.contains("set the room's join policy to approval"), "{read}");
    ok(grove(&home, "carol", &["sync"]));
    assert!(!ok(grove(&home, "carol", &["room", "list"])).contains("square"));

    ok(grove(&home, "alice", &["room", "link", "square", "--revoke"]));
    let late = grove(&home, "carol", &["join", &link]);
    assert!(!late.status.success() && String::from_utf8_lossy(&late.stderr).contains("link_invalid"));
}

/// An MLS room whose join policy is `link`: Bob's `grove join` is an external commit, and he is
/// in at once, with Alice doing nothing more; history says how he came in.
#[test]
fn bob_joins_alices_mls_room_by_its_link_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();
    for name in ["alice", "bob"] {
        ok(grove(&home, name, &["init", "--home", &url, "--name", name]));
    }
    ok(grove(&home, "alice", &["room", "create", "plaza", "--server", &url]));
    ok(grove(&home, "alice", &["room", "policy", "plaza", "link"]));
    let link = ok(grove(&home, "alice", &["room", "link", "plaza", "--uses", "1"])).trim().to_string();

    let joined = grove(&home, "bob", &["join", &link]);
    ok_keep(&joined);
    assert!(String::from_utf8_lossy(&joined.stderr).contains("joined"), "{joined:?}");
    let list = ok(grove(&home, "bob", &["room", "list"]));
    assert!(list.contains("plaza"), "{list}");
    ok(grove(&home, "bob", &["send", "plaza", "in by the link"]));
    let read = ok(grove(&home, "alice", &["read", "plaza"]));
    assert!(read.contains("in by the link") && read.contains("joined by the room's invite link"), "{read}");
    // Used once: nobody else comes in with it.
    ok(grove(&home, "carol", &["init", "--home", &url]));
    let late = grove(&home, "carol", &["join", &link]);
    assert!(!late.status.success() && String::from_utf8_lossy(&late.stderr).contains("link_used_up"), "{late:?}");
}

fn ok_keep(out: &Output) -> Vec<u8> {
    assert!(out.status.success(), "grove failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.clone()
}
