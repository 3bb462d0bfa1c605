//! The blob store streams: uploading and downloading a 200 MiB file through a real server (a
//! socket on 127.0.0.1, SQLite, blobs on the local filesystem) does not grow the process's
//! resident memory by anything like the file's size.
//!
//! Its own test binary, so that no other test allocates in the process while its memory is
//! measured. The client is a bare HTTP/1.1 writer over a `TcpStream` that sends the same
//! 1 MiB buffer over and over, so the client holds no more than the server should.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use grove_server::{AppState, Config};
use grove_wire::auth::{sha256_hex, sign_request_prehashed, HEADER_CONTENT_SHA256};
use grove_wire::auth::{HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
const FILE: u64 = 200 * MIB;
const CHUNK: usize = MIB as usize;
const PART: u64 = 8 * MIB;

/// The process's resident memory, kB (Linux).
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS kB")
}

struct Client {
    addr: std::net::SocketAddr,
    key: SigningKey,
    server_key: [u8; 32],
    nonce: u64,
}

/// A response: status, headers (lowercase names) and, unless streamed away, the body.
struct Answer {
    status: u16,
    body: Vec<u8>,
    body_len: u64,
    body_sha256: [u8; 32],
}

impl Client {
    /// Sends one signed request whose body is `body` repeated as `chunks` (declared by its
    /// SHA-256), and reads the answer, hashing the body as it streams in.
    async fn send(&mut self, method: &str, path: &str, chunks: &[&[u8]], declare_hash: bool) -> Answer {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        for c in chunks {
            hasher.update(c);
            len += c.len() as u64;
        }
        let hash: [u8; 32] = hasher.finalize().into();
        self.nonce += 1;
        let nonce = format!("rss-test-nonce-{:08}", self.nonce);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let h = sign_request_prehashed(&self.key, &self.server_key, method, path, now, &nonce, &hash);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {len}\r\n\
             {HEADER_KEY}: {}\r\n{HEADER_TIMESTAMP}: {}\r\n{HEADER_NONCE}: {}\r\n{HEADER_SIGNATURE}: {}\r\n",
            h.key, h.timestamp, h.nonce, h.signature
        );
        if declare_hash {
            head.push_str(&format!("{HEADER_CONTENT_SHA256}: {}\r\n", sha256_hex(&hash)));
        } else {
            head.push_str("content-type: application/json\r\n");
        }
        head.push_str("\r\n");
        let mut sock = TcpStream::connect(self.addr).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        for c in chunks {
            sock.write_all(c).await.unwrap();
        }
        // Read the head, then stream the body through a hasher.
        let mut buf = vec![0u8; 64 * 1024];
        let mut head = Vec::new();
        let body_start = loop {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the answer's head");
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_string();
        let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut hasher = Sha256::new();
        let mut body = Vec::new();
        let mut body_len = (head.len() - body_start) as u64;
        hasher.update(&head[body_start..]);
        let keep = |body: &mut Vec<u8>, bytes: &[u8]| {
            if body.len() < 64 * 1024 {
                body.extend_from_slice(bytes);
            }
        };
        keep(&mut body, &head[body_start..]);
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            body_len += n as u64;
            keep(&mut body, &buf[..n]);
        }
        assert!(text.to_ascii_lowercase().contains(&format!("content-length: {body_len}")), "{text}");
        Answer { status, body, body_len, body_sha256: hasher.finalize().into() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_goes_up_and_down_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.files.max_file_bytes = FILE;
    config.files.part_bytes = PART;
    config.files.user_quota_bytes = 2 * FILE;
    config.files.room_quota_bytes = 2 * FILE;
    config.limits.user_requests_per_sec = 10_000;
    let store = grove_store_sqlite::SqliteStore::open(&dir.path().join("grove.db"), Default::default()).unwrap();
    let state = AppState::new(config, Arc::new(store), SigningKey::from_bytes(&[9; 32]));
    let server_key = state.public_key();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grove_server::run(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let mut alice = Client { addr, key: SigningKey::from_bytes(&[1; 32]), server_key, nonce: 0 };

    let room = br#"{"name":"big","mode":"sender-keys"}"#;
    assert_eq!(alice.send("POST", "/v1/rooms", &[room], false).await.status, 201);
    let blob_len = grove_proto::attachment::ciphertext_len(FILE);
    assert!(blob_len > FILE);

    // The file's bytes: one 1 MiB buffer, repeated; the blob is what the encryptor would
    // output in length, and the server cannot tell (nor does it look).
    let mut unit = vec![0u8; CHUNK];
    for (i, b) in unit.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    let unit = unit;
    let part_chunks = |len: u64| -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = vec![&unit[..]; (len / CHUNK as u64) as usize];
        let rest = (len % CHUNK as u64) as usize;
        if rest > 0 {
            v.push(&unit[..rest]);
        }
        v
    };

    // Warm up (threads, pools, the blob folder) with a small file, then measure.
    let small_len = grove_proto::attachment::ciphertext_len(0);
    let small = format!(r#"{{"size":{small_len}}}"#);
    let created = alice.send("POST", "/v1/rooms/big/files", &[small.as_bytes()], false).await;
    let id: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    let id = id["blob"].as_str().unwrap().to_string();
    let ok =
        alice.send("PUT", &format!("/v1/rooms/big/files/{id}?offset=0"), &[&unit[..small_len as usize]], true).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(alice.send("GET", &format!("/v1/rooms/big/files/{id}"), &[], false).await.body_len, small_len);

    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let baseline = rss_kb();
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let created =
        alice.send("POST", "/v1/rooms/big/files", &[format!(r#"{{"size":{blob_len}}}"#).as_bytes()], false).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let v: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    let id = v["blob"].as_str().unwrap().to_string();
    let mut expected = Sha256::new();
    let mut offset = 0;
    while offset < blob_len {
        let len = PART.min(blob_len - offset);
        let chunks = part_chunks(len);
        for c in &chunks {
            expected.update(c);
        }
        let a = alice.send("PUT", &format!("/v1/rooms/big/files/{id}?offset={offset}"), &chunks, true).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        offset += len;
    }
    let uploaded = started.elapsed();
    let down = alice.send("GET", &format!("/v1/rooms/big/files/{id}"), &[], false).await;
    let total = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(down.status, 200);
    assert_eq!(down.body_len, blob_len);
    assert_eq!(down.body_sha256, <[u8; 32]>::from(expected.finalize()), "the blob comes back intact");

    let growth_mib = peak.load(Ordering::Relaxed).saturating_sub(baseline) as f64 / 1024.0;
    eprintln!(
        "200 MiB: upload {:.1}s, download {:.1}s, RSS baseline {} MiB, peak growth {growth_mib:.1} MiB",
        uploaded.as_secs_f64(),
        (total - uploaded).as_secs_f64(),
        baseline / 1024
    );
    assert!(growth_mib < 24.0, "RSS grew by {growth_mib:.1} MiB moving a 200 MiB file");
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
