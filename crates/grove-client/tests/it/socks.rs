//! `--proxy socks5h://`: a SOCKS5 proxy started by the test records every connection it
//! forwards; a forwarder in front of the server records the address of every connection that
//! reaches it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grove_client::profile::{ClientError, ConnectTo, InitOptions, Profile};
use grove_client::proxy::Proxy;
use grove_client::push::{Feed, PushClient};
use grove_client::{Server, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{texts, World};

/// A name nothing resolves but the test's proxy.
const HIDDEN: &str = "grove-hidden.invalid";

/// Every connection a listener accepted (peer addresses); its tasks, to stop it whole.
#[derive(Default, Clone)]
struct Recorder {
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Recorder {
    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }

    /// Stops accepting and cuts every connection.
    fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// A TCP forwarder to `upstream` that records who connects (the server's view of its peers).
async fn forwarder(upstream: SocketAddr) -> (SocketAddr, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = Recorder::default();
    let r = rec.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((mut down, peer)) = listener.accept().await else { return };
            r.peers.lock().unwrap().push(peer);
            let conn = tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
            r.tasks.lock().unwrap().push(conn);
        }
    });
    rec.tasks.lock().unwrap().push(accept);
    (addr, rec)
}

/// What the SOCKS5 proxy was asked to reach, and from which local addresses it connected.
#[derive(Default, Clone)]
struct Socks {
    rec: Recorder,
    /// `CONNECT` targets: (host as sent, whether it was a name, port).
    targets: Arc<Mutex<Vec<(String, bool, u16)>>>,
    /// The local address of each outgoing connection it made.
    outbound: Arc<Mutex<Vec<SocketAddr>>>,
}

/// A minimal SOCKS5 proxy (no authentication, CONNECT only) that resolves [`HIDDEN`] to
/// 127.0.0.1 and nothing else by name.
async fn socks5() -> (Proxy, Socks) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::parse(&format!("socks5h://{}", listener.local_addr().unwrap())).unwrap();
    let socks = Socks::default();
    let s = socks.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((down, _)) = listener.accept().await else { return };
            let s2 = s.clone();
            let conn = tokio::spawn(async move {
                let _ = socks_conn(down, s2).await;
            });
            s.rec.tasks.lock().unwrap().push(conn);
        }
    });
    socks.rec.tasks.lock().unwrap().push(accept);
    (proxy, socks)
}

async fn socks_conn(mut down: TcpStream, s: Socks) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    down.read_exact(&mut head).await?;
    let mut methods = vec![0u8; head[1] as usize];
    down.read_exact(&mut methods).await?;
    assert_eq!(head[0], 5, "a SOCKS5 greeting");
    down.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    down.read_exact(&mut req).await?;
    assert_eq!(&req[..2], &[5, 1], "a CONNECT request");
    let (host, by_name) = match req[3] {
        1 => {
            let mut ip = [0u8; 4];
            down.read_exact(&mut ip).await?;
            (std::net::Ipv4Addr::from(ip).to_string(), false)
        }
        3 => {
            let mut len = [0u8; 1];
            down.read_exact(&mut len).await?;
            let mut name = vec![0u8; len[0] as usize];
            down.read_exact(&mut name).await?;
            (String::from_utf8(name).unwrap(), true)
        }
        other => panic!("address type {other}"),
    };
    let mut port = [0u8; 2];
    down.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    s.targets.lock().unwrap().push((host.clone(), by_name, port));
    let ip = if host == HIDDEN { "127.0.0.1".to_string() } else { host };
    let Ok(mut up) = TcpStream::connect((ip.as_str(), port)).await else {
        down.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    };
    s.outbound.lock().unwrap().push(up.local_addr()?);
    down.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut down, &mut up).await?;
    Ok(())
}

async fn next_entries(rx: &mut tokio::sync::mpsc::Receiver<Feed>, room: &str) -> Vec<u64> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a push in time") {
            Some(Feed::Entries { room: r, entries, .. }) if r == room => {
                return entries.iter().map(|e| e.seq).collect()
            }
            Some(_) => continue,
            None => panic!("the push client stopped"),
        }
    }
}

/// Alice goes through a SOCKS5 proxy; Bob does not. Every connection that reaches Alice's
/// server comes from the proxy: her init, room, invitation, messages and her push WebSocket.
/// With the proxy stopped, her commands fail (her message waits in the outbox) and nothing of
/// hers reaches the server: no direct connection in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_alice_sends_goes_through_her_proxy_and_nothing_when_it_is_down() {
    let w = World::start().await;
    let server: SocketAddr = w.url.trim_start_matches("http://").parse().unwrap();
    let (front, seen) = forwarder(server).await;
    let public = format!("http://{front}");
    let (proxy, socks) = socks5().await;

    let options = InitOptions { proxy: Some(proxy.clone()), ..InitOptions::default() };
    let mut alice = Profile::create(&w.profile_dir("alice"), &public, options).await.unwrap();
    let mut direct = ConnectTo::none();
    direct.add(&public, &w.url);
    let mut bob = Profile::init_with(&w.profile_dir("bob"), &public, direct).await.unwrap();

    alice.create_room(&public, "burrow").await.unwrap();
    alice.invite("burrow", &bob.address().to_string()).await.unwrap();
    bob.sync().await.unwrap();
    bob.send("burrow", "can you hear me through the proxy?").await.unwrap();
    alice.sync().await.unwrap();
    alice.send("burrow", "loud and clear").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "burrow"), ["can you hear me through the proxy?", "loud and clear"]);

    // Her push WebSocket too.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let mut push = PushClient::new(tx);
    alice.sync().await.unwrap();
    let cursor = alice.room("burrow").unwrap().cursor;
    let before_push = socks.targets.lock().unwrap().len();
    push.follow(&public, alice.server_for(&public), vec![("burrow".into(), cursor)], None);
    let seq = bob.send("burrow", "pushed to you").await.unwrap();
    assert_eq!(next_entries(&mut rx, "burrow").await, [seq]);
    assert!(socks.targets.lock().unwrap().len() > before_push, "the WebSocket went through the proxy");

    let peers = seen.peers();
    let outbound = socks.outbound.lock().unwrap().clone();
    assert!(peers.len() >= 2, "{peers:?}");
    for p in &peers {
        assert!(outbound.contains(p), "{p} reached the server without the proxy (proxy's: {outbound:?})");
    }
    for (host, _, port) in socks.targets.lock().unwrap().iter() {
        assert_eq!((host.as_str(), *port), ("127.0.0.1", front.port()), "the proxy was asked for the server only");
    }

    // The proxy goes down: every connection through it is cut, and nothing new reaches the
    // server from Alice.
    socks.rec.stop();
    drop(push);
    let reached = seen.peers().len();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let mut push = PushClient::new(tx);
    push.follow(&public, alice.server_for(&public), vec![("burrow".into(), seq)], None);
    assert!(matches!(alice.sync().await, Err(ClientError::Server(TransportError::Unreachable { .. }))));
    assert!(matches!(alice.send("burrow", "anyone?").await, Err(ClientError::Queued { .. })));
    let down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Feed::Link { link: grove_client::push::Link::Down { .. }, .. }) = rx.recv().await {
                return;
            }
        }
    });
    down.await.expect("the push client reports its link down");
    assert_eq!(seen.peers().len(), reached, "a connection reached the server without the proxy");
    assert_eq!(alice.outbox_len(Some("burrow")).unwrap(), 1);
}

/// Names are resolved by the proxy: a server under a name only the proxy knows is reached
/// through it, and the proxy is asked for the name, not an address. Directly, the name does
/// not resolve at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_only_the_proxy_knows_is_resolved_by_the_proxy() {
    let w = World::start().await;
    let port = w.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let (proxy, socks) = socks5().await;
    let url = format!("http://{HIDDEN}:{port}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let info = Server::with_proxy(&url, key.clone(), Some(proxy)).info().await.unwrap();
    assert!(!info.public_key.is_empty());
    assert_eq!(socks.targets.lock().unwrap().clone(), [(HIDDEN.to_string(), true, port)]);
    assert!(Server::new(&url, key).info().await.is_err(), "the name resolves without the proxy");
}
