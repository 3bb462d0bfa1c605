//! Many `grove` processes on one profile at once, as a person runs them: a `read --follow` in
//! one terminal, sends from others, a script in a loop. Every message is encrypted under a key
//! never used before and reaches every member exactly once.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{grove, ok};
use crate::serve::{start, GROVE};

const WRITERS: usize = 4;
const SENDS: usize = 25;

/// Every (kind, text) of a `read --json` output.
fn lines(json_lines: &str) -> Vec<(String, String)> {
    json_lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (v["kind"].as_str().unwrap_or("").to_string(), v["text"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Asserts each of `want` appears exactly once among the texts and nothing is unreadable.
#[track_caller]
fn exactly_once(who: &str, got: &[(String, String)], want: &[String]) {
    let unreadable: Vec<_> = got.iter().filter(|(k, _)| k == "undecryptable").collect();
    assert!(unreadable.is_empty(), "{who} has unreadable entries: {unreadable:?}");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (k, t) in got {
        if k == "text" {
            *counts.entry(t.as_str()).or_default() += 1;
        }
    }
    for w in want {
        assert_eq!(counts.get(w.as_str()).copied().unwrap_or(0), 1, "{who}: {w:?} should be there exactly once");
    }
}

fn follower(home: &Path, profile: &str, room: &str, out: &Path) -> Child {
    Command::new(GROVE)
        .env("GROVE_HOME", home)
        .args(["--profile", profile, "read", room, "--follow", "--json"])
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

/// Alice runs four sending scripts of 25 messages each and a follower, all on her one profile,
/// while Bob and Carol are members too.
fn one_profile_many_processes(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();
    let mut addr = HashMap::new();
    for name in ["alice", "bob", "carol"] {
        addr.insert(name, ok(grove(&home, name, &["init", "--home", &url])).trim().to_string());
    }
    ok(grove(&home, "alice", &["room", "create", "garden", "--mode", mode]));
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["carol"]]));
    ok(grove(&home, "bob", &["sync"]));
    ok(grove(&home, "carol", &["sync"]));

    let follow_out = dir.path().join("follow.jsonl");
    let mut follow = follower(&home, "alice", "garden", &follow_out);

    let want: Vec<String> =
        (0..WRITERS).flat_map(|w| (0..SENDS).map(move |i| format!("writer {w} message {i}"))).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let home = home.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..SENDS {
                    let out = grove(&home, "alice", &["send", "garden", &format!("writer {w} message {i}")]);
                    if !out.status.success() {
                        failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(failures.is_empty(), "{} of {} sends failed: {:?}", failures.len(), WRITERS * SENDS, failures);

    for name in ["alice", "bob", "carol"] {
        let got = lines(&ok(grove(&home, name, &["read", "garden", "--json"])));
        exactly_once(name, &got, &want);
    }
    // The follower is still running and has shown every message once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            follow.try_wait().unwrap().is_none(),
            "the follower exited: {}",
            std::fs::read_to_string(follow_out.with_extension("err")).unwrap_or_default()
        );
        let got = lines(&std::fs::read_to_string(&follow_out).unwrap());
        let texts = got.iter().filter(|(k, _)| k == "text").count();
        if texts >= want.len() {
            exactly_once("alice's follower", &got, &want);
            break;
        }
        assert!(Instant::now() < deadline, "the follower showed {texts} of {} messages", want.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
}

#[test]
fn four_writers_and_a_follower_on_one_profile_in_an_mls_room() {
    one_profile_many_processes("mls");
}

#[test]
fn four_writers_and_a_follower_on_one_profile_in_a_sender_keys_room() {
    one_profile_many_processes("sender-keys");
}

/// `grove read ROOM | head -1`: the reader stops quietly when the pipe closes.
#[test]
fn read_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    ok(grove(&home, "alice", &["init", "--home", &server.base]));
    ok(grove(&home, "alice", &["room", "create", "garden"]));
    for i in 0..30 {
        ok(grove(&home, "alice", &["send", "garden", &format!("line {i}")]));
    }
    let mut child = Command::new(GROVE)
        .env("GROVE_HOME", &home)
        .args(["--profile", "alice", "read", "garden"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end at once, as `head -1` does after its line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

/// `grove send` killed (SIGKILL) at every moment of its life, again and again: afterwards one
/// sync leaves nothing in the outbox, and every message that reached the outbox is in every
/// member's history exactly once; every send that had answered success is among them.
#[test]
fn a_send_killed_at_any_moment_loses_nothing_and_duplicates_nothing() {
    for mode in ["mls", "sender-keys"] {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir.path().join("server"));
        let home = dir.path().join("home");
        let mut addr = HashMap::new();
        for name in ["alice", "bob"] {
            addr.insert(name, ok(grove(&home, name, &["init", "--home", &server.base])).trim().to_string());
        }
        ok(grove(&home, "alice", &["room", "create", "garden", "--mode", mode]));
        ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
        ok(grove(&home, "bob", &["sync"]));

        // Phase 1: kill ever later until a send completes (its life here, however loaded the
        // machine); phase 2: kill at 20 moments spread over that life.
        let mut acknowledged = Vec::new();
        let mut kills = 0;
        let mut life = None;
        let mut delay = Duration::from_millis(2);
        let mut i = 0;
        loop {
            let d = match life {
                None => delay,
                Some(l) => l * (i - 100) / 20,
            };
            let text = format!("killed send {i}");
            let mut child = Command::new(GROVE)
                .env("GROVE_HOME", &home)
                .args(["--profile", "alice", "send", "garden", &text])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(d);
            match child.try_wait().unwrap() {
                Some(status) if status.success() => {
                    acknowledged.push(text);
                    if life.is_none() {
                        life = Some(d);
                        i = 99;
                    }
                }
                Some(status) => panic!("{mode}: send {i} failed: {status}"),
                None => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    kills += 1;
                }
            }
            i += 1;
            delay += Duration::from_millis(5);
            if i >= 120 || (life.is_none() && i >= 99) {
                break;
            }
        }
        assert!(life.is_some(), "{mode}: no send finished within {delay:?}");
        ok(grove(&home, "alice", &["sync"]));
        let waiting = ok(grove(&home, "alice", &["outbox", "--json"]));
        let waiting: Value = serde_json::from_str(&waiting).unwrap();
        assert!(waiting["waiting"].as_array().unwrap().is_empty(), "{mode}: {waiting}");
        let alice = lines(&ok(grove(&home, "alice", &["read", "garden", "--json"])));
        let sent: Vec<String> =
            alice.iter().filter(|(k, t)| k == "text" && t.starts_with("killed send")).map(|(_, t)| t.clone()).collect();
        for a in &acknowledged {
            assert!(sent.contains(a), "{mode}: {a:?} was acknowledged but is not in alice's history");
        }
        exactly_once(&format!("{mode}: alice"), &alice, &sent);
        let bob = lines(&ok(grove(&home, "bob", &["read", "garden", "--json"])));
        exactly_once(&format!("{mode}: bob"), &bob, &sent);
        let bob_texts = bob.iter().filter(|(k, t)| k == "text" && t.starts_with("killed send")).count();
        assert_eq!(bob_texts, sent.len(), "{mode}: bob has what alice has");
        assert!(kills >= 3 && !acknowledged.is_empty(), "{mode}: {kills} kills, {} finished", acknowledged.len());
    }
}

/// With the server down, `grove send` exits 75 (EX_TEMPFAIL) and says the message is queued;
/// `grove outbox` lists it; the next command that reaches the server sends it.
#[test]
fn a_send_while_the_server_is_down_is_queued_and_sent_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let mut addr = HashMap::new();
    for name in ["alice", "bob"] {
        addr.insert(name, ok(grove(&home, name, &["init", "--home", &server.base])).trim().to_string());
    }
    ok(grove(&home, "alice", &["room", "create", "garden"]));
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
    ok(grove(&home, "bob", &["sync"]));
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let out = grove(&home, "alice", &["send", "garden", "written while offline"]);
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queued"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ok(grove(&home, "alice", &["outbox"])).contains("written while offline"));
    // Reading offline shows what the profile holds.
    ok(grove(&home, "alice", &["read", "garden"]));

    let _server = crate::serve::start_on(&dir.path().join("server"), &server.base);
    ok(grove(&home, "alice", &["sync"]));
    assert!(!ok(grove(&home, "alice", &["outbox"])).contains("written while offline"));
    let bob = lines(&ok(grove(&home, "bob", &["read", "garden", "--json"])));
    exactly_once("bob", &bob, &["written while offline".to_string()]);
}

/// `grove send ROOM` with no text (or `-`) reads the message from standard input; an empty
/// one is refused; a removed member is told plainly.
#[test]
fn send_reads_the_message_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let mut addr = HashMap::new();
    for name in ["alice", "bob"] {
        addr.insert(name, ok(grove(&home, name, &["init", "--home", &server.base, "--name", name])).trim().to_string());
    }
    ok(grove(&home, "alice", &["room", "create", "garden"]));
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
    ok(grove(&home, "bob", &["sync"]));
    let piped = |args: &[&str], input: &str| {
        let mut child = Command::new(GROVE)
            .env("GROVE_HOME", &home)
            .args(["--profile", "alice"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let long = "line one\nline two\n".repeat(100);
    ok(piped(&["send", "garden"], &long));
    ok(piped(&["send", "garden", "-"], "from a pipe\n"));
    let empty = piped(&["send", "garden"], "  \n");
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("the message is empty"));
    let bob = lines(&ok(grove(&home, "bob", &["read", "garden", "--json"])));
    exactly_once("bob", &bob, &[long.trim_end_matches('\n').to_string(), "from a pipe".to_string()]);
    // Names are shown: bob reads alice's messages under her name.
    let plain = ok(grove(&home, "bob", &["read", "garden"]));
    assert!(plain.contains("alice: from a pipe"), "{plain}");

    let bob_id = addr["bob"].split('@').next().unwrap().to_string();
    ok(grove(&home, "alice", &["room", "remove", "garden", &bob_id]));
    let out = grove(&home, "bob", &["send", "garden", "still here?"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("you can no longer use room") && err.contains("removed"), "{err}");
}

/// A profile's folder and files are private to their owner from the start (they hold the
/// identity secret and every group secret); one opened up by hand is tightened, with a warning.
#[test]
fn profile_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    ok(grove(&home, "alice", &["init", "--home", &server.base]));
    ok(grove(&home, "alice", &["room", "create", "garden"]));
    ok(grove(&home, "alice", &["send", "garden", "hello"]));
    let profile = home.join("alice");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&profile), 0o700);
    for e in std::fs::read_dir(&profile).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(profile.join("state.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = grove(&home, "alice", &["whoami"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("now private"), "{err}");
    assert_eq!(mode(&profile), 0o700);
    assert_eq!(mode(&profile.join("state.db")), 0o600);

    // The server's data folder likewise (the test harness created it 0755: the server
    // tightened it and said so), with its database and key.
    let data = dir.path().join("server");
    assert_eq!(mode(&data), 0o700);
    for f in ["grove.db", "server.key"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert!(server.log.lock().unwrap().contains("now private"), "the server warned");
    // A fresh data folder is created private.
    let fresh = dir.path().join("fresh").join("data");
    let _fresh_server = start_fresh(&fresh);
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("grove.db")), 0o600);
}

/// `grove serve` on a data folder it must create itself.
fn start_fresh(data: &Path) -> crate::serve::Running {
    // The harness writes its config beside the folder; the folder itself is the server's to create.
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    crate::serve::start_uncreated(data)
}
