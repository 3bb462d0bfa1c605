//! HTTPS end to end: a server terminating TLS with a certificate from a private CA made here
//! (rcgen), and clients that trust that CA (`--ca-file`), or do not.

use std::path::{Path, PathBuf};

use grove_client::net::{Net, NetConfig};
use grove_client::profile::{ConnectTo, Profile};
use grove_client::push::Link;
use grove_client::RoomStatus;
use grove_client::TransportError;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::push::Follower;
use crate::texts;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { issuer: Issuer::new(params, key), pem: cert.pem() }
    }

    /// Writes the CA's certificate to `dir/<file>`.
    pub fn write_ca(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// Writes a server certificate for 127.0.0.1 and localhost, and its key, to `cert` and `key`.
    pub fn write_server_cert(&self, cert: &Path, key: &Path) {
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    }
}

/// A grove server terminating TLS on 127.0.0.1, with a certificate of a fresh CA.
pub struct TlsWorld {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The CA's certificate, for `--ca-file`.
    pub ca_file: PathBuf,
    pub state: grove_server::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TlsWorld {
    pub async fn start() -> TlsWorld {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("grove test CA");
        let ca_file = ca.write_ca(dir.path(), "ca.pem");
        ca.write_server_cert(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (state, stop, task) = serve(dir.path(), listener).await;
        TlsWorld { url, dir, ca_file, state, stop: Some(stop), task: Some(task) }
    }

    /// Stops the server and starts it again on the same address and data folder.
    pub async fn restart(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind(self.url.trim_start_matches("https://")).await.unwrap();
        let (state, stop, task) = serve(self.dir.path(), listener).await;
        (self.state, self.stop, self.task) = (state, Some(stop), Some(task));
    }

    /// A client trusting this world's CA.
    pub fn net(&self) -> Net {
        Net::new(&NetConfig { ca_file: Some(self.ca_file.clone()), proxy: None }).unwrap()
    }

    pub fn profile_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("profiles").join(name)
    }

    /// A profile whose home is this server, trusting its CA.
    pub async fn user(&self, name: &str) -> Profile {
        Profile::init_with_net(&self.profile_dir(name), &self.url, ConnectTo::none(), self.net()).await.unwrap()
    }
}

type Serving = (grove_server::AppState, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

/// Serves the data folder `dir/server` over TLS with `dir/cert.pem` and `dir/key.pem`.
async fn serve(dir: &Path, listener: tokio::net::TcpListener) -> Serving {
    let mut config = grove_server::Config::default();
    config.server.data_dir = dir.join("server");
    config.limits.user_requests_per_sec = 100_000;
    config.limits.ip_requests_per_sec = 100_000;
    config.tls.cert = Some(dir.join("cert.pem"));
    config.tls.key = Some(dir.join("key.pem"));
    let state = grove_server::open(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(grove_server::run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    (state, stop, task)
}

/// Alice creates a room, invites Bob and Carol by address, they talk, Bob follows it live over
/// the push WebSocket (wss), and Alice removes Carol: all over HTTPS, with addresses, links and
/// invitations keeping their `https://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_create_invite_talk_and_remove_over_https_and_wss() {
    let w = TlsWorld::start().await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut carol = w.user("carol").await;
    // A loopback address would default to http://: the address says https:// itself.
    let bob_address = bob.address().to_string();
    assert!(bob_address.ends_with(&format!("@{}", w.url)), "{bob_address}");

    let room = alice.create_room(&w.url, "garden").await.unwrap();
    assert!(room.link.starts_with("https://"), "{}", room.link);
    alice.invite("garden", &bob_address).await.unwrap();
    alice.invite("garden", &carol.address().to_string()).await.unwrap();
    assert_eq!(bob.sync().await.unwrap().joined, vec![room.link.clone()]);
    assert_eq!(carol.sync().await.unwrap().joined, vec![room.link.clone()]);

    let mut follower = Follower::start(&bob);
    follower.until(&mut bob, "the push WebSocket over wss", |_, links| links.contains(&Link::Live)).await;
    alice.send("garden", "hello over TLS").await.unwrap();
    carol.send("garden", "hi alice").await.unwrap();
    follower.until(&mut bob, "two messages pushed over wss", |p, _| texts(p, "garden").len() >= 2).await;
    assert_eq!(texts(&bob, "garden"), ["hello over TLS", "hi alice"]);
    assert!(follower.links.iter().all(|l| *l == Link::Live), "{:?}", follower.links);

    alice.sync().await.unwrap();
    alice.remove("garden", &carol.user_id()).await.unwrap();
    alice.send("garden", "carol has gone").await.unwrap();
    follower.until(&mut bob, "the removal and the next message", |p, _| texts(p, "garden").len() >= 3).await;
    assert_eq!(texts(&bob, "garden"), ["hello over TLS", "hi alice", "carol has gone"]);
    carol.sync().await.unwrap();
    assert_eq!(carol.room("garden").unwrap().status, RoomStatus::Removed);
    assert_eq!(texts(&carol, "garden"), ["hello over TLS", "hi alice"]);
}

/// The client's requests go over HTTP/2 (ALPN), and the push WebSocket over HTTP/1.1.
#[tokio::test]
async fn https_requests_use_http2_by_alpn() {
    let w = TlsWorld::start().await;
    let resp = w.net().http().unwrap().get(format!("{}/v1/info", w.url)).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.status().is_success());
}

/// A client that does not trust the server's CA is refused, and told about --ca-file.
#[tokio::test]
async fn a_client_without_the_ca_is_refused_with_a_clear_error() {
    let w = TlsWorld::start().await;
    let err = Profile::init(&w.profile_dir("mallory"), &w.url).await.unwrap_err().to_string();
    assert!(err.contains("not signed by a CA this client trusts"), "{err}");
    assert!(err.contains("--ca-file"), "{err}");
    // A client trusting another CA is refused the same way.
    let other = TestCa::new("another CA");
    let other_file = other.write_ca(w.dir.path(), "other.pem");
    let net = Net::new(&NetConfig { ca_file: Some(other_file), proxy: None }).unwrap();
    let err = Profile::init_with_net(&w.profile_dir("mallory"), &w.url, ConnectTo::none(), net).await.unwrap_err();
    assert!(err.to_string().contains("not signed by a CA this client trusts"), "{err}");
}

/// Plain HTTP to the TLS port gets an answer saying to use https://.
#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused_clearly() {
    let w = TlsWorld::start().await;
    let plain = w.url.replace("https://", "http://");
    let err = Profile::init(&w.profile_dir("dave"), &plain).await.unwrap_err().to_string();
    assert!(err.contains("this port speaks HTTPS (TLS) only: use an https:// URL"), "{err}");
}

/// The server's key changes (its key file replaced): the client refuses to sign for the new
/// key, saying how to accept it; once accepted, it works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_server_key_is_refused_until_accepted() {
    let mut w = TlsWorld::start().await;
    let mut alice = w.user("alice").await;
    alice.create_room(&w.url, "garden").await.unwrap();
    let first = grove_wire::UserId(w.state.public_key());
    assert_eq!(alice.known_servers().get(&w.url).unwrap(), Some(first));

    std::fs::write(w.dir.path().join("server").join("server.key"), [0x42u8; 32]).unwrap();
    w.restart().await;
    let new = grove_wire::UserId(w.state.public_key());
    assert_ne!(new, first);

    let mut alice = Profile::open(&w.profile_dir("alice")).unwrap();
    alice.set_net(w.net());
    let err = alice.send("garden", "is it you?").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("grove server trust {} {new}", w.url)), "{text}");
    assert!(text.contains(&first.to_string()), "{text}");
    assert!(matches!(err, grove_client::profile::ClientError::Server(TransportError::KeyChanged { .. })), "{err:?}");
    assert_eq!(alice.outbox_len(None).unwrap(), 1, "nothing was sent; the message waits in the outbox");

    assert_eq!(alice.known_servers().trust(&w.url, &new).unwrap(), Some(first));
    let mut alice = Profile::open(&w.profile_dir("alice")).unwrap();
    alice.set_net(w.net());
    alice.send("garden", "it is").await.unwrap();
    assert_eq!(texts(&alice, "garden"), ["is it you?", "it is"]);
}

/// The certificate files are replaced (a renewal, here by another CA) and reloaded, as SIGHUP
/// does: new connections get the new certificate without a restart; a broken pair is refused
/// and the certificate in use stays.
#[tokio::test]
async fn the_certificate_is_reloaded_without_a_restart() {
    let w = TlsWorld::start().await;
    let mut alice = w.user("alice").await;
    alice.create_room(&w.url, "garden").await.unwrap();

    let renewed = TestCa::new("renewed CA");
    let renewed_file = renewed.write_ca(w.dir.path(), "renewed.pem");
    let (cert, key) = (w.dir.path().join("cert.pem"), w.dir.path().join("key.pem"));
    renewed.write_server_cert(&cert, &key);
    // Not read until reloaded: a fresh client trusting only the old CA still gets in.
    let info = |net: Net| {
        let url = w.url.clone();
        async move { grove_client::Server::with_net(&url, key_of(1), net, None).info().await }
    };
    info(w.net()).await.unwrap();

    assert!(w.state.reload_tls().unwrap());
    let err = info(w.net()).await.unwrap_err().to_string();
    assert!(err.contains("not signed by a CA this client trusts"), "{err}");
    let renewed_net = Net::new(&NetConfig { ca_file: Some(renewed_file), proxy: None }).unwrap();
    info(renewed_net.clone()).await.unwrap();

    // A key that does not match the certificate: refused, the renewed certificate stays.
    std::fs::write(&key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let err = w.state.reload_tls().unwrap_err().to_string();
    assert!(err.contains("cannot be used together"), "{err}");
    info(renewed_net.clone()).await.unwrap();

    // Alice's profile, told about the new CA, goes on (the server's key did not change).
    let mut alice = Profile::open(&w.profile_dir("alice")).unwrap();
    alice.set_net(renewed_net);
    alice.send("garden", "renewed").await.unwrap();
}

fn key_of(b: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[b; 32])
}
