//! The house rules, checked by reading the workspace's files (rust-analyzer's `tidy.rs` is the
//! model). Each rule says why; exceptions are listed with their reason.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for e in entries {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every crate folder under `crates/`.
fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// The Rust files of a crate's `src/` (what ships), with paths relative to the workspace.
fn src_files(krate: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates").join(krate).join("src"), &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(workspace()).unwrap_or(&f).to_string_lossy().replace('\\', "/");
            (rel, read(&f))
        })
        .collect()
}

/// The source without comment lines (docs may name what the code must not do).
fn code_only(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The source up to its unit tests (`#[cfg(test)]` at the start of a line).
fn before_tests(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// A manifest's dependencies, without its dev-dependencies.
fn normal_dependencies(manifest: &str) -> &str {
    manifest.split("[dev-dependencies]").next().unwrap_or(manifest)
}

/// grove-wire and grove-proto do no I/O: no async runtime, sockets, database or HTTP crates,
/// and their code never reads the clock or the OS RNG.
#[test]
fn the_protocol_core_does_no_io() {
    for krate in ["grove-wire", "grove-proto"] {
        let manifest = read(&workspace().join("crates").join(krate).join("Cargo.toml"));
        for banned in ["tokio", "rusqlite", "axum", "reqwest", "hyper", "postgres"] {
            assert!(!normal_dependencies(&manifest).contains(banned), "{krate} depends on {banned}");
        }
        for (path, text) in src_files(krate) {
            let code = code_only(&text);
            for banned in ["SystemTime::now", "Instant::now", "OsRng", "thread_rng", "std::net", "std::fs"] {
                assert!(!code.contains(banned), "{path} uses {banned}");
            }
        }
    }
}

/// SQL lives only in the store crates and in the client's own store module (and in the
/// benchmarks, which drive the stores directly).
#[test]
fn sql_lives_only_in_the_store_crates() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    for f in files {
        let path = f.to_string_lossy().replace('\\', "/");
        if path.contains("/grove-store-")
            || path.ends_with("/grove-client/src/store.rs")
            || path.contains("/grove-client/src/store/")
            || path.contains("/grove-bench/")
            || path.contains("/grove-tidy/")
            || path.contains("/tests/")
        {
            continue;
        }
        let code = code_only(&read(&f));
        for banned in ["rusqlite", "INSERT INTO", "SELECT "] {
            assert!(!code.contains(banned), "{path} contains {banned:?}");
        }
    }
}

/// The server never holds a group secret: it uses mls-rs only through grove-proto's hub (the
/// public group state), never a `Client` or `Group`, and has no mls-rs dependency outside its
/// tests.
#[test]
fn the_server_holds_no_group_secret() {
    for (path, text) in src_files("grove-server") {
        assert!(!text.contains("mls_rs::"), "{path} uses mls-rs directly");
    }
    let manifest = read(&workspace().join("crates/grove-server/Cargo.toml"));
    assert!(!normal_dependencies(&manifest).contains("mls-rs"), "grove-server depends on mls-rs outside its tests");
}

/// Every module opens with a `//!` doc saying what it is for.
#[test]
fn every_module_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for krate in crates() {
        for (path, text) in src_files(&krate) {
            if !text.trim_start().starts_with("//!") {
                missing.push(path);
            }
        }
    }
    assert!(missing.is_empty(), "modules without a //! doc: {missing:#?}");
}

/// No plain-HTTP URL is written into shipped code (servers are reached over what the user
/// configures; tests and docs may use loopback URLs). Exceptions, with their reason:
const HTTP_ALLOWED: &[(&str, &str)] = &[
    // The client parses and checks the scheme of the URLs a user gives (owned by the client's
    // rework; revisit there).
    ("crates/grove-client/src/", "parses user-given URLs"),
    // `grove demo` serves and talks to a server it starts on 127.0.0.1.
    ("crates/grove-cli/src/demo.rs", "loopback demo server"),
    // The load generator starts its servers on 127.0.0.1 and talks to them.
    ("crates/grove-bench/src/", "loopback benchmark servers"),
];

#[test]
fn no_http_literal_outside_tests_and_docs() {
    let mut found = Vec::new();
    for krate in crates() {
        for (path, text) in src_files(&krate) {
            // Unit-test modules kept in files of their own (`tests.rs`, `*_tests.rs`).
            let test_module = path.ends_with("/tests.rs") || path.ends_with("_tests.rs");
            if test_module || HTTP_ALLOWED.iter().any(|(prefix, _)| path.starts_with(prefix)) {
                continue;
            }
            for line in code_only(before_tests(&text)).lines() {
                if line.contains("\"http://") {
                    found.push(format!("{path}: {}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "http:// literals in shipped code: {found:#?}");
}

/// Every crate appears in ARCHITECTURE.md's code map (and in the workspace manifest).
#[test]
fn every_crate_is_in_the_code_map() {
    let arch = read(&workspace().join("ARCHITECTURE.md"));
    let map = arch.split("## Code map").nth(1).and_then(|s| s.split("\n## ").next()).expect("a Code map section");
    let manifest = read(&workspace().join("Cargo.toml"));
    for krate in crates() {
        assert!(map.contains(&format!("`crates/{krate}`")), "{krate} is missing from ARCHITECTURE.md's code map");
        assert!(manifest.contains(&format!("\"crates/{krate}\"")), "{krate} is not a workspace member");
    }
}

/// Library crates keep `pub` honest and do not unwrap, expect or panic outside their tests:
/// the workspace manifest sets these lints (`[workspace.lints]`), every crate inherits them, and
/// clippy.toml lets unit tests unwrap.
const LINTS: [&str; 4] =
    ["unreachable_pub = \"warn\"", "unwrap_used = \"deny\"", "expect_used = \"deny\"", "panic = \"deny\""];

/// Crates that relax [`LINTS`] in their crate roots (`#![allow(...)]` in source overrides the
/// workspace level), with the reason.
const LINTS_EXEMPT: &[(&str, &str)] = &[
    // A binary: its modules' `pub` items are the binary's own, and its errors are anyhow's.
    ("grove-cli", "the binary"),
    // Tools (anyhow, benchmarks, the simulator's report): a failed run is a failed measurement.
    ("grove-bench", "tool"),
    ("grove-sim", "tool"),
];

/// The text of a crate's roots: `src/lib.rs` and `src/main.rs`, those it has.
fn crate_roots(krate: &str) -> Vec<(String, String)> {
    let dir = workspace().join("crates").join(krate).join("src");
    ["lib.rs", "main.rs"]
        .iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| (format!("crates/{krate}/src/{f}"), read(&dir.join(f))))
        .collect()
}

#[test]
fn every_crate_inherits_the_workspace_lints_and_only_tools_relax_them() {
    let manifest = read(&workspace().join("Cargo.toml"));
    let lints = manifest.split("[workspace.lints.").skip(1).collect::<Vec<_>>().join("\n");
    for lint in LINTS {
        assert!(lints.lines().any(|l| l.trim() == lint), "the workspace manifest lacks `{lint}` in [workspace.lints]");
    }
    for krate in crates() {
        let toml = read(&workspace().join("crates").join(&krate).join("Cargo.toml"));
        assert!(
            toml.contains("[lints]\nworkspace = true"),
            "{krate}'s Cargo.toml does not inherit the workspace lints"
        );
        let exempt = LINTS_EXEMPT.iter().any(|(k, _)| *k == krate);
        for (path, text) in crate_roots(&krate) {
            let relaxes = text.lines().any(|l| {
                l.starts_with("#![allow(")
                    && ["unreachable_pub", "clippy::unwrap_used", "clippy::expect_used", "clippy::panic"]
                        .iter()
                        .any(|n| l.contains(n))
            });
            assert!(!relaxes || exempt, "{path} relaxes the workspace lints, but {krate} is not in LINTS_EXEMPT");
            assert!(
                !text.contains("#![deny(clippy::unwrap_used") && !text.contains("#![warn(unreachable_pub)]"),
                "{path} repeats a workspace lint: the workspace manifest sets it"
            );
        }
    }
}
