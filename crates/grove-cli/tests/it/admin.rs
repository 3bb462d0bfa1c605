//! `grove admin` and `grove serve --log-format json` as an operator runs them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::serve::{read_all, signed, start, GROVE};

fn admin(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(GROVE).arg("admin").arg("--data").arg(data).args(args).output().expect("grove runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_json(data: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = admin(data, &all);
    assert!(ok, "grove admin {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn user_hex(key: &SigningKey) -> String {
    grove_wire::UserId(key.verifying_key().to_bytes()).to_string()
}

#[test]
fn the_operator_administers_a_running_server_then_a_stopped_one_and_restores_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (alice, bob) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let client = reqwest::Client::new();
    rt.block_on(async {
        let room = json!({"name": "load", "mode": "sender-keys"});
        signed(&client, &server, &alice, "POST", "/v1/rooms", Some(room)).await.unwrap();
        for _ in 0..3 {
            let req = json!({"kind": "application", "epoch": 0, "body": "AAAA"});
            assert_eq!(signed(&client, &server, &alice, "POST", "/v1/rooms/load/log", Some(req)).await.unwrap().0, 201);
        }
    });

    // Running: the commands go through the server's socket.
    let rooms = admin_json(&data, &["rooms"]);
    assert_eq!(rooms["rooms"][0]["name"], "load");
    assert_eq!(rooms["rooms"][0]["entries"], 3);
    let (ok, out, _) = admin(&data, &["rooms"]);
    assert!(ok && out.contains("load") && out.contains("sender-keys"), "{out}");
    let show = admin_json(&data, &["room", "show", "load"]);
    assert_eq!(show["room"]["member_ids"], json!([user_hex(&alice)]));
    let (ok, out, _) = admin(&data, &["stats"]);
    assert!(ok && out.contains("rooms:            1") && out.contains("entries:          3"), "{out}");
    let users = admin_json(&data, &["users"]);
    assert_eq!(users["users"][0]["user"], user_hex(&alice));
    let (ok, out, _) = admin(&data, &["block", &user_hex(&bob)]);
    assert!(ok && out.contains("is blocked"), "{out}");
    let (status, body) = rt.block_on(signed(&client, &server, &bob, "GET", "/v1/mailbox?after=0", None)).unwrap();
    assert_eq!((status, body["code"].as_str()), (403, Some("blocked")));
    let (ok, _, err) = admin(&data, &["block", "nonsense"]);
    assert!(!ok && err.contains("not a user id"), "{err}");
    let (ok, _, err) = admin(&data, &["room", "delete", "nowhere"]);
    assert!(!ok && err.contains("no room named"), "{err}");
    let backup = dir.path().join("backup");
    let (ok, out, err) = admin(&data, &["backup", backup.to_str().unwrap()]);
    assert!(ok && out.contains("backed up"), "{out}{err}");

    // Stopped: the same commands act on the database.
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let started = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "grove did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!data.join("admin.sock").exists(), "the socket goes with the server");
    assert_eq!(admin_json(&data, &["rooms"])["rooms"][0]["entries"], 3);
    assert_eq!(admin_json(&data, &["users"])["users"].as_array().unwrap().len(), 2, "alice and blocked bob");
    let (ok, out, _) = admin(&data, &["room", "delete", "load"]);
    assert!(ok && out.contains("room load deleted: 3 entries"), "{out}");
    assert_eq!(admin_json(&data, &["unblock", &user_hex(&bob)])["changed"], true);
    let log = std::fs::read_to_string(data.join("admin.log")).unwrap();
    assert_eq!(log.lines().count(), 5, "block, nonsense, nowhere, delete, unblock: {log}");

    // The data folder: the room is gone. The backup: it is there, every entry.
    let again = start(&data);
    let (status, body) = rt.block_on(signed(&client, &again, &alice, "GET", "/v1/rooms/load", None)).unwrap();
    assert_eq!((status, body["code"].as_str()), (404, Some("room_not_found")));
    drop(again);
    let restored = start(&backup);
    assert_eq!(restored.server_key, server.server_key, "the backup carries the server key");
    assert_eq!(rt.block_on(read_all(&client, &restored, &alice)).len(), 3);
}

#[test]
fn json_logs_go_to_stdout_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(GROVE)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        let message = v["fields"]["message"].as_str().unwrap_or_default().to_string();
        seen.push(message.clone());
        if message.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|m| m.contains("listening on")), "{seen:?}");
}
