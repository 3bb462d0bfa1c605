//! Files in rooms, end to end: sent by one member, saved by another, through a real server;
//! damaged blobs, removed members, strangers and cut connections.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grove_client::files::{self, FileError};
use grove_client::profile::{ClientError, ConnectTo, Profile};
use grove_client::Event;
use grove_proto::attachment::{AttachmentError, SEGMENT_LEN};
use grove_wire::api::RoomMode;
use grove_wire::content::Content;
use grove_wire::ErrorCode;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::{garden, World};

/// The part length of the test servers (the smallest a server takes), so that a file of a few
/// hundred KiB goes up in several parts.
const PART: u64 = 64 * 1024;

/// Writes `len` pseudo-random bytes (seeded) to `dir/name`; answers the path and the bytes.
fn write_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn quiet() -> impl FnMut(u64, u64) + Send {
    |_, _| {}
}

/// The file error inside a client error.
#[track_caller]
fn file_err(e: &ClientError) -> &FileError {
    match e {
        ClientError::File(f) => f,
        other => panic!("expected a file error, got {other:?}"),
    }
}

fn code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::File(f) => f.code(),
        ClientError::Server(s) => s.code(),
        _ => None,
    }
}

/// The names in a folder (a download must leave no temporary file behind).
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Alice makes room `garden` in `mode` and Bob joins it.
async fn alice_and_bob(w: &World, mode: RoomMode) -> (Profile, Profile) {
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    alice.create_room_with_mode(&w.url, "garden", mode).await.unwrap();
    alice.invite("garden", &bob.address().to_string()).await.unwrap();
    bob.sync().await.unwrap();
    (alice, bob)
}

/// Alice sends files of every edge size (empty, one byte, one byte either side of a cipher
/// segment, several upload parts), one with a caption; Bob sees each as a file and saves it
/// byte for byte; a second save never overwrites. In both room modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_every_edge_size_go_from_alice_to_bob_in_both_modes() {
    for mode in [RoomMode::Mls, RoomMode::SenderKeys] {
        let w = World::start_with(|c| c.files.part_bytes = PART).await;
        let (mut alice, mut bob) = alice_and_bob(&w, mode).await;
        let src = w.dir.path().join("alice-files");
        let saved = w.dir.path().join("bob-files");
        std::fs::create_dir_all(&saved).unwrap();
        for (i, len) in [0, 1, SEGMENT_LEN - 1, SEGMENT_LEN + 1, 3 * PART as usize + 5].into_iter().enumerate() {
            let name = format!("file-{i}.bin");
            let (path, plain) = write_file(&src, &name, len, i as u64);
            let caption = (i == 1).then_some("the smallest one");
            let mut told = Vec::new();
            let seq = alice.send_file("garden", &path, caption, &mut |d, t| told.push((d, t))).await.unwrap();
            assert_eq!(told.last(), Some(&(len as u64, len as u64)), "{mode:?} {len}: progress ends at the size");
            assert!(told.windows(2).all(|w| w[0].0 <= w[1].0), "progress only grows");

            bob.sync().await.unwrap();
            let (file, got_caption) = bob.attachment("garden", seq).unwrap();
            assert_eq!(
                (file.name.as_str(), file.size, file.media_type.as_str(), got_caption.as_deref()),
                (name.as_str(), len as u64, "application/octet-stream", caption),
                "{mode:?}"
            );
            let out = saved.join(&name);
            assert_eq!(bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap(), len as u64);
            assert!(std::fs::read(&out).unwrap() == plain, "{mode:?} {len}: the saved file is the one sent");

            let err = bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap_err();
            assert!(matches!(file_err(&err), FileError::Exists(p) if *p == out), "{mode:?}: {err:?}");
            std::fs::write(&out, b"stale").unwrap();
            bob.save_file("garden", &file, &out, true, &mut quiet()).await.unwrap();
            assert!(std::fs::read(&out).unwrap() == plain, "replaced when asked");
        }
        assert_eq!(names_in(&saved).len(), 5, "{mode:?}: no temporary file left: {:?}", names_in(&saved));
        // Alice's own history holds her files too.
        let (file, _) = alice.attachment("garden", bob.messages("garden", 0).unwrap().last().unwrap().seq).unwrap();
        assert_eq!(file.size, 3 * PART + 5);
    }
}

/// A 20 MiB file goes up in the server's default 8 MiB parts and comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_file_goes_up_in_default_parts_and_comes_back() {
    let w = World::start().await;
    let (mut alice, mut bob) = alice_and_bob(&w, RoomMode::Mls).await;
    let (path, plain) = write_file(&w.dir.path().join("src"), "big.bin", 20 << 20, 20);
    let seq = alice.send_file("garden", &path, None, &mut quiet()).await.unwrap();
    bob.sync().await.unwrap();
    let (file, _) = bob.attachment("garden", seq).unwrap();
    let out = w.dir.path().join("big-copy.bin");
    bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == plain);
}

/// 200 MiB each way, compared by SHA-256 (run with `--ignored`: about a minute in a debug
/// build; the server's memory under such a file is bounded in grove-server's files_rss test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_200_mib_file_goes_both_ways() {
    let w = World::start_with(|c| c.files.max_file_bytes = 256 << 20).await;
    let (mut alice, mut bob) = alice_and_bob(&w, RoomMode::Mls).await;
    let path = w.dir.path().join("huge.bin");
    let mut want = Sha256::new();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut rng = rand::rngs::StdRng::seed_from_u64(200);
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..200 {
            rng.fill_bytes(&mut chunk);
            want.update(&chunk);
            f.write_all(&chunk).unwrap();
        }
    }
    let seq = alice.send_file("garden", &path, None, &mut quiet()).await.unwrap();
    bob.sync().await.unwrap();
    let (file, _) = bob.attachment("garden", seq).unwrap();
    let out = w.dir.path().join("huge-copy.bin");
    assert_eq!(bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap(), 200 << 20);
    let mut got = Sha256::new();
    std::io::copy(&mut std::fs::File::open(&out).unwrap(), &mut got).unwrap();
    assert_eq!(got.finalize(), want.finalize());
}

/// The server's copy is altered (one bit of the first part) or truncated (the last part loses
/// its end): Bob's save is refused with a clear error, and nothing is written where the file
/// was to go, not even a temporary file. Put back as it was, the file saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_truncated_blob_is_refused_and_nothing_is_written() {
    let w = World::start_with(|c| c.files.part_bytes = PART).await;
    let (mut alice, mut bob) = alice_and_bob(&w, RoomMode::Mls).await;
    let (path, plain) = write_file(&w.dir.path().join("src"), "photo.jpg", 3 * PART as usize + 5, 7);
    let seq = alice.send_file("garden", &path, None, &mut quiet()).await.unwrap();
    bob.sync().await.unwrap();
    let (file, _) = bob.attachment("garden", seq).unwrap();
    assert_eq!(file.media_type, "image/jpeg");
    let parts = w.dir.path().join("server/files/blobs").join(file.blob.to_string());
    let mut part_files = names_in(&parts);
    assert_eq!(part_files.len(), 4, "{part_files:?}");
    let first = parts.join(&part_files[0]);
    let last = parts.join(part_files.pop().unwrap());
    let downloads = w.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let out = downloads.join("photo.jpg");

    // One bit flipped in the server's copy.
    let original = std::fs::read(&first).unwrap();
    let mut flipped = original.clone();
    flipped[1000] ^= 0x01;
    std::fs::write(&first, &flipped).unwrap();
    let err = bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap_err();
    assert!(
        matches!(file_err(&err), FileError::Tampered { why: AttachmentError::SegmentForged { index: 0 }, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("failed verification") && err.to_string().contains("nothing was saved"), "{err}");
    assert!(names_in(&downloads).is_empty(), "nothing written: {:?}", names_in(&downloads));
    std::fs::write(&first, &original).unwrap();

    // The last part cut short by 100 bytes.
    let original_last = std::fs::read(&last).unwrap();
    std::fs::write(&last, &original_last[..original_last.len() - 100]).unwrap();
    let err = bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap_err();
    assert!(
        matches!(
            file_err(&err),
            FileError::CutShort { .. } | FileError::Tampered { why: AttachmentError::BlobTruncated { .. }, .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was saved"), "{err}");
    assert!(names_in(&downloads).is_empty(), "nothing written: {:?}", names_in(&downloads));
    std::fs::write(&last, &original_last).unwrap();

    // As it was: the same save goes through.
    bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == plain);
}

/// Carol is removed before Alice sends a file: she never gets the message, and even with the
/// reference (passed on by Bob) the server refuses her the blob (403). A stranger who never
/// was in the room gets 403 for downloads and uploads alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_before_and_a_stranger_cannot_fetch_a_file() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    alice.remove("garden", &carol.user_id()).await.unwrap();
    let (path, plain) = write_file(&w.dir.path().join("src"), "plans.pdf", 5000, 3);
    let seq = alice.send_file("garden", &path, Some("not for carol"), &mut quiet()).await.unwrap();
    bob.sync().await.unwrap();
    let (file, _) = bob.attachment("garden", seq).unwrap();
    let out = w.dir.path().join("plans.pdf");
    bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == plain);

    carol.sync().await.unwrap();
    assert!(carol.attachment("garden", seq).is_err(), "Carol never got the message");
    let carols = w.dir.path().join("carol-plans.pdf");
    let err = carol.save_file("garden", &file, &carols, false, &mut quiet()).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NotMember), "{err}");
    assert_eq!(ErrorCode::NotMember.http_status(), 403);
    assert!(!carols.exists());

    let dave = grove_client::Server::new(&w.url, ed25519_dalek::SigningKey::from_bytes(&[0xda; 32]));
    let err = files::download(&dave, "garden", &file, &carols, false, &mut quiet()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    assert!(!carols.exists());
    let err = dave.begin_upload("garden", 5000).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    let err = dave.upload_state("garden", &file.blob).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
}

/// What the proxy has broken so far.
#[derive(Default)]
struct Cuts {
    /// Parts past the first seen (upload PUTs at a non-zero offset).
    parts: AtomicUsize,
    /// Whole-blob downloads seen.
    downloads: AtomicUsize,
    /// Downloads asking for a `Range`.
    ranged: AtomicUsize,
}

/// A proxy in front of the server that breaks connections: the first part after the first
/// never reaches the server; the next one does, but its answer is lost; the first download is
/// cut halfway. Everything else goes through.
async fn cutting_proxy(upstream: String) -> (String, Arc<Cuts>) {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;

    #[derive(Clone)]
    struct P {
        upstream: String,
        cuts: Arc<Cuts>,
        http: reqwest::Client,
    }
    fn broken(status: u16, headers: &reqwest::header::HeaderMap, first: Vec<u8>) -> Response {
        let mut out = Response::builder().status(status);
        for (k, v) in headers {
            out = out.header(k, v);
        }
        // The bytes go out first; the connection breaks a moment later.
        let cut = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Err(std::io::Error::other("connection reset by the proxy"))
        });
        let body = futures_util::StreamExt::chain(futures_util::stream::iter(vec![Ok(bytes::Bytes::from(first))]), cut);
        out.body(Body::from_stream(body)).unwrap()
    }
    async fn forward(State(p): State<P>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        let is_part = parts.method == axum::http::Method::PUT && path.contains("?offset=") && !path.ends_with("=0");
        let is_download =
            parts.method == axum::http::Method::GET && path.contains("/files/") && !path.ends_with("/upload");
        if is_download && parts.headers.contains_key("range") {
            p.cuts.ranged.fetch_add(1, Ordering::SeqCst);
        }
        let part_no = if is_part { p.cuts.parts.fetch_add(1, Ordering::SeqCst) } else { usize::MAX };
        if part_no == 0 {
            // Lost on the way: the server never sees it.
            return broken(200, &reqwest::header::HeaderMap::new(), Vec::new());
        }
        let (status, headers, body) = crate::proxy::pass(&p.http, &p.upstream, &parts, body).await;
        if part_no == 1 {
            // Stored, but the answer is lost.
            return broken(200, &reqwest::header::HeaderMap::new(), Vec::new());
        }
        if is_download && status == 200 && p.cuts.downloads.fetch_add(1, Ordering::SeqCst) == 0 {
            return broken(status, &headers, body[..body.len() / 2].to_vec());
        }
        crate::proxy::respond(status, &headers, body)
    }
    let cuts = Arc::new(Cuts::default());
    let state = P { upstream, cuts: cuts.clone(), http: reqwest::Client::new() };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let url = crate::proxy::serve(app).await;
    (url, cuts)
}

/// Alice's connection breaks twice during an upload (a part lost on the way, then a part
/// stored whose answer is lost) and Bob's download is cut halfway: each resumes from where
/// the server is, and the file arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_and_download_resume_where_they_stopped() {
    let w = World::start_with(|c| c.files.part_bytes = PART).await;
    let (mut alice, mut bob) = alice_and_bob(&w, RoomMode::SenderKeys).await;
    let (proxy, cuts) = cutting_proxy(w.url.clone()).await;
    let mut rules = ConnectTo::none();
    rules.add(&w.url, &proxy);
    alice.set_connect_to(rules.clone());
    bob.set_connect_to(rules);

    let (path, plain) = write_file(&w.dir.path().join("src"), "song.mp3", 5 * PART as usize, 9);
    let seq = alice.send_file("garden", &path, Some("resumed"), &mut quiet()).await.unwrap();
    assert!(cuts.parts.load(Ordering::SeqCst) >= 3, "both cuts happened");
    bob.sync().await.unwrap();
    let (file, caption) = bob.attachment("garden", seq).unwrap();
    assert_eq!((file.media_type.as_str(), caption.as_deref()), ("audio/mpeg", Some("resumed")));
    let out = w.dir.path().join("song.mp3");
    bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap();
    assert_eq!(cuts.downloads.load(Ordering::SeqCst), 1, "one whole download, cut halfway");
    assert!(cuts.ranged.load(Ordering::SeqCst) >= 1, "the rest came by Range");
    assert!(std::fs::read(&out).unwrap() == plain);
}

/// A file larger than the room's server takes is refused before a byte goes up, and so is a
/// folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_files_and_folders_are_refused_before_uploading() {
    let w = World::start_with(|c| c.files.max_file_bytes = 10_000).await;
    let (mut alice, _bob) = alice_and_bob(&w, RoomMode::Mls).await;
    let (path, _) = write_file(&w.dir.path().join("src"), "big.bin", 10_001, 1);
    let err = alice.send_file("garden", &path, None, &mut quiet()).await.unwrap_err();
    assert!(matches!(file_err(&err), FileError::TooLarge { size: 10_001, max: 10_000, .. }), "{err:?}");
    let err = alice.send_file("garden", &w.dir.path().join("src"), None, &mut quiet()).await.unwrap_err();
    assert!(matches!(file_err(&err), FileError::NotAFile(_)), "{err:?}");
    let err = alice.send_file("garden", &w.dir.path().join("missing"), None, &mut quiet()).await.unwrap_err();
    assert!(matches!(file_err(&err), FileError::Io { .. }), "{err:?}");
    let files_sent = alice
        .messages("garden", 0)
        .unwrap()
        .into_iter()
        .filter(|m| matches!(m.event(), Event::Content(Content::Attachment { .. })))
        .count();
    assert_eq!(files_sent, 0, "nothing was sent");
}

/// A proxy that lets the first part of an upload through and holds every later part without
/// answering while `hang` is set (a process killed mid-upload is modelled by dropping the send
/// meanwhile); counts the first parts it saw.
#[derive(Default)]
struct Gate {
    hang: std::sync::atomic::AtomicBool,
    first_parts: AtomicUsize,
}

async fn hanging_proxy(upstream: String) -> (String, Arc<Gate>) {
    use axum::extract::{Request, State};
    use axum::response::Response;

    #[derive(Clone)]
    struct P {
        upstream: String,
        gate: Arc<Gate>,
        http: reqwest::Client,
    }
    async fn forward(State(p): State<P>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        if parts.method == axum::http::Method::PUT && path.contains("?offset=") {
            if path.ends_with("?offset=0") {
                p.gate.first_parts.fetch_add(1, Ordering::SeqCst);
            } else if p.gate.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
        let (status, headers, body) = crate::proxy::pass(&p.http, &p.upstream, &parts, body).await;
        crate::proxy::respond(status, &headers, body)
    }
    let gate = Arc::new(Gate::default());
    gate.hang.store(true, Ordering::SeqCst);
    let state = P { upstream, gate: gate.clone(), http: reqwest::Client::new() };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let url = crate::proxy::serve(app).await;
    (url, gate)
}

/// Alice's send dies after the first part of a file went up (the send is dropped, as a killed
/// process would stop). A file rewritten meanwhile starts over; the same file sent again goes
/// on in the same blob from the parts the server holds — the first part is not sent twice —
/// and Bob gets the file whole. Once the message is sent, the same file sent again is a new
/// upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_midway_goes_on_where_the_server_is_when_sent_again() {
    let w = World::start_with(|c| c.files.part_bytes = PART).await;
    let (mut alice, mut bob) = alice_and_bob(&w, RoomMode::Mls).await;
    let (proxy, gate) = hanging_proxy(w.url.clone()).await;
    let mut rules = ConnectTo::none();
    rules.add(&w.url, &proxy);
    alice.set_connect_to(rules);
    let (path, _) = write_file(&w.dir.path().join("src"), "video.mp4", 4 * PART as usize + 123, 11);

    let cut =
        tokio::time::timeout(std::time::Duration::from_secs(3), alice.send_file("garden", &path, None, &mut quiet()))
            .await;
    assert!(cut.is_err(), "the send was cut off midway: {cut:?}");
    assert_eq!(gate.first_parts.load(Ordering::SeqCst), 1);
    let blobs = w.dir.path().join("server/files/blobs");
    assert_eq!(names_in(&blobs).len(), 1, "one blob begun");

    // The file is rewritten meanwhile, same size, its modification time put back: never
    // resumed under the old key (the status-change time tells), a new upload begins.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let (_, plain) = write_file(&w.dir.path().join("src"), "video.mp4", 4 * PART as usize + 123, 12);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
    let cut =
        tokio::time::timeout(std::time::Duration::from_secs(3), alice.send_file("garden", &path, None, &mut quiet()))
            .await;
    assert!(cut.is_err(), "cut off again");
    assert_eq!(gate.first_parts.load(Ordering::SeqCst), 2, "a changed file starts over");
    assert_eq!(names_in(&blobs).len(), 2);

    gate.hang.store(false, Ordering::SeqCst);
    let seq = alice.send_file("garden", &path, Some("resumed"), &mut quiet()).await.unwrap();
    assert_eq!(gate.first_parts.load(Ordering::SeqCst), 2, "the part the server held was not sent again");
    assert_eq!(names_in(&blobs).len(), 2, "the second blob, resumed");
    bob.sync().await.unwrap();
    let (file, _) = bob.attachment("garden", seq).unwrap();
    assert!(names_in(&blobs).contains(&file.blob.to_string()));
    let out = w.dir.path().join("video.mp4");
    bob.save_file("garden", &file, &out, false, &mut quiet()).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == plain);

    alice.send_file("garden", &path, None, &mut quiet()).await.unwrap();
    assert_eq!(gate.first_parts.load(Ordering::SeqCst), 3);
    assert_eq!(names_in(&blobs).len(), 3, "a new upload once the first was sent");
}
