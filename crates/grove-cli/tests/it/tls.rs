//! `grove serve --tls-cert/--tls-key` as a process, reached by `grove --ca-file`: a renewed
//! certificate taken on SIGHUP without a restart, plain HTTP to the TLS port refused clearly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::client::{grove, ok};
use crate::serve::{spawn_serve, Running, GROVE};

/// Writes the certificate of a fresh CA named `name` to `ca`, and a certificate it signed for 127.0.0.1 with its
/// key to `cert` and `key`.
fn certificate(name: &str, ca: &Path, cert: &Path, key: &Path) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(ca, params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(cert, leaf.pem()).unwrap();
    std::fs::write(key, leaf_key.serialize_pem()).unwrap();
}

/// Starts `grove serve` terminating TLS, and waits until it says where it listens.
fn start_tls(data: &Path, cert: &Path, key: &Path) -> Running {
    std::fs::create_dir_all(data).unwrap();
    let mut serve = Command::new(GROVE);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
    let (child, base, log) = spawn_serve(&mut serve, "info");
    assert!(base.starts_with("https://"), "grove listens over https: {base}");
    Running { child, base, server_key: [0; 32], log }
}

fn wait_for_log(server: &Running, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log.lock().unwrap().contains(what) {
        assert!(Instant::now() < deadline, "the server never logged {what:?}:\n{}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alice talks to a TLS server through `grove --ca-file`; the operator renews the certificate
/// (another CA here, so the switch is visible) and sends SIGHUP: the running server serves the
/// new one, Alice goes on with the new CA file, the old CA no longer gets in. Plain HTTP to the
/// port is told to use https://.
#[test]
fn grove_serve_terminates_tls_and_takes_a_renewed_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    certificate("grove test CA", &ca, &cert, &key);
    let server = start_tls(&dir.path().join("server"), &cert, &key);
    let home = dir.path().join("home");
    let url = server.base.clone();
    let ca_arg = ca.to_str().unwrap();

    let address = ok(grove(&home, "alice", &["--ca-file", ca_arg, "init", "--home", &url]));
    assert!(address.trim().ends_with(&format!("@{url}")), "the address keeps https://: {address}");
    let link = ok(grove(&home, "alice", &["--ca-file", ca_arg, "room", "create", "garden"]));
    assert!(link.starts_with("https://"), "{link}");
    ok(grove(&home, "alice", &["--ca-file", ca_arg, "send", "garden", "before the renewal"]));
    let known = ok(grove(&home, "alice", &["server", "list"]));
    assert!(known.starts_with(&format!("{url} ")), "{known}");

    // Without the CA: refused, and told what to do.
    let out = grove(&home, "bob", &["init", "--home", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--ca-file"), "{err}");
    // Plain HTTP to the TLS port.
    let out = grove(&home, "bob", &["init", "--home", &url.replace("https://", "http://")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("this port speaks HTTPS"), "{err}");

    let renewed = dir.path().join("renewed-ca.pem");
    certificate("renewed CA", &renewed, &cert, &key);
    let kill = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    wait_for_log(&server, "TLS certificate reloaded");

    let out = grove(&home, "alice", &["--ca-file", ca_arg, "send", "garden", "old CA"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not signed by a CA this client trusts"), "{err}");
    let renewed_arg = renewed.to_str().unwrap();
    ok(grove(&home, "alice", &["--ca-file", renewed_arg, "send", "garden", "after the renewal"]));
    let read = ok(grove(&home, "alice", &["--ca-file", renewed_arg, "read", "garden", "--json"]));
    let texts: Vec<String> = crate::client::texts(&read).into_iter().map(|(_, t)| t).collect();
    assert!(texts.contains(&"before the renewal".to_string()) && texts.contains(&"after the renewal".to_string()));
    assert!(!server.log.lock().unwrap().contains("grove stopped"), "the server was not restarted");
}
