//! Encrypted attachments: the blob store's routes, with blobs made by grove-proto's cipher.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request};
use grove_proto::attachment;
use grove_server::Config;
use grove_wire::attachment::{AttachmentRef, BlobId};
use grove_wire::auth::{sha256_hex, sign_request_prehashed, HEADER_CONTENT_SHA256};
use grove_wire::auth::{HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::harness::*;

pub(crate) const PART: u64 = 64 * 1024;

/// A server whose blobs live in `dir`, with 64 KiB parts.
pub(crate) fn files_server(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut c = test_config();
    c.files.store = dir.to_string_lossy().into_owned();
    c.files.part_bytes = PART;
    tweak(&mut c);
    Server::with_config(c)
}

/// Alice's sender-keys room `r` with Bob in it.
pub(crate) async fn room_with_bob(s: &Server, alice: &User, bob: &User) {
    sk_room(s, alice, "r").await;
    post_membership(s, alice, alice, "r", 1, &[alice, bob], &[alice]).await.ok();
}

/// A file of text-like bytes (so a plaintext run on disk would be visible) and its encryption.
pub(crate) fn encrypted_file(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>, attachment::EncryptedAttachment) {
    let mut rng = StdRng::seed_from_u64(seed);
    let words = ["grove ", "attachment ", "secret ", "plaintext ", "lorem ", "ipsum "];
    let mut plain = Vec::with_capacity(len);
    while plain.len() < len {
        plain.extend_from_slice(words[(rng.next_u32() % 6) as usize].as_bytes());
    }
    plain.truncate(len);
    let (blob, done) = attachment::encrypt(&mut rng, &plain).unwrap();
    (plain, blob, done)
}

/// A part upload signed over `declared` (the body's SHA-256 unless a test lies).
pub(crate) fn part_request(s: &Server, user: &User, path: &str, body: Body, declared: [u8; 32]) -> Request<Body> {
    let h = sign_request_prehashed(&user.key, &s.state.public_key(), "PUT", path, s.now(), &fresh_nonce(), &declared);
    Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header(HEADER_KEY, h.key)
        .header(HEADER_TIMESTAMP, h.timestamp)
        .header(HEADER_NONCE, h.nonce)
        .header(HEADER_SIGNATURE, h.signature)
        .header(HEADER_CONTENT_SHA256, sha256_hex(&declared))
        .body(body)
        .unwrap()
}

pub(crate) async fn put_part(s: &Server, user: &User, room: &str, blob: &str, offset: u64, bytes: &[u8]) -> Resp {
    let path = format!("/v1/rooms/{room}/files/{blob}?offset={offset}");
    s.call(part_request(s, user, &path, Body::from(bytes.to_vec()), Sha256::digest(bytes).into())).await
}

/// Begins an upload of `blob` and sends every part; answers the blob id.
pub(crate) async fn upload(s: &Server, user: &User, room: &str, blob: &[u8]) -> String {
    let created = user.post(s, &format!("/v1/rooms/{room}/files"), json!({"size": blob.len()})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["blob"].as_str().unwrap().to_string();
    for (i, part) in blob.chunks(PART as usize).enumerate() {
        put_part(s, user, room, &id, i as u64 * PART, part).await.ok();
    }
    id
}

/// A signed GET with extra headers; answers status, headers and raw body.
pub(crate) async fn get_raw(
    s: &Server,
    user: &User,
    path: &str,
    range: Option<&str>,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let mut req = user.request(s, Method::GET, path, Vec::new());
    if let Some(r) = range {
        req.headers_mut().insert("range", r.parse().unwrap());
    }
    let resp = s.router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

/// `user` downloads ranges of blob `id` of room `r` (`blob`, at least 200,001 bytes): across
/// part boundaries, open-ended and a suffix; each comes back as 206 with its bytes.
pub(crate) async fn ranges_are_served(s: &Server, user: &User, id: &str, blob: &[u8]) {
    let len = blob.len();
    for (range, want) in [
        ("bytes=100-200000".to_string(), 100..200_001),
        (format!("bytes={}-", len - 10), len - 10..len),
        ("bytes=-70000".to_string(), len - 70_000..len),
        ("bytes=65535-65536".to_string(), 65_535..65_537),
    ] {
        let (status, headers, body) = get_raw(s, user, &format!("/v1/rooms/r/files/{id}"), Some(&range)).await;
        assert_eq!(status, 206, "{range}");
        let want_range = format!("bytes {}-{}/{len}", want.start, want.end - 1);
        assert_eq!(headers["content-range"], want_range.as_str(), "{range}");
        assert!(body == blob[want.clone()], "{range}: wrong bytes");
    }
}

pub(crate) fn reference(done: attachment::EncryptedAttachment, blob: &str) -> AttachmentRef {
    done.into_ref(blob.parse::<BlobId>().unwrap(), "notes.txt".into(), "text/plain".into())
}

#[tokio::test]
async fn members_upload_in_parts_and_download_whole_or_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |_| {});
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (plain, blob, done) = encrypted_file(300_000, 1);
    assert!(blob.len() as u64 > 4 * PART, "several parts");
    let id = upload(&s, &alice, "r", &blob).await;

    let state = bob.get(&s, &format!("/v1/rooms/r/files/{id}/upload")).await;
    assert_eq!(state.ok()["complete"], json!(true));
    assert_eq!(state.json["received"], json!(blob.len()));
    assert_eq!(state.json["part_bytes"], json!(PART));
    assert!(state.json["expires_at"].as_i64().unwrap() > s.now(), "retention set");

    let (status, headers, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], blob.len().to_string().as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(body == blob, "the blob comes back byte for byte");
    assert_eq!(attachment::decrypt(&reference(done, &id), &body).unwrap(), plain);

    // Ranges: across part boundaries, open-ended, suffix; and one past the end.
    let len = blob.len();
    ranges_are_served(&s, &bob, &id, &blob).await;
    let (status, headers, body) =
        get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), Some(&format!("bytes={len}-"))).await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], format!("bytes */{len}").as_str());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], "range_not_satisfiable");
    // Several ranges are not served piecewise: the whole blob comes back.
    let (status, _, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), Some("bytes=0-1,5-6")).await;
    assert_eq!((status, body.len()), (200, len));

    let metrics = s.get("/metrics").await.text;
    for line in [
        "grove_file_uploads_total{stage=\"completed\"} 1",
        "grove_file_downloads_total{kind=\"range\"} 4",
        "grove_file_refusals_total{code=\"range_not_satisfiable\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert!(metrics.contains(&format!("grove_file_bytes_stored {len}")), "{metrics}");
}

#[tokio::test]
async fn only_current_members_upload_or_download() {
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |_| {});
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    room_with_bob(&s, &alice, &bob).await;
    let (_, blob, _) = encrypted_file(10_000, 2);
    carol.post(&s, "/v1/rooms/r/files", json!({"size": 100})).await.err(403, "not_member");
    let id = upload(&s, &alice, "r", &blob).await;
    carol.get(&s, &format!("/v1/rooms/r/files/{id}")).await.err(403, "not_member");
    carol.get(&s, &format!("/v1/rooms/r/files/{id}/upload")).await.err(403, "not_member");
    put_part(&s, &carol, "r", &id, 0, b"x").await.err(403, "not_member");
    // Bob may read but not write Alice's upload.
    let (status, _, _) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(status, 200);
    put_part(&s, &bob, "r", &id, 0, b"x").await.err(403, "forbidden");
    // Removed: Bob can no longer fetch the blob, nor one sent after.
    post_membership(&s, &alice, &alice, "r", 2, &[&alice], &[&alice]).await.ok();
    bob.get(&s, &format!("/v1/rooms/r/files/{id}")).await.err(403, "not_member");
    let later = upload(&s, &alice, "r", &blob).await;
    bob.get(&s, &format!("/v1/rooms/r/files/{later}")).await.err(403, "not_member");
    // A blob is addressed only under its own room.
    sk_room(&s, &carol, "other").await;
    carol.get(&s, &format!("/v1/rooms/other/files/{id}")).await.err(404, "not_found");
    alice.get(&s, "/v1/rooms/r/files/not-a-blob-id").await.err(400, "bad_request");
    alice.get(&s, &format!("/v1/rooms/r/files/{}", "0".repeat(32))).await.err(404, "not_found");
}

#[tokio::test]
async fn an_interrupted_upload_resumes_at_the_last_whole_part() {
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |_| {});
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (plain, blob, done) = encrypted_file(150_000, 3);
    let created = alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let id = created.ok()["blob"].as_str().unwrap().to_string();
    assert_eq!(created.json["received"], json!(0));
    let part = |i: usize| &blob[i * PART as usize..((i + 1) * PART as usize).min(blob.len())];
    assert_eq!(put_part(&s, &alice, "r", &id, 0, part(0)).await.ok()["received"], json!(PART));

    // The connection drops halfway through part 1: nothing of it counts.
    let half = part(1)[..30_000].to_vec();
    let cut = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
        Err(std::io::Error::other("connection reset")),
    ]);
    let path = format!("/v1/rooms/r/files/{id}?offset={PART}");
    let r = s.call(part_request(&s, &alice, &path, Body::from_stream(cut), Sha256::digest(part(1)).into())).await;
    r.err(400, "bad_request");
    let state = alice.get(&s, &format!("/v1/rooms/r/files/{id}/upload")).await;
    assert_eq!((state.ok()["received"].clone(), state.json["complete"].clone()), (json!(PART), json!(false)));
    bob.get(&s, &format!("/v1/rooms/r/files/{id}")).await.err(409, "upload_incomplete");

    // Wrong offsets, lengths and digests change nothing either.
    put_part(&s, &alice, "r", &id, 0, part(0)).await.err(409, "upload_offset");
    put_part(&s, &alice, "r", &id, 2 * PART, part(2)).await.err(409, "upload_offset");
    put_part(&s, &alice, "r", &id, PART, &part(1)[..1000]).await.err(400, "bad_request");
    let wrong = s.call(part_request(&s, &alice, &path, Body::from(part(1).to_vec()), [7; 32])).await;
    wrong.err(400, "content_digest_mismatch");
    let mut bigger = part(1).to_vec();
    bigger.push(0);
    put_part(&s, &alice, "r", &id, PART, &bigger).await.err(400, "bad_request");
    let state = alice.get(&s, &format!("/v1/rooms/r/files/{id}/upload")).await;
    assert_eq!(state.ok()["received"], json!(PART));

    // Resume from `received`.
    for i in 1..blob.len().div_ceil(PART as usize) {
        put_part(&s, &alice, "r", &id, i as u64 * PART, part(i)).await.ok();
    }
    put_part(&s, &alice, "r", &id, blob.len() as u64, b"x").await.err(409, "upload_offset");
    let (status, _, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(attachment::decrypt(&reference(done, &id), &body).unwrap(), plain);
}

#[tokio::test]
async fn limits_and_quotas_are_answered_with_codes_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let max_blob = attachment::ciphertext_len(100_000);
    let s = files_server(dir.path(), |c| {
        c.files.max_file_bytes = 100_000;
        c.files.user_quota_bytes = 2 * max_blob;
        c.files.room_quota_bytes = 3 * max_blob;
    });
    let info = s.get("/v1/info").await;
    let files = &info.ok()["limits"]["files"];
    assert_eq!(files["max_file_bytes"], json!(100_000));
    assert_eq!(files["part_bytes"], json!(PART));
    assert_eq!(files["user_quota_bytes"], json!(2 * max_blob));
    assert_eq!(files["room_quota_bytes"], json!(3 * max_blob));
    assert_eq!(files["retention_secs"], json!(30 * 24 * 3600));
    assert_eq!(files["upload_ttl_secs"], json!(24 * 3600));

    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    alice.post(&s, "/v1/rooms/r/files", json!({"size": max_blob + 1})).await.err(413, "file_too_large");
    alice.post(&s, "/v1/rooms/r/files", json!({"size": 0})).await.err(400, "bad_request");
    // Shorter than the smallest blob the cipher makes (an empty file, padded).
    let min = attachment::ciphertext_len(0);
    alice.post(&s, "/v1/rooms/r/files", json!({"size": min - 1})).await.err(400, "bad_request");
    alice.post(&s, "/v1/rooms/r/files", json!({"size": -1})).await.err(400, "malformed_body");
    alice.post(&s, "/v1/rooms/r/files", json!({"size": 5000, "x": 1})).await.err(400, "malformed_body");
    // A 100,000-byte file fits exactly; the user quota holds two of them (in progress counts).
    alice.post(&s, "/v1/rooms/r/files", json!({"size": max_blob})).await.ok();
    alice.post(&s, "/v1/rooms/r/files", json!({"size": max_blob})).await.ok();
    alice.post(&s, "/v1/rooms/r/files", json!({"size": min})).await.err(403, "file_quota");
    // The room holds three.
    bob.post(&s, "/v1/rooms/r/files", json!({"size": max_blob})).await.ok();
    bob.post(&s, "/v1/rooms/r/files", json!({"size": min})).await.err(403, "file_quota");
    // A part upload without the content hash is refused before its body is read.
    let path = "/v1/rooms/r/files/00000000000000000000000000000000?offset=0";
    let mut req = part_request(&s, &alice, path, Body::from("x"), Sha256::digest(b"x").into());
    req.headers_mut().remove(HEADER_CONTENT_SHA256);
    s.call(req).await.err(401, "unauthenticated");
    let metrics = s.get("/metrics").await.text;
    assert!(metrics.contains("grove_file_refusals_total{code=\"file_quota\"} 2"), "{metrics}");
    assert!(metrics.contains("grove_file_refusals_total{code=\"file_too_large\"} 1"), "{metrics}");
}

/// Every regular file under `dir`.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn the_servers_files_hold_no_64_byte_run_of_the_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |_| {});
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (plain, blob, _) = encrypted_file(200_000, 4);
    upload(&s, &alice, "r", &blob).await;
    let runs: HashSet<&[u8]> = plain.windows(64).collect();
    let mut stored = Vec::new();
    files_under(dir.path(), &mut stored);
    assert!(stored.len() >= 4, "the parts are on disk: {stored:?}");
    let mut bytes_seen = 0;
    for f in stored {
        let data = std::fs::read(&f).unwrap();
        bytes_seen += data.len();
        assert!(!data.windows(64).any(|w| runs.contains(w)), "{} holds plaintext", f.display());
    }
    assert_eq!(bytes_seen, blob.len(), "exactly the blob is stored");
    // The check itself finds plaintext where there is some.
    assert!(blob.windows(64).all(|w| !runs.contains(w)) && plain[1000..1100].windows(64).all(|w| runs.contains(w)));
}

#[tokio::test]
async fn abandoned_uploads_and_expired_blobs_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |c| {
        c.files.upload_ttl_secs = 60;
        c.files.retention_secs = 3600;
    });
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (_, blob, _) = encrypted_file(100_000, 5);
    let kept = upload(&s, &alice, "r", &blob).await;
    let created = alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let abandoned = created.ok()["blob"].as_str().unwrap().to_string();
    put_part(&s, &alice, "r", &abandoned, 0, &blob[..PART as usize]).await.ok();
    assert_eq!(s.state.purge_expired_files().await.unwrap(), 0);

    s.advance(61_000);
    assert_eq!(s.state.purge_expired_files().await.unwrap(), 1);
    alice.get(&s, &format!("/v1/rooms/r/files/{abandoned}/upload")).await.err(404, "not_found");
    let (status, _, _) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{kept}"), None).await;
    assert_eq!(status, 200);

    s.advance(3_600_000);
    // Expired blobs are gone for readers at once, from disk at the next purge.
    bob.get(&s, &format!("/v1/rooms/r/files/{kept}")).await.err(404, "not_found");
    assert_eq!(s.state.purge_expired_files().await.unwrap(), 1);
    let mut left = Vec::new();
    files_under(dir.path(), &mut left);
    assert!(left.is_empty(), "{left:?}");
    // The quota is free again.
    alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await.ok();
}

/// A part body that sends `first`, then waits for the test to release `rest`.
pub(crate) fn held_body(first: Vec<u8>, rest: Vec<u8>) -> (Body, tokio::sync::oneshot::Sender<()>) {
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let stream = futures_util::stream::unfold((Some(first), Some((wait, rest))), |(first, rest)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(f)), (None, rest)));
        }
        let (wait, rest) = rest?;
        let _ = wait.await;
        Some((Ok(bytes::Bytes::from(rest)), (None, None)))
    });
    (Body::from_stream(stream), release)
}

#[tokio::test]
async fn two_bodies_for_one_part_at_once_leave_the_blob_holding_the_one_recorded() {
    // Alice's client sends part 0, stalls, and (a bug, or a retry with other bytes) sends a
    // different part 0 meanwhile. Whichever is recorded, the blob must hold its bytes: a part
    // is never recorded with another request's bytes in its place.
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |_| {});
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (_, blob, _) = encrypted_file(100_000, 6);
    let created = alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let id = created.ok()["blob"].as_str().unwrap().to_string();
    let first = blob[..PART as usize].to_vec();
    let other: Vec<u8> = first.iter().map(|b| b ^ 0x5a).collect();
    let path = format!("/v1/rooms/r/files/{id}?offset=0");

    let (body, release) = held_body(first[..1000].to_vec(), first[1000..].to_vec());
    let slow = tokio::spawn({
        let (router, req) = (s.router.clone(), part_request(&s, &alice, &path, body, Sha256::digest(&first).into()));
        async move { router.oneshot(req).await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let quick = tokio::spawn({
        let req = part_request(&s, &alice, &path, Body::from(other.clone()), Sha256::digest(&other).into());
        let router = s.router.clone();
        async move { router.oneshot(req).await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    release.send(()).unwrap();
    let (slow, quick) = (slow.await.unwrap(), quick.await.unwrap());
    let recorded = match (slow, quick) {
        (200, 409) => &first,
        (409, 200) => &other,
        got => panic!("exactly one of the two is recorded, the other refused with 409: {got:?}"),
    };
    for i in 1..blob.len().div_ceil(PART as usize) {
        let end = ((i + 1) * PART as usize).min(blob.len());
        put_part(&s, &alice, "r", &id, i as u64 * PART, &blob[i * PART as usize..end]).await.ok();
    }
    let (status, _, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), Some("bytes=0-65535")).await;
    assert_eq!(status, 206);
    assert!(&body == recorded, "part 0 holds the bytes of the request that was recorded");
}

#[tokio::test]
async fn a_part_cannot_be_moved_to_another_offset_nor_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let s = files_server(dir.path(), |_| {});
    let (alice, bob) = (User::new(1), User::new(2));
    room_with_bob(&s, &alice, &bob).await;
    let (plain, blob, done) = encrypted_file(150_000, 7);
    let created = alice.post(&s, "/v1/rooms/r/files", json!({"size": blob.len()})).await;
    let id = created.ok()["blob"].as_str().unwrap().to_string();
    let part = |i: usize| blob[i * PART as usize..((i + 1) * PART as usize).min(blob.len())].to_vec();
    put_part(&s, &alice, "r", &id, 0, &part(0)).await.ok();
    // Part 2, signed for offset 2·PART, sent to the current offset (PART) by someone who
    // captured it: the signature covers the offset, so it is refused.
    let signed_for_2 = format!("/v1/rooms/r/files/{id}?offset={}", 2 * PART);
    let mut moved = part_request(&s, &alice, &signed_for_2, Body::from(part(2)), Sha256::digest(part(2)).into());
    *moved.uri_mut() = format!("/v1/rooms/r/files/{id}?offset={PART}").parse().unwrap();
    s.call(moved).await.err(401, "bad_signature");
    // Part 1 recorded, then the same signed request again (replayed, or resent after its
    // answer was lost): refused, the blob unchanged.
    let path = format!("/v1/rooms/r/files/{id}?offset={PART}");
    let once = part_request(&s, &alice, &path, Body::from(part(1)), Sha256::digest(part(1)).into());
    let mut again = Request::builder().method(Method::PUT).uri(&path).body(Body::from(part(1))).unwrap();
    *again.headers_mut() = once.headers().clone();
    s.call(once).await.ok();
    s.call(again).await.err(401, "nonce_reused");
    // Resent with a fresh signature (the client's retry): refused at an offset already past.
    put_part(&s, &alice, "r", &id, PART, &part(1)).await.err(409, "upload_offset");
    for i in 2..blob.len().div_ceil(PART as usize) {
        put_part(&s, &alice, "r", &id, i as u64 * PART, &part(i)).await.ok();
    }
    let (status, _, body) = get_raw(&s, &bob, &format!("/v1/rooms/r/files/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(attachment::decrypt(&reference(done, &id), &body).unwrap(), plain);
}
