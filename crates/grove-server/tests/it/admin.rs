//! The operator's commands (`grove admin`): against a running server (over its admin socket)
//! and a stopped one (on its database), a blocked key refused everywhere, a deleted room gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use futures_util::{SinkExt, StreamExt};
use grove_server::admin::{run_command, AdminAnswer, AdminRequest};
use grove_store_sqlite::{SqliteOptions, SqliteStore};
use grove_wire::auth::{sha256_hex, sign_request, sign_request_prehashed, HEADER_CONTENT_SHA256};
use grove_wire::auth::{HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use serde_json::{json, Value};
use sha2::Digest;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

const SECRET: &[u8] = b"the garden's secret: MARKER-7f3a9c-the-keys-are-under-the-stone";

/// A server on the SQLite database and key of the data folder `data`, as `grove serve --data`.
async fn serve_folder(data: &Path) -> (Server, grove_server::Config) {
    let mut config = test_config();
    config.server.data_dir = data.to_path_buf();
    config.files.store = data.join("blobs").to_string_lossy().into_owned();
    std::fs::create_dir_all(data).unwrap();
    let store = SqliteStore::open(&data.join("grove.db"), SqliteOptions::default()).unwrap();
    let key = grove_server::load_or_create_key(data).unwrap();
    let s = Server::with_key(config.clone(), Arc::new(store), key);
    s.state.reload_blocklist().await.unwrap();
    (s, config)
}

/// Alice's sender-keys room `garden` with Bob, three messages (one holding [`SECRET`]) and an
/// attachment; a message from Carol waits in Bob's mailbox.
async fn populate(s: &Server) -> (User, User, User) {
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    sk_room(s, &alice, "garden").await;
    post_membership(s, &alice, &alice, "garden", 1, &[&alice, &bob], &[&alice]).await.ok();
    post_app(s, &alice, "garden", 1, b"hello bob").await.ok();
    post_app(s, &bob, "garden", 1, SECRET).await.ok();
    post_app(s, &alice, "garden", 1, b"noted").await.ok();
    alice.post(s, "/v1/rooms/garden/files", json!({"size": 8192})).await.ok();
    register(s, &bob).await;
    carol.post(s, &format!("/v1/mailboxes/{}", bob.id), json!({"body": b64(b"psst")})).await.ok();
    (alice, bob, carol)
}

/// The database's files, concatenated.
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(b) = std::fs::read(data.join(format!("grove.db{suffix}"))) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn admin(config: &grove_server::Config, req: AdminRequest) -> (AdminAnswer, bool) {
    run_command(config.clone(), req).await.unwrap()
}

async fn wait_for(path: &Path, present: bool) {
    for _ in 0..500 {
        if path.exists() == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never {}", path.display(), if present { "appeared" } else { "went away" });
}

/// `grove serve` on the folder: the harness's state served on a real socket (which starts the
/// admin socket too).
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    addr: std::net::SocketAddr,
}

async fn start(s: &Server, config: &grove_server::Config) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(grove_server::run(listener, s.state.clone(), async move {
        let _ = rx.await;
    }));
    wait_for(&grove_server::admin::socket_path(config), true).await;
    Running { stop, task, addr }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    r.task.await.unwrap().unwrap();
}

fn rooms_of(a: &AdminAnswer) -> Vec<Value> {
    let AdminAnswer::Rooms { rooms } = a else { panic!("not a room list: {a:?}") };
    rooms.iter().map(|r| serde_json::to_value(r).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lists_blocks_and_deletes_through_a_running_servers_admin_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (s, config) = serve_folder(&data).await;
    let (alice, bob, _carol) = populate(&s).await;
    let running = start(&s, &config).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(grove_server::admin::socket_path(&config)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the admin socket is the operator's only");
    }

    // rooms, room show, users, stats: what the server holds.
    let (rooms, via_socket) = admin(&config, AdminRequest::Rooms).await;
    assert!(via_socket, "a running server answers on its socket");
    let rooms = rooms_of(&rooms);
    assert_eq!(rooms.len(), 1);
    let g = &rooms[0];
    assert_eq!((g["name"].as_str(), g["mode"].as_str()), (Some("garden"), Some("sender-keys")));
    assert_eq!((g["members"].as_u64(), g["entries"].as_u64()), (Some(2), Some(4)));
    assert!(g["bytes"].as_u64().unwrap() >= SECRET.len() as u64);
    assert_eq!(g["last_activity"].as_i64(), Some(s.now()));
    let (AdminAnswer::Room { room }, _) = admin(&config, AdminRequest::Room { name: "garden".into() }).await else {
        panic!("not a room")
    };
    let mut members = vec![alice.id.to_string(), bob.id.to_string()];
    members.sort();
    let mut listed = room.member_ids.clone();
    listed.sort();
    assert_eq!(listed, members);
    assert_eq!(room.admin_ids, vec![alice.id.to_string()]);
    assert!(run_command(config.clone(), AdminRequest::Room { name: "nowhere".into() }).await.is_err());
    let (AdminAnswer::Users { users }, _) = admin(&config, AdminRequest::Users).await else { panic!() };
    let bob_row = users.iter().find(|u| u.user == bob.id.to_string()).expect("bob is listed");
    assert_eq!((bob_row.rooms, bob_row.mailbox_messages, bob_row.blocked), (1, 1, false));
    let (AdminAnswer::Stats { stats }, _) = admin(&config, AdminRequest::Stats).await else { panic!() };
    assert_eq!((stats.rooms, stats.entries, stats.mailbox_messages, stats.files), (1, 4, 1, 1));

    // block: Bob's requests are refused, and so are deposits to him; unblock lifts it.
    let (a, _) = admin(&config, AdminRequest::Block { user: bob.id.to_string() }).await;
    assert_eq!(a, AdminAnswer::Block { user: bob.id.to_string(), blocked: true, changed: true });
    bob.get(&s, "/v1/rooms/garden/log?after=0").await.err(403, "blocked");
    post_app(&s, &bob, "garden", 1, b"still here?").await.err(403, "blocked");
    alice.post(&s, &format!("/v1/mailboxes/{}", bob.id), json!({"body": b64(b"hi")})).await.err(403, "blocked");
    alice.get(&s, "/v1/rooms/garden/log?after=0").await.ok();
    let (AdminAnswer::Users { users }, _) = admin(&config, AdminRequest::Users).await else { panic!() };
    assert!(users.iter().any(|u| u.user == bob.id.to_string() && u.blocked));
    admin(&config, AdminRequest::Unblock { user: bob.id.to_string() }).await;
    bob.get(&s, "/v1/rooms/garden/log?after=0").await.ok();
    assert!(run_command(config.clone(), AdminRequest::Block { user: "bob".into() }).await.is_err());

    // room delete: the room is gone for its members, with its attachment's record.
    let (a, _) = admin(&config, AdminRequest::DeleteRoom { name: "garden".into() }).await;
    assert_eq!(a, AdminAnswer::Deleted { name: "garden".into(), entries: 4, files: 1 });
    alice.get(&s, "/v1/rooms/garden/log?after=0").await.err(404, "room_not_found");
    post_app(&s, &bob, "garden", 1, b"anyone?").await.err(404, "room_not_found");
    assert!(rooms_of(&admin(&config, AdminRequest::Rooms).await.0).is_empty());
    assert!(!contains(&database_bytes(&data), SECRET), "the deleted room's entries are gone from the files");

    // Every change was logged, in order.
    let log = std::fs::read_to_string(data.join("admin.log")).unwrap();
    let commands: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["request"]["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(commands, ["block", "unblock", "block", "delete_room"]);

    let _ = running.addr;
    stop(running).await;
    wait_for(&grove_server::admin::socket_path(&config), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_server_running_the_operator_acts_on_the_database_and_a_deleted_room_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (s, config) = serve_folder(&data).await;
    let (alice, bob, _carol) = populate(&s).await;
    drop(s);
    assert!(contains(&database_bytes(&data), SECRET), "the message is in the database's files to begin with");

    let (rooms, via_socket) = admin(&config, AdminRequest::Rooms).await;
    assert!(!via_socket, "no server runs: the database itself answers");
    assert_eq!(rooms_of(&rooms)[0]["entries"].as_u64(), Some(4));
    let (AdminAnswer::Stats { stats }, _) = admin(&config, AdminRequest::Stats).await else { panic!() };
    assert_eq!((stats.rooms, stats.entries, stats.users, stats.blocked), (1, 4, 2, 0));
    let (AdminAnswer::Users { users }, _) = admin(&config, AdminRequest::Users).await else { panic!() };
    assert_eq!(users.len(), 2);
    admin(&config, AdminRequest::Block { user: bob.id.to_string() }).await;
    let (a, _) = admin(&config, AdminRequest::DeleteRoom { name: "garden".into() }).await;
    assert_eq!(a, AdminAnswer::Deleted { name: "garden".into(), entries: 4, files: 1 });
    assert!(!contains(&database_bytes(&data), SECRET), "the deleted room's entries are gone from the files");
    assert!(run_command(config.clone(), AdminRequest::DeleteRoom { name: "garden".into() }).await.is_err());

    // The server, started again, knows: Bob is blocked, the room is gone.
    let (s, _) = serve_folder(&data).await;
    bob.get(&s, "/v1/mailbox?after=0").await.err(403, "blocked");
    alice.get(&s, "/v1/rooms/garden").await.err(404, "room_not_found");
    // The name is free again.
    sk_room(&s, &alice, "garden").await;
    assert_eq!(std::fs::read_to_string(data.join("admin.log")).unwrap().lines().count(), 3);

    // A folder with no database is refused, not created.
    let mut elsewhere = config.clone();
    elsewhere.server.data_dir = tmp.path().join("nothing-here");
    assert!(run_command(elsewhere, AdminRequest::Rooms).await.is_err());
    assert!(!tmp.path().join("nothing-here").exists());
}

/// Every signed route, as (method, path, body).
fn signed_routes(alice: &User, blob: &str) -> Vec<(Method, String, Vec<u8>)> {
    let j = |v: Value| v.to_string().into_bytes();
    vec![
        (Method::GET, "/v1/keys".into(), vec![]),
        (Method::POST, "/v1/keys".into(), j(json!({"items": []}))),
        (Method::POST, format!("/v1/keys/{}/claim", alice.id), j(json!({"kind": "olm_one_time"}))),
        (Method::POST, format!("/v1/mailboxes/{}", alice.id), j(json!({"body": b64(b"x")}))),
        (Method::GET, "/v1/mailbox?after=0".into(), vec![]),
        (Method::POST, "/v1/mailbox/ack".into(), j(json!({"up_to": 1}))),
        (Method::POST, "/v1/rooms".into(), j(json!({"name": "mine", "mode": "sender-keys"}))),
        (Method::GET, "/v1/rooms/garden".into(), vec![]),
        (Method::GET, "/v1/rooms/garden/log?after=0".into(), vec![]),
        (Method::POST, "/v1/rooms/garden/log".into(), j(json!({"kind": "application", "epoch": 1, "body": b64(b"x")}))),
        (Method::GET, "/v1/rooms/garden/tree".into(), vec![]),
        (Method::GET, "/v1/rooms/garden/membership".into(), vec![]),
        (Method::POST, "/v1/rooms/garden/files".into(), j(json!({"size": 8192}))),
        (Method::GET, format!("/v1/rooms/garden/files/{blob}"), vec![]),
        (Method::GET, format!("/v1/rooms/garden/files/{blob}/upload"), vec![]),
        (Method::GET, "/v1/push".into(), vec![]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_key_is_refused_on_every_signed_route_and_its_push_connection_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (s, config) = serve_folder(&data).await;
    let (alice, bob, _carol) = populate(&s).await;
    let blob = alice.post(&s, "/v1/rooms/garden/files", json!({"size": 8192})).await.ok()["blob"]
        .as_str()
        .unwrap()
        .to_string();
    let running = start(&s, &config).await;

    // Bob is connected for push when he is blocked: the server tells him and closes.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    s.clock.store(now(), std::sync::atomic::Ordering::SeqCst);
    let h = sign_request(&bob.key, &s.state.public_key(), "GET", "/v1/push", s.now(), &fresh_nonce(), b"");
    let mut req = format!("ws://{}/v1/push", running.addr).into_client_request().unwrap();
    for (k, v) in [
        ("x-grove-key", h.key),
        ("x-grove-timestamp", h.timestamp),
        ("x-grove-nonce", h.nonce),
        ("x-grove-signature", h.signature),
    ] {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(json!({"type": "subscribe", "rooms": [{"room": "garden", "after": 0}]}).to_string().into()))
        .await
        .unwrap();
    admin(&config, AdminRequest::Block { user: bob.id.to_string() }).await;
    let mut told = false;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["error"]["code"] == "blocked" {
                        told = true;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok() && told, "the blocked key's push connection is told and closed");

    // Every signed route refuses Bob; Alice is served as before.
    for (method, path, body) in signed_routes(&alice, &blob) {
        let req: Request<Body> = bob.request(&s, method.clone(), &path, body);
        let r = s.call(req).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "blocked"), "{method} {path}: {}", r.text);
    }
    // An upload part is signed over its body's declared SHA-256.
    let path = format!("/v1/rooms/garden/files/{blob}?offset=0");
    let digest: [u8; 32] = sha2::Sha256::digest([0u8; 16]).into();
    let h = sign_request_prehashed(&bob.key, &s.state.public_key(), "PUT", &path, s.now(), &fresh_nonce(), &digest);
    let put = Request::builder()
        .method(Method::PUT)
        .uri(&path)
        .header(HEADER_KEY, h.key)
        .header(HEADER_TIMESTAMP, h.timestamp)
        .header(HEADER_NONCE, h.nonce)
        .header(HEADER_SIGNATURE, h.signature)
        .header(HEADER_CONTENT_SHA256, sha256_hex(&digest))
        .body(Body::from(vec![0u8; 16]))
        .unwrap();
    s.call(put).await.err(403, "blocked");
    alice.get(&s, "/v1/rooms/garden/log?after=0").await.ok();
    // A new push connection is refused before the upgrade.
    let h = sign_request(&bob.key, &s.state.public_key(), "GET", "/v1/push", s.now(), &fresh_nonce(), b"");
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/push", running.addr))
        .header("x-grove-key", h.key)
        .header("x-grove-timestamp", h.timestamp)
        .header("x-grove-nonce", h.nonce)
        .header("x-grove-signature", h.signature)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "blocked");
    stop(running).await;
    let _: PathBuf = data;
}
