//! Connections on a real socket: a client that is slow or silent is let go after the
//! configured timeouts, and one address cannot hold every connection the server has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_server::{AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::*;

/// A server on 127.0.0.1 with `config`; it runs until the test ends.
async fn start(config: Config) -> SocketAddr {
    let state = AppState::new(
        config,
        Arc::new(grove_store::MemoryStore::new()),
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grove_server::run(listener, state, std::future::pending()));
    addr
}

/// Short timeouts, so the tests take a second or two.
fn quick() -> Config {
    let mut c = test_config();
    c.connections.header_timeout_secs = 1;
    c.connections.body_timeout_secs = 1;
    c
}

/// Reads until the server closes the connection (or resets it); answers what it sent and how
/// long that took. Fails the test if the connection is still open after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open for {limit:?}");
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

/// A connection from a given local address (all of 127.0.0.0/8 is the loopback).
async fn connect_from(local: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout() {
    let addr = start(quick()).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, took) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the timeout");
}

#[tokio::test]
async fn a_slowloris_client_sending_a_header_line_now_and_then_is_cut_off() {
    let addr = start(quick()).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: grove\r\n").await.unwrap();
    let started = Instant::now();
    // One more header line every 200 ms, never the blank line that ends the headers.
    let mut closed = false;
    for i in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(format!("x-slow-{i}: 1\r\n").as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "still open after {:?} of header lines", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "closed only after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let addr = start(quick()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /healthz HTTP/1.1\r\nhost: grove\r\n\r\n").await.unwrap();
    let (answer, took) = until_closed(&mut client, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}: keep-alive should last the timeout");
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_answered_408_and_the_connection_closed() {
    let addr = start(quick()).await;
    let alice = User::new(1);
    let server = Server::new();
    let body = vec![b' '; 1000];
    let req = alice.request(&server, axum::http::Method::POST, "/v1/rooms", body);
    let mut head = String::from("POST /v1/rooms HTTP/1.1\r\nhost: grove\r\ncontent-length: 1000\r\n");
    for (name, value) in req.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for _ in 0..30 {
        if slow.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "after {:?}: {answer:?}", started.elapsed());
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered only after {:?}", started.elapsed());
    until_closed(&mut slow, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn healthz_answers_while_one_address_holds_many_idle_connections() {
    let mut config = test_config();
    config.server.max_connections = 64;
    config.connections.max_per_ip = 16;
    let addr = start(config).await;
    // Mallory opens 200 connections from 127.0.0.1 and sends nothing on any of them.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(connect_from([127, 0, 0, 1], addr).await);
    }
    // Everything past the address's share is closed at once.
    let mut closed = 0;
    for stream in &mut idle {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert!(closed >= 200 - 16, "only {closed} of 200 connections from one address were closed");
    // Another client still gets an answer at once.
    let started = Instant::now();
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    other.write_all(b"GET /healthz HTTP/1.1\r\nhost: grove\r\nconnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "healthz took {:?}", started.elapsed());
    drop(idle);
}

#[tokio::test]
async fn a_long_poll_outlasts_the_header_timeout() {
    let addr = start(quick()).await;
    let alice = User::new(1);
    let server_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let path = "/v1/mailbox?after=0&wait=3";
    let h = grove_wire::auth::sign_request(&alice.key, &server_key, "GET", path, now, &fresh_nonce(), b"");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: grove\r\nconnection: close\r\nx-grove-key: {}\r\nx-grove-timestamp: {}\r\n\
         x-grove-nonce: {}\r\nx-grove-signature: {}\r\n\r\n",
        h.key, h.timestamp, h.nonce, h.signature
    );
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut client, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took >= Duration::from_millis(2_900), "the long-poll ended after {took:?}, before its wait");
}
