//! Sender Keys rooms through the CLI: the same commands as MLS rooms.

use std::path::Path;
use std::process::{Command, Output};

use grove_client::ClientStore;
use grove_proto::senderkeys::SenderChain;
use serde_json::Value;

use crate::serve::{start, start_on, GROVE};

fn grove(home: &Path, profile: &str, args: &[&str]) -> Output {
    Command::new(GROVE).env("GROVE_HOME", home).args(["--profile", profile]).args(args).output().expect("grove runs")
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "grove failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn texts(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "text")
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect()
}

/// The chain key a profile's own chain in its only sender-keys room holds now (the key it
/// distributed, if it has not sent since its last rotation).
fn own_chain_key(profile: &Path) -> Vec<u8> {
    let store = ClientStore::open(&profile.join("state.db")).unwrap();
    let own = store.records("sk/own/").unwrap();
    assert_eq!(own.len(), 1, "one own chain");
    let dist = SenderChain::from_bytes(&own[0].1).unwrap().distribution().to_bytes();
    // Layout of a distribution: ... chain key (32) ‖ signing public key (32).
    dist[dist.len() - 64..dist.len() - 32].to_vec()
}

/// Every file of the server's data folder (database, WAL).
fn server_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // Files only: the admin socket a killed server leaves behind holds nothing.
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn holds(files: &[(String, Vec<u8>)], needle: &[u8]) -> Option<String> {
    files.iter().find(|(_, d)| d.windows(needle.len()).any(|w| w == needle)).map(|(n, _)| n.clone())
}

#[test]
fn three_people_chat_in_a_sender_keys_room_and_carol_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let mut server = start(&server_dir);
    let home = dir.path().join("home");
    let url = server.base.clone();
    let mut addr = std::collections::HashMap::new();
    for name in ["alice", "bob", "carol"] {
        addr.insert(name, ok(grove(&home, name, &["init", "--home", &url])).trim().to_string());
    }
    let created = ok(grove(&home, "alice", &["--json", "room", "create", "garden", "--mode", "sender-keys"]));
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["mode"], "sender-keys");
    let link = created["link"].as_str().unwrap().to_string();
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
    ok(grove(&home, "alice", &["room", "invite", &link, &addr["carol"]]));
    assert!(ok(grove(&home, "bob", &["sync"])).contains("joined"));
    assert!(ok(grove(&home, "carol", &["sync"])).contains("joined"));

    ok(grove(&home, "alice", &["send", "garden", "hello from alice"]));
    ok(grove(&home, "bob", &["send", "garden", "hello from bob"]));
    ok(grove(&home, "carol", &["send", "garden", "hello from carol"]));
    let want = ["hello from alice", "hello from bob", "hello from carol"];
    for name in ["alice", "bob", "carol"] {
        assert_eq!(texts(&ok(grove(&home, name, &["read", "garden", "--json"]))), want, "{name}");
    }
    let members = ok(grove(&home, "bob", &["room", "members", "garden", "--json"]));
    assert_eq!(serde_json::from_str::<Value>(&members).unwrap().as_array().unwrap().len(), 3);
    assert!(ok(grove(&home, "carol", &["room", "list"])).contains(&link));

    // Alice rotates her chain: its first chain key now waits, Olm-encrypted, in Bob's and
    // Carol's mailboxes on the server.
    ok(grove(&home, "alice", &["room", "update", "garden"]));
    let alice_key = own_chain_key(&home.join("alice"));
    assert_eq!(holds(&server_bytes(&server_dir), &alice_key), None, "alice's chain key is on the server");

    // A copy of Carol's state from before her removal.
    let carol_copy = home.join("carol-copy");
    std::fs::create_dir_all(&carol_copy).unwrap();
    for e in std::fs::read_dir(home.join("carol")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, carol_copy.join(p.file_name().unwrap())).unwrap();
    }

    let carol_id = addr["carol"].split('@').next().unwrap().to_string();
    ok(grove(&home, "alice", &["room", "remove", "garden", &carol_id]));
    ok(grove(&home, "alice", &["send", "garden", "not for carol"]));
    ok(grove(&home, "bob", &["send", "garden", "bob: not for carol either"]));
    let alice_sees = texts(&ok(grove(&home, "alice", &["read", "garden", "--json"])));
    assert_eq!(alice_sees.last().unwrap(), "bob: not for carol either");
    let bob_sees = texts(&ok(grove(&home, "bob", &["read", "garden", "--json"])));
    assert_eq!(&bob_sees[bob_sees.len() - 2..], ["not for carol", "bob: not for carol either"]);
    let carol_sees = ok(grove(&home, "carol", &["read", "garden", "--json"]));
    assert!(!carol_sees.contains("not for carol"));
    let out = grove(&home, "carol", &["send", "garden", "let me in"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ok(grove(&home, "carol", &["room", "list"])).contains("(removed)"));

    // Carol's old state cannot decrypt what Alice and Bob sent after her removal.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alice = grove_client::profile::Profile::open(&home.join("alice")).unwrap();
        let mut old = grove_client::profile::Profile::open(&carol_copy).unwrap();
        let last = alice.messages("garden", 0).unwrap().last().unwrap().seq;
        for seq in [last - 1, last] {
            let body = alice.raw_entry("garden", seq).await.unwrap();
            assert!(old.decrypt_entry("garden", &body).is_err(), "carol's old state decrypts entry {seq}");
        }
    });
    let keys: Vec<Vec<u8>> = ["alice", "bob"].iter().map(|n| own_chain_key(&home.join(n))).collect();

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Neither the server's files nor its log hold any plaintext, nor any chain key.
    let files = server_bytes(&server_dir);
    let log = server.log.lock().unwrap().clone();
    for text in want.iter().chain(["not for carol", "bob: not for carol either"].iter()) {
        assert!(!log.contains(text));
        assert_eq!(holds(&files, text.as_bytes()), None, "{text} on the server");
    }
    for k in keys.iter().chain([&alice_key]) {
        assert_eq!(holds(&files, k), None, "a chain key on the server");
    }
}

/// The story: two `grove serve`, A and B. Alice (home A) makes a sender-keys room on A
/// and invites Bob and Carol (both home B). Bob's first message reaches Carol though nobody
/// told him her home but the room's signed membership; all three read everything. B goes down:
/// Alice's new key cannot reach Bob, and `grove send` says so; once B is back, Alice's next sync
/// delivers it and Bob reads what she sent meanwhile. Alice removes Carol; the others go on.
#[test]
fn three_people_on_two_home_servers_chat_in_a_sender_keys_room() {
    let dir = tempfile::tempdir().unwrap();
    let server_a = start(&dir.path().join("a"));
    let b_dir = dir.path().join("b");
    let mut server_b = start(&b_dir);
    let home = dir.path().join("home");
    let mut addr = std::collections::HashMap::new();
    for (name, url) in [("alice", &server_a.base), ("bob", &server_b.base), ("carol", &server_b.base)] {
        addr.insert(name, ok(grove(&home, name, &["init", "--home", url])).trim().to_string());
    }
    let created = ok(grove(&home, "alice", &["--json", "room", "create", "garden", "--mode", "sender-keys"]));
    let link = serde_json::from_str::<Value>(&created).unwrap()["link"].as_str().unwrap().to_string();
    assert!(link.starts_with(&server_a.base), "{link}");
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["bob"]]));
    ok(grove(&home, "alice", &["room", "invite", "garden", &addr["carol"]]));
    assert!(ok(grove(&home, "bob", &["sync"])).contains("joined"));
    assert!(ok(grove(&home, "carol", &["sync"])).contains("joined"));
    ok(grove(&home, "alice", &["send", "garden", "hello from alice"]));
    let bob_sent = grove(&home, "bob", &["send", "garden", "hello from bob"]);
    assert!(!String::from_utf8_lossy(&bob_sent.stderr).contains("not yet delivered"));
    ok(bob_sent);
    ok(grove(&home, "carol", &["send", "garden", "hello from carol"]));
    let want = ["hello from alice", "hello from bob", "hello from carol"];
    for name in ["alice", "bob", "carol"] {
        assert_eq!(texts(&ok(grove(&home, name, &["read", "garden", "--json"]))), want, "{name}");
    }

    // B goes down; Alice rotates and writes: Bob and Carol cannot get her key yet.
    let b_base = server_b.base.clone();
    server_b.child.kill().unwrap();
    server_b.child.wait().unwrap();
    let out = grove(&home, "alice", &["--json", "send", "garden", "alice: while B is down"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let sent: Value = serde_json::from_str(&ok(out)).unwrap();
    assert!(!err.contains("not yet delivered"), "alice's key went out before B stopped: {err}");
    assert_eq!(sent["key_pending"].as_array().unwrap().len(), 0, "{sent}");
    ok(grove(&home, "alice", &["room", "update", "garden"]));
    let out = grove(&home, "alice", &["--json", "send", "garden", "alice: new key while B is down"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let sent: Value = serde_json::from_str(&ok(out)).unwrap();
    assert!(err.contains("not yet delivered") && err.contains(&b_base), "{err}");
    assert_eq!(sent["key_pending"].as_array().unwrap().len(), 2, "{sent}");
    server_b = start_on(&b_dir, &b_base);
    // Alice's next sync delivers her key; Bob and Carol read what she sent meanwhile.
    ok(grove(&home, "alice", &["sync"]));
    let mut want: Vec<&str> = want.to_vec();
    want.extend(["alice: while B is down", "alice: new key while B is down"]);
    for name in ["bob", "carol"] {
        ok(grove(&home, name, &["sync"]));
        assert_eq!(texts(&ok(grove(&home, name, &["read", "garden", "--json"]))), want, "{name}");
    }

    let carol_id = addr["carol"].split('@').next().unwrap().to_string();
    ok(grove(&home, "alice", &["room", "remove", "garden", &carol_id]));
    ok(grove(&home, "alice", &["send", "garden", "not for carol"]));
    ok(grove(&home, "bob", &["send", "garden", "bob: not for carol either"]));
    let alice_sees = texts(&ok(grove(&home, "alice", &["read", "garden", "--json"])));
    assert_eq!(&alice_sees[alice_sees.len() - 2..], ["not for carol", "bob: not for carol either"]);
    let bob_sees = texts(&ok(grove(&home, "bob", &["read", "garden", "--json"])));
    assert_eq!(&bob_sees[bob_sees.len() - 2..], ["not for carol", "bob: not for carol either"]);
    ok(grove(&home, "carol", &["sync"]));
    assert!(!ok(grove(&home, "carol", &["read", "garden", "--json"])).contains("not for carol"));
    drop(server_b);
}

#[test]
fn the_demo_runs_the_whole_story_in_sender_keys_mode() {
    let out = Command::new(GROVE).args(["demo", "--mode", "sender-keys"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "alice creates the Sender Keys room",
        "carol cannot post",
        "none of the messages is there in plaintext",
        "demo complete",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}
