//! `grove send --file` and `grove save`, as a person runs them.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::client::{grove, ok};
use crate::serve::{start, GROVE};

/// `grove` run in the folder `cwd` (where `grove save` writes by default).
fn grove_in(cwd: &Path, home: &Path, profile: &str, args: &[&str]) -> Output {
    Command::new(GROVE)
        .current_dir(cwd)
        .env("GROVE_HOME", home)
        .args(["--profile", profile])
        .args(args)
        .output()
        .expect("grove runs")
}

#[track_caller]
fn fails(out: Output) -> String {
    assert!(!out.status.success(), "grove should have failed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// Alice sends a file with a caption in a sender-keys room; Bob sees `[file NAME, SIZE, TYPE]`
/// in `grove read`, saves it into his current folder under its name, is refused a second save
/// over it (until `--force`), and saves another copy with `--out`. Mistakes get plain answers.
#[test]
fn a_file_is_sent_shown_and_saved_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("server"));
    let home = dir.path().join("home");
    let url = server.base.clone();
    let alice = ok(grove(&home, "alice", &["init", "--home", &url, "--name", "Alice"])).trim().to_string();
    let bob = ok(grove(&home, "bob", &["init", "--home", &url, "--name", "Bob"])).trim().to_string();
    assert!(alice.contains('@'));
    ok(grove(&home, "alice", &["room", "create", "garden", "--mode", "sender-keys"]));
    ok(grove(&home, "alice", &["room", "invite", "garden", &bob]));
    ok(grove(&home, "bob", &["sync"]));

    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let notes = src.join("notes.txt");
    std::fs::write(&notes, "hello, file\n").unwrap();
    let sent = ok(grove(
        &home,
        "alice",
        &["--json", "send", "garden", "--file", notes.to_str().unwrap(), "--caption", "the notes"],
    ));
    let seq = serde_json::from_str::<Value>(&sent).unwrap()["seq"].as_u64().unwrap().to_string();

    let shown = ok(grove(&home, "bob", &["read", "garden"]));
    assert!(shown.contains(&format!("[{seq}] Alice: [file notes.txt, 12 B, text/plain] the notes")), "{shown}");
    let json_lines = ok(grove(&home, "bob", &["--json", "read", "garden"]));
    let line: Value = json_lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["kind"] == "attachment")
        .expect("the file is listed");
    assert_eq!(line["file"]["name"], "notes.txt");
    assert_eq!(line["file"]["size"], 12);
    assert_eq!(line["caption"], "the notes");
    assert!(line["file"].get("key").is_none(), "the file's key is not printed: {line}");

    // Saved under its own name in the current folder; the path is the output.
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let out = ok(grove_in(&downloads, &home, "bob", &["save", "garden", &seq]));
    assert_eq!(out.trim(), "notes.txt");
    assert_eq!(std::fs::read_to_string(downloads.join("notes.txt")).unwrap(), "hello, file\n");

    // Never over an existing file without --force.
    std::fs::write(downloads.join("notes.txt"), "my own notes").unwrap();
    let err = fails(grove_in(&downloads, &home, "bob", &["save", "garden", &seq]));
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(downloads.join("notes.txt")).unwrap(), "my own notes");
    ok(grove_in(&downloads, &home, "bob", &["save", "garden", &seq, "--force"]));
    assert_eq!(std::fs::read_to_string(downloads.join("notes.txt")).unwrap(), "hello, file\n");

    // --out: a path, or a folder to put it in.
    let copy = dir.path().join("copy.txt");
    ok(grove(&home, "bob", &["save", "garden", &seq, "--out", copy.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "hello, file\n");
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    let json = ok(grove(&home, "bob", &["--json", "save", "garden", &seq, "--out", folder.to_str().unwrap()]));
    let saved: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(saved["path"], folder.join("notes.txt").to_str().unwrap());
    assert_eq!((saved["size"].as_u64(), saved["media_type"].as_str()), (Some(12), Some("text/plain")));
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1, "no temporary file left");

    // Plain answers to mistakes.
    ok(grove(&home, "alice", &["send", "garden", "just text"]));
    let text_seq = ok(grove(&home, "bob", &["--json", "read", "garden"]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["text"] == "just text")
        .unwrap()["seq"]
        .to_string();
    let err = fails(grove_in(&downloads, &home, "bob", &["save", "garden", &text_seq]));
    assert!(err.contains("is not a file"), "{err}");
    let err = fails(grove_in(&downloads, &home, "bob", &["save", "garden", "9999"]));
    assert!(err.contains("no entry 9999"), "{err}");
    let missing = src.join("missing.pdf");
    let err = fails(grove(&home, "alice", &["send", "garden", "--file", missing.to_str().unwrap()]));
    assert!(err.contains("missing.pdf"), "{err}");
    let err = fails(grove(&home, "alice", &["send", "garden", "text", "--file", notes.to_str().unwrap()]));
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(grove(&home, "alice", &["send", "garden", "--caption", "no file"]));
    assert!(err.contains("--file"), "{err}");
}
