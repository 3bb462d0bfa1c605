//! Encrypted attachments on an S3-compatible store (`files.store = "s3://BUCKET/PREFIX"`):
//! parts, a dropped connection and its resume, Range downloads, quotas, purged blobs gone from
//! the bucket, two instances over one PostgreSQL database and one bucket, and a bucket that
//! cannot be used stopping the start.
//!
//! They need an S3-compatible server at the URL in `GROVE_TEST_S3` (`.ci/run` starts moto's
//! and sets it, with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`); each test makes its own
//! bucket with an unsigned `PUT /BUCKET`, which moto takes. Without `GROVE_TEST_S3` they print
//! why and pass without checking anything.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::TryStreamExt;
use grove_proto::attachment;
use grove_server::Config;
use grove_store_postgres::PostgresStore;
use object_store::ObjectStore;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::files::{
    encrypted_file, get_raw, held_body, part_request, put_part, ranges_are_served, reference, room_with_bob, PART,
};
use crate::harness::*;
use crate::multi_instance::TestDb;

/// The S3 server's URL, or `None` (after saying why) when the tests cannot run here.
fn s3_endpoint() -> Option<String> {
    let Some(url) = std::env::var("GROVE_TEST_S3").ok().filter(|u| !u.trim().is_empty()) else {
        eprintln!(
            "skipped: GROVE_TEST_S3 is not set (an S3-compatible server's URL; .ci/run starts moto's and sets it)"
        );
        return None;
    };
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            std::env::var(var).is_ok_and(|v| !v.is_empty()),
            "GROVE_TEST_S3 is set: set {var} too (any value for moto)"
        );
    }
    Some(url.trim_end_matches('/').to_string())
}

/// A new, empty bucket on the test server.
async fn new_bucket(endpoint: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bucket = format!("grove-test-{}-{n}-{nanos:x}", std::process::id());
    let r = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.expect("the S3 server answers");
    assert!(r.status().is_success(), "cannot make bucket {bucket}: {}", r.status());
    bucket
}

/// A config keeping blobs in `bucket` under `prefix` on `endpoint`, with 64 KiB parts.
fn s3_config(endpoint: &str, bucket: &str, prefix: &str) -> Config {
    let mut c = test_config();
    c.files.store = format!("s3://{bucket}/{prefix}");
    c.files.s3.endpoint = endpoint.to_string();
    c.files.s3.allow_http = endpoint.starts_with("http:");
    c.files.part_bytes = PART;
    c
}

/// The objects under the config's prefix, by key, with their sizes.
async fn objects_in(c: &Config) -> Vec<(String, u64)> {
    let store = grove_server::objects::open(&c.files, std::path::Path::new("/nonexistent")).unwrap();
    let mut all: Vec<(String, u64)> =
        store.list(None).map_ok(|m| (m.location.to_string(), m.size)).try_collect().await.expect("the bucket lists");
    all.sort();
    all
}

async fn read_objects(c: &Config) -> Vec<Vec<u8>> {
    let store = grove_server::objects::open(&c.files, std::path::Path::new("/nonexistent")).unwrap();
    let mut out = Vec::new();
    for (key, _) in objects_in(c).await {
        let got = object_store::ObjectStoreExt::get(store.as_ref(), &key.as_str().into()).await.unwrap();
        out.push(got.bytes().await.unwrap().to_vec());
    }
    out
}

/// Part `i` of `blob`.
fn part(blob: &[u8], i: usize) -> &[u8] {
    &blob[i * PART as usize..((i + 1) * PART as usize).min(blob.len())]
}

/// Sends part `i`'s first 30,000 bytes, then the connection fails.
async fn cut_part(s: &Server, user: &User, id: &str, blob: &[u8], i: usize) -> Resp {
    let half = part(blob, i)[..30_000].to_vec();
    let cut = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
        Err(std::io::Error::other("connection reset")),
    ]);
    let path = format!("/v1/rooms/r/files/{id}?offset={}", i as u64 * PART);
    s.call(part_request(s, user, &path, Body::from_stream(cut), Sha256::digest(part(blob, i)).into())).await
}

#[tokio::test]
async fn s3_blobs_upload_in_parts_resume_serve_ranges_keep_quotas_and_are_deleted() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = new_bucket(&endpoint).await;
    let mut c = s3_config(&endpoint, &bucket, "grove/blobs");
    let (plain, blob, done) = encrypted_file(300_000, 11);
    c.files.user_quota_bytes = blob.len() as u64 + 1000;
    c.files.retention_secs = 3600;
    let s = Server::with_config(c.clone());
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let parts = blob.len().div_ceil(PART as usize);
    assert!(parts >= 4, "several parts");

    let created = alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let id = created.ok()["blob"].as_str().unwrap().to_string();
    assert_eq!(put_part(&s, &alice, "r", &id, 0, part(&blob, 0)).await.ok()["received"], json!(PART));
    // The connection drops halfway through part 1: nothing of it counts, nothing of it stays.
    cut_part(&s, &alice, &id, &blob, 1).await.err(400, "bad_request");
    let state = alice.get(&s, &format!("/v1/rooms/r/files/{id}/upload")).await;
    assert_eq!(state.ok()["received"], json!(PART));
    bob.get(&s, &format!("/v1/rooms/r/files/{id}")).await.err(409, "upload_incomplete");
    assert_eq!(objects_in(&c).await.len(), 1, "only part 0 is in the bucket: {:?}", objects_in(&c).await);
    // Part 0 again (its answer lost): refused, part 0 unchanged.
    put_part(&s, &alice, "r", &id, 0, part(&blob, 1)).await.err(409, "upload_offset");
    for i in 1..parts {
        put_part(&s, &alice, "r", &id, i as u64 * PART, part(&blob, i)).await.ok();
    }

    // Whole, and by ranges across parts.
    let (status, headers, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], blob.len().to_string().as_str());
    assert!(body == blob, "the blob comes back byte for byte");
    assert_eq!(attachment::decrypt(&reference(done, &id), &body).unwrap(), plain);
    let len = blob.len();
    ranges_are_served(&s, &bob, &id, &blob).await;

    // The bucket holds exactly the parts: ciphertext, no 64-byte run of the plaintext.
    let stored = objects_in(&c).await;
    assert_eq!(stored.len(), parts, "{stored:?}");
    assert!(stored.iter().all(|(k, _)| k.starts_with(&format!("blobs/{id}/"))), "{stored:?}");
    assert_eq!(stored.iter().map(|(_, n)| n).sum::<u64>(), len as u64);
    let runs: HashSet<&[u8]> = plain.windows(64).collect();
    for data in read_objects(&c).await {
        assert!(!data.windows(64).any(|w| runs.contains(w)), "an object holds plaintext");
    }

    // Alice's quota is taken; once the blob's retention ends it is deleted from the bucket.
    alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await.err(403, "file_quota");
    s.advance(3_600_001);
    assert_eq!(s.state.purge_expired_files().await.unwrap(), 1);
    assert_eq!(objects_in(&c).await, vec![], "the deleted blob is gone from the bucket");
    bob.get(&s, &format!("/v1/rooms/r/files/{id}")).await.err(404, "not_found");
    alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await.ok();
}

#[tokio::test]
async fn postgresql_s3_two_instances_share_one_bucket_and_serve_each_others_blobs() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = new_bucket(&endpoint).await;
    let c = s3_config(&endpoint, &bucket, "shared");
    let db = TestDb::create().await;
    let a = Server::with(c.clone(), Arc::new(PostgresStore::connect(&db.url).await.expect("connect A")));
    let b = Server::with(c.clone(), Arc::new(PostgresStore::connect(&db.url).await.expect("connect B")));
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&a, &alice, &bob).await;
    let (plain, blob, done) = encrypted_file(250_000, 12);
    let parts = blob.len().div_ceil(PART as usize);

    // Begun on A; the parts land on A and B in turn; one is cut on B and resumed on A.
    let created = alice.post(&a, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let id = created.ok()["blob"].as_str().unwrap().to_string();
    for i in 0..parts {
        let (on, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        if i == 1 {
            cut_part(on, &alice, &id, &blob, i).await.err(400, "bad_request");
            let state = alice.get(other, &format!("/v1/rooms/r/files/{id}/upload")).await;
            assert_eq!(state.ok()["received"], json!(PART), "B's cut part counts nowhere");
            put_part(other, &alice, "r", &id, PART, part(&blob, i)).await.ok();
            // The same part resent to B after A recorded it: refused, the blob unchanged.
            put_part(on, &alice, "r", &id, PART, part(&blob, 2)).await.err(409, "upload_offset");
            continue;
        }
        put_part(on, &alice, "r", &id, i as u64 * PART, part(&blob, i)).await.ok();
    }
    for (name, s) in [("A", &a), ("B", &b)] {
        let (status, _, body) = get_raw(s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
        assert_eq!(status, 200, "{name}");
        assert!(body == blob, "{name} serves the blob byte for byte");
        let (status, _, body) = get_raw(s, &bob, &format!("/v1/rooms/r/files/{id}"), Some("bytes=60000-140000")).await;
        assert_eq!(status, 206, "{name}");
        assert!(body == blob[60_000..140_001], "{name}: the range");
    }
    let (_, _, body) = get_raw(&b, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(attachment::decrypt(&reference(done, &id), &body).unwrap(), plain);
    assert_eq!(objects_in(&c).await.len(), parts);

    // B's purge deletes what A stored; A no longer serves it.
    a.advance(31 * 24 * 3_600_000);
    b.advance(31 * 24 * 3_600_000);
    assert_eq!(b.state.purge_expired_files().await.unwrap(), 1);
    assert_eq!(objects_in(&c).await, vec![]);
    bob.get(&a, &format!("/v1/rooms/r/files/{id}")).await.err(404, "not_found");
    drop(db);
}

/// Sends part 0 of blob `id` with `body` to `s`: the first 1,000 bytes at once, the rest when
/// the answered sender is told; answers the request's status when it ends.
fn slow_part_0(
    s: &Server,
    user: &User,
    id: &str,
    body: &[u8],
) -> (tokio::task::JoinHandle<u16>, tokio::sync::oneshot::Sender<()>) {
    let path = format!("/v1/rooms/r/files/{id}?offset=0");
    let (held, release) = held_body(body[..1000].to_vec(), body[1000..].to_vec());
    let req = part_request(s, user, &path, held, Sha256::digest(body).into());
    let router = s.router.clone();
    let task = tokio::spawn(async move { tower::ServiceExt::oneshot(router, req).await.unwrap().status().as_u16() });
    (task, release)
}

#[tokio::test]
async fn postgresql_s3_one_part_sent_to_two_instances_at_once_keeps_the_body_recorded() {
    // Alice's client sends part 0 to instance A, slowly; meanwhile part 0 reaches instance B
    // too, whole: first with other bytes (a bug, or a client gone wrong), then, on a second
    // blob, with the same bytes (a retry through another instance). Whatever A writes last,
    // the blob holds the body the database recorded, and no refused body stays in the bucket.
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = new_bucket(&endpoint).await;
    let c = s3_config(&endpoint, &bucket, "race");
    let db = TestDb::create().await;
    let a = Server::with(c.clone(), Arc::new(PostgresStore::connect(&db.url).await.expect("connect A")));
    let b = Server::with(c.clone(), Arc::new(PostgresStore::connect(&db.url).await.expect("connect B")));
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&a, &alice, &bob).await;
    let (plain, blob, done) = encrypted_file(150_000, 13);
    let parts = blob.len().div_ceil(PART as usize);
    let other: Vec<u8> = part(&blob, 0).iter().map(|x| x ^ 0x5a).collect();

    // Another body: B records its own, A's (finishing last) is refused and deleted.
    let first = alice.post(&a, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let first = first.ok()["blob"].as_str().unwrap().to_string();
    let (slow, release) = slow_part_0(&a, &alice, &first, part(&blob, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_part(&b, &alice, "r", &first, 0, &other).await.ok();
    release.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), 409, "A's body for a part B recorded is refused");
    for i in 1..parts {
        put_part(&a, &alice, "r", &first, i as u64 * PART, part(&blob, i)).await.ok();
    }
    let (status, _, body) = get_raw(&a, &bob, &format!("/v1/rooms/r/files/{first}"), Some("bytes=0-65535")).await;
    assert_eq!(status, 206);
    assert!(body == other, "part 0 holds the body B recorded, not the one A wrote last");
    assert_eq!(objects_in(&c).await.len(), parts, "A's refused body left no object behind");

    // The same body: both instances answer 200, the part is taken once, the blob is whole.
    let second = alice.post(&b, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let second = second.ok()["blob"].as_str().unwrap().to_string();
    let (slow, release) = slow_part_0(&a, &alice, &second, part(&blob, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(put_part(&b, &alice, "r", &second, 0, part(&blob, 0)).await.ok()["received"], json!(PART));
    release.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), 200, "the same body again is taken as held");
    let state = alice.get(&a, &format!("/v1/rooms/r/files/{second}/upload")).await;
    assert_eq!(state.ok()["received"], json!(PART), "counted once");
    for i in 1..parts {
        put_part(&b, &alice, "r", &second, i as u64 * PART, part(&blob, i)).await.ok();
    }
    let (status, _, body) = get_raw(&a, &bob, &format!("/v1/rooms/r/files/{second}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(attachment::decrypt(&reference(done, &second), &body).unwrap(), plain);
    assert_eq!(objects_in(&c).await.len(), 2 * parts);
    drop(db);
}

#[tokio::test]
async fn s3_a_bucket_that_cannot_be_used_stops_the_start_with_a_message() {
    let Some(endpoint) = s3_endpoint() else { return };
    let start = |c: Config| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut c = c;
        c.server.data_dir = dir.path().to_path_buf();
        c.validate().expect("the settings themselves are valid");
        let t = Instant::now();
        let r = grove_server::open(c).await.map(|_| ()).map_err(|e| e.to_string());
        (r, t.elapsed())
    };
    // No such bucket.
    let missing = format!("grove-missing-{}", std::process::id());
    let (r, _) = start(s3_config(&endpoint, &missing, "x")).await;
    let e = r.unwrap_err();
    assert!(e.contains(&format!("s3://{missing}/x")) && e.contains("cannot be used"), "{e}");
    // Nobody listening at the endpoint: said within seconds, not at the first upload.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("{}://{}", "http", closed.local_addr().unwrap());
    drop(closed);
    let (r, took) = start(s3_config(&dead, "grove-blobs", "")).await;
    let e = r.unwrap_err();
    assert!(e.contains("cannot be used") && e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // A bucket that works: the start succeeds and leaves no probe object behind.
    let bucket = new_bucket(&endpoint).await;
    let c = s3_config(&endpoint, &bucket, "p");
    let (r, _) = start(c.clone()).await;
    r.unwrap();
    assert_eq!(objects_in(&c).await, vec![]);
}

#[tokio::test]
async fn s3_default_8_mib_parts_are_stored_in_pieces_s3_takes() {
    // S3 takes a multipart upload's pieces (but the last) only from 5 MiB on: an 8 MiB part
    // goes up as 5 MiB and 3 MiB.
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = new_bucket(&endpoint).await;
    let mut c = s3_config(&endpoint, &bucket, "");
    c.files.part_bytes = grove_server::Config::default().files.part_bytes;
    let part_bytes = c.files.part_bytes as usize;
    let s = Server::with_config(c.clone());
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (plain, blob, done) = encrypted_file(9_000_000, 13);
    let created = alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let id = created.ok()["blob"].as_str().unwrap().to_string();
    for (i, p) in blob.chunks(part_bytes).enumerate() {
        put_part(&s, &alice, "r", &id, (i * part_bytes) as u64, p).await.ok();
    }
    let stored = objects_in(&c).await;
    assert_eq!(stored.iter().map(|(_, n)| *n as usize).collect::<Vec<_>>(), vec![part_bytes, blob.len() - part_bytes]);
    let (status, _, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(attachment::decrypt(&reference(done, &id), &body).unwrap(), plain);
}
