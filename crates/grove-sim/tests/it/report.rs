//! `grove-sim report` end to end on tiny groups: real cryptography, the simulation, the
//! markdown, the plots and the BENCHMARKS.md section; and what bad arguments get.

use std::process::Command;

use grove_sim::measure::{measure, MeasureOpts};
use grove_sim::report::splice_benchmarks;

#[test]
fn the_real_cryptography_gives_plausible_sizes() {
    let opts = MeasureOpts { mls_sizes: vec![6, 8], reps: 1, iterations: 5, seed: 3 };
    let t = measure(&opts, |_| {}).unwrap();
    // A 100-byte plaintext never shrinks; a pre-key message carries three keys more.
    assert!(t.olm.message_bytes > 100 && t.olm.prekey_bytes > t.olm.message_bytes + 64);
    assert!(t.olm.distribution_bytes > t.sender_keys.distribution_bytes);
    assert!(t.sender_keys.message_bytes > 100 + 64, "a signature rides on every message");
    assert_eq!(t.mls.points.iter().map(|p| p.n).collect::<Vec<_>>(), vec![6, 8]);
    for p in &t.mls.points {
        assert!(p.message_bytes > 100 && p.update_bytes > p.message_bytes && p.tree_bytes > 0 && p.welcome_bytes > 0);
        assert!(p.process_us > 0.0 && p.join_us > 0.0);
    }
}

#[test]
fn the_report_command_writes_the_report_the_plots_and_the_benchmarks_section() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("BENCHMARKS.md");
    std::fs::write(&bench, "# benchmarks\n\nearlier sections\n").unwrap();
    let out = dir.path().join("comparison");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_grove-sim"))
            .args(["report", "--sizes", "6,12", "--mls-sizes", "6", "--reps", "1", "--iterations", "5"])
            .args(["--messages", "3", "--out"])
            .arg(&out)
            .arg("--benchmarks")
            .arg(&bench)
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(md.contains("| grove server × MLS |") && md.contains("N=12"));
    assert!(md.contains(" †"), "N=12 is beyond the measured MLS size");
    for f in [
        "message-network-bytes.svg",
        "message-sender-upload.svg",
        "remove-network-bytes.svg",
        "message-last-member.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("grove server"), "{f}");
    }
    // Run twice: the section is replaced, not appended again, and the rest is kept.
    assert!(run().status.success());
    let b = std::fs::read_to_string(&bench).unwrap();
    assert!(b.starts_with("# benchmarks\n\nearlier sections\n"));
    assert_eq!(b.matches("## Hosting × encryption (grove-sim").count(), 1);
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("comparison");
    let o = Command::new(env!("CARGO_BIN_EXE_grove-sim"))
        .args(["report", "--sizes", "2,10", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 3"));
    let o = Command::new(env!("CARGO_BIN_EXE_grove-sim"))
        .args(["report", "--sizes", "6", "--mls-sizes", "6", "--benchmarks"])
        .arg(dir.path().join("missing.md"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--benchmarks"));
    assert!(!out.exists(), "nothing written");
}

#[test]
fn the_benchmarks_section_is_replaced_in_place() {
    let doc = "# B\n\nbefore\n";
    let once = splice_benchmarks(doc, "first\n");
    let twice = splice_benchmarks(&format!("{once}\n## Later section\n"), "second\n");
    assert!(twice.contains("second") && !twice.contains("first"));
    assert!(twice.starts_with("# B\n\nbefore\n") && twice.ends_with("## Later section\n"));
}
