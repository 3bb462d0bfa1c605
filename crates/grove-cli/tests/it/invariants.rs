//! Invariants of the workspace that are absences, checked by reading its files.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// grove-wire and grove-proto do no I/O: no async runtime, sockets, database or HTTP crates,
/// and their code never reads the clock or the OS RNG.
#[test]
fn the_protocol_core_does_no_io() {
    for krate in ["grove-wire", "grove-proto"] {
        let dir = workspace().join("crates").join(krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = manifest.split("[dev-dependencies]").next().unwrap();
        for banned in ["tokio", "rusqlite", "axum", "reqwest", "hyper", "postgres"] {
            assert!(!deps.contains(banned), "{krate} depends on {banned}");
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            let text = code_only(&std::fs::read_to_string(&f).unwrap());
            for banned in ["SystemTime::now", "Instant::now", "OsRng", "thread_rng", "std::net", "std::fs"] {
                assert!(!text.contains(banned), "{} uses {banned}", f.display());
            }
        }
    }
}

/// The source without comment lines (docs may name what the code must not do).
fn code_only(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// SQL lives only in the store crates and in the client's own store module.
#[test]
fn sql_lives_only_in_the_store_crates() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    for f in files {
        let path = f.to_string_lossy().replace('\\', "/");
        if path.contains("/grove-store-")
            || path.ends_with("/grove-client/src/store.rs")
            || path.contains("/grove-bench/")
            || path.contains("/tests/")
        {
            continue;
        }
        let text = code_only(&std::fs::read_to_string(&f).unwrap());
        for banned in ["rusqlite", "INSERT INTO", "SELECT "] {
            assert!(!text.contains(banned), "{path} contains {banned:?}");
        }
    }
}

/// The server never holds a group secret: it uses mls-rs only through grove-proto's hub
/// (the public group state), never a `Client` or `Group`.
#[test]
fn the_server_holds_no_group_secret() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/grove-server/src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("mls_rs::"), "{} uses mls-rs directly", f.display());
    }
    let manifest = std::fs::read_to_string(workspace().join("crates/grove-server/Cargo.toml")).unwrap();
    let deps = manifest.split("[dev-dependencies]").next().unwrap();
    assert!(!deps.contains("mls-rs"), "grove-server depends on mls-rs outside its tests");
}
