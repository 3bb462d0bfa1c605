//! Two server instances on one PostgreSQL database, as behind a load balancer: commits are
//! ordered across them, each one's cached room state follows the other's commits, a subscriber
//! on one gets the entries appended through the other (also after its listener connection was
//! cut), and one-time keys are handed out once.
//!
//! Every test makes its own database through the admin URL in `GROVE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and drops it. Without a server they fail and
//! say what to set; `cargo test -- --skip postgresql` leaves them out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use grove_store_postgres::PostgresStore;
use grove_wire::auth::sign_request;
use mls_rs::MlsMessage;
use serde_json::{json, Value};
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::mls::{add_member, bytes, client, mls_room, post_handshake};

/// A fresh database, dropped at the end.
pub(crate) struct TestDb {
    admin: String,
    name: String,
    pub(crate) url: String,
}

fn admin_url() -> String {
    std::env::var("GROVE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

async fn admin_sql(admin: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(admin, NoTls).await.unwrap_or_else(|e| {
        panic!(
            "these tests need PostgreSQL: cannot connect to {admin} ({e}). Start it, set GROVE_TEST_POSTGRES to an \
             admin URL, or leave them out with `cargo test -- --skip postgresql`"
        )
    });
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = conn.await;
}

impl TestDb {
    pub(crate) async fn create() -> TestDb {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let admin = admin_url();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!(
            "grove_srv_{}_{}_{nanos:x}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        admin_sql(&admin, &format!("CREATE DATABASE {name}")).await;
        let mut config: tokio_postgres::Config = admin.parse().expect("admin URL parses");
        config.dbname(&name);
        let url = config_url(&config);
        TestDb { admin, name, url }
    }

    /// Runs a query on this database; answers how many rows it returned.
    async fn rows(&self, sql: &str) -> usize {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.expect("connect");
        let conn = tokio::spawn(conn);
        let n = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).len();
        drop(client);
        let _ = conn.await;
        n
    }

    /// Two instances: each its own store (connection, writer, listener) on this database.
    async fn two_instances(&self) -> (Server, Server) {
        let a = PostgresStore::connect(&self.url).await.expect("connect instance A");
        let b = PostgresStore::connect(&self.url).await.expect("connect instance B");
        (Server::with(test_config(), Arc::new(a)), Server::with(test_config(), Arc::new(b)))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A thread of its own: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    let conn = tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    drop(client);
                    let _ = conn.await;
                }
            })
        })
        .join();
    }
}

/// A config as a key=value string.
fn config_url(c: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = vec![format!("dbname={}", q(c.get_dbname().unwrap_or("postgres")))];
    if let Some(Host::Tcp(h)) = c.get_hosts().first() {
        parts.push(format!("host={}", q(h)));
    }
    if let Some(Host::Unix(p)) = c.get_hosts().first() {
        parts.push(format!("host={}", q(&p.display().to_string())));
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = c.get_user() {
        parts.push(format!("user={}", q(u)));
    }
    if let Some(pw) = c.get_password() {
        parts.push(format!("password={}", q(&String::from_utf8_lossy(pw))));
    }
    parts.join(" ")
}

/// Serves `server`'s state on a socket; answers its address.
async fn serve(server: &Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grove_server::run(listener, server.state.clone(), std::future::pending()));
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A push connection for `user` to the instance at `addr` (whose state is `server`'s).
async fn push(server: &Server, addr: std::net::SocketAddr, user: &User, subscribe: Value) -> Ws {
    let h = sign_request(&user.key, &server.state.public_key(), "GET", "/v1/push", server.now(), &fresh_nonce(), b"");
    let mut req = format!("ws://{addr}/v1/push").into_client_request().unwrap();
    let hs = req.headers_mut();
    hs.insert("x-grove-key", h.key.parse().unwrap());
    hs.insert("x-grove-timestamp", h.timestamp.parse().unwrap());
    hs.insert("x-grove-nonce", h.nonce.parse().unwrap());
    hs.insert("x-grove-signature", h.signature.parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    ws
}

/// The next entry's sequence number on `ws`.
async fn next_seq(ws: &mut Ws) -> u64 {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an entry within 10 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(t) = msg {
            let ev: Value = serde_json::from_str(t.as_str()).unwrap();
            if ev["type"] == "live" {
                continue;
            }
            assert_eq!(ev["type"], json!("entry"), "{ev}");
            return ev["entry"]["seq"].as_u64().unwrap();
        }
    }
}

/// Alice, Bob and Dave are in an MLS room made through A; 50 commits of Dave's at the same
/// epoch, half posted to A and half to B, race: exactly one is accepted, the 49 others get
/// `wrong_epoch`, and both instances then report the same epoch. Bob commits the next epoch
/// through B and Alice the one after through A: each instance's cached group state followed
/// the other's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_fifty_conflicting_commits_across_two_instances_one_wins() {
    let db = TestDb::create().await;
    let (a, b) = db.two_instances().await;
    let (alice, bob, dave) = (User::new(1), User::new(2), User::new(4));
    let (ac, bc, dc) = (client(&alice), client(&bob), client(&dave));
    let mut ag = mls_room(&a, &alice, &ac, "contested").await;
    let mut bg = add_member(&a, &alice, &mut ag, &bc, "contested").await;
    // B loads the room (epoch 1) before it moves on through A.
    assert_eq!(bob.get(&b, "/v1/rooms/contested").await.ok()["epoch"], json!(1));
    let mut dg = add_member(&a, &alice, &mut ag, &dc, "contested").await;
    let log = bob.get(&b, "/v1/rooms/contested/log?after=1").await;
    bg.process_incoming_message(MlsMessage::from_bytes(&bodies(log.ok())[0]).unwrap()).unwrap();
    assert_eq!(bg.current_epoch(), 2);

    let commits: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            let c = dg.commit(vec![]).unwrap();
            dg.clear_pending_commit();
            bytes(&c.commit_message)
        })
        .collect();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for (n, body) in commits.into_iter().enumerate() {
        let server = if n % 2 == 0 { a.clone() } else { b.clone() };
        let dave = dave.clone();
        tasks.push(tokio::spawn(async move {
            let r = post_handshake(&server, &dave, "contested", "commit", 2, &body).await;
            (body, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (body, r) = t.await.unwrap();
        if r.status.is_success() {
            winners.push(body);
        } else {
            let e = r.err(409, "wrong_epoch");
            assert_eq!(e["current_epoch"], json!(3), "{e}");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one commit wins");
    for s in [&a, &b] {
        assert_eq!(alice.get(s, "/v1/rooms/contested").await.ok()["epoch"], json!(3));
    }

    // Alice and Bob apply the winner from the log, as clients do, then move the room on, each
    // through the other instance than the last commit's.
    let log = bob.get(&b, "/v1/rooms/contested/log?after=2").await;
    assert_eq!(bodies(log.ok()), winners);
    let winner = MlsMessage::from_bytes(&winners[0]).unwrap();
    ag.process_incoming_message(winner.clone()).unwrap();
    bg.process_incoming_message(winner).unwrap();

    let c = bg.commit(vec![]).unwrap();
    post_handshake(&b, &bob, "contested", "commit", 3, &bytes(&c.commit_message)).await.ok();
    bg.apply_pending_commit().unwrap();
    ag.process_incoming_message(c.commit_message).unwrap();
    let c = ag.commit(vec![]).unwrap();
    post_handshake(&a, &alice, "contested", "commit", 4, &bytes(&c.commit_message)).await.ok();
    ag.apply_pending_commit().unwrap();
    bg.process_incoming_message(c.commit_message).unwrap();
    // B learns of A's commit from A's notification, a moment later.
    for s in [&a, &b] {
        eventually_epoch(s, &alice, "contested", 5).await;
    }
    // An application message of the new epoch is accepted by either.
    let m = bg.encrypt_application_message(b"through b", vec![]).unwrap();
    post_handshake(&b, &bob, "contested", "application", 5, &bytes(&m)).await.ok();
    let m = ag.encrypt_application_message(b"through a", vec![]).unwrap();
    post_handshake(&a, &alice, "contested", "application", 5, &bytes(&m)).await.ok();
}

/// Waits (up to 2 s) until `s` reports the room at `epoch`.
async fn eventually_epoch(s: &Server, user: &User, room: &str, epoch: u64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let got = user.get(s, &format!("/v1/rooms/{room}")).await.ok()["epoch"].clone();
        if got == json!(epoch) {
            return;
        }
        assert!(Instant::now() < deadline, "still at epoch {got}, not {epoch}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Carol is added to a sender-keys room through A while B has the room loaded: her first
/// message through B is accepted (B reloads instead of answering `not_member`); once she is
/// removed through A, B refuses her posts and serves her the log up to her removal only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_membership_changed_on_one_instance_holds_on_the_other() {
    let db = TestDb::create().await;
    let (a, b) = db.two_instances().await;
    let (alice, carol) = (User::new(1), User::new(3));
    sk_room(&a, &alice, "club").await;
    post_app(&b, &alice, "club", 0, b"b loads the room").await.ok();
    post_membership(&a, &alice, &alice, "club", 1, &[&alice, &carol], &[&alice]).await.ok();
    post_app(&b, &carol, "club", 1, b"hello from carol").await.ok();
    post_membership(&a, &alice, &alice, "club", 2, &[&alice], &[&alice]).await.ok();
    post_app(&b, &carol, "club", 2, b"let me in").await.err(403, "not_member");
    assert_eq!(seqs(carol.get(&b, "/v1/rooms/club/log").await.ok()), [1, 2, 3, 4]);
    post_app(&a, &alice, "club", 2, b"after carol").await.ok();
    assert_eq!(carol.get(&b, "/v1/rooms/club/log?after=4").await.err(403, "not_member")["head"], json!(4));
    // A stale membership version is refused on B with the current version.
    let r = post_membership(&b, &alice, &alice, "club", 2, &[&alice, &carol], &[&alice]).await;
    assert_eq!(r.err(409, "membership_version")["current_epoch"], json!(2));
}

/// A push subscriber on B gets every entry appended through A, in order, with no gap and no
/// duplicate, while A's writers run concurrently; a long-poll on B wakes for an entry appended
/// through A. Then both instances' listener connections are cut (as a network failure would):
/// entries appended meanwhile still reach the subscriber, once the listener reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_a_push_subscriber_on_b_gets_as_entries_in_order() {
    let db = TestDb::create().await;
    let (a, b) = db.two_instances().await;
    let alice = User::new(1);
    sk_room(&a, &alice, "feed").await;
    let addr_b = serve(&b).await;
    let mut ws = push(&b, addr_b, &alice, json!({"type": "subscribe", "rooms": [{"room": "feed", "after": 0}]})).await;
    // The subscription is live once the (empty) backlog is read; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let a = Arc::new(a);
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let (a, alice) = (a.clone(), alice.clone());
            tokio::spawn(async move {
                for n in 0..50u32 {
                    post_app(&a, &alice, "feed", 0, format!("w{w} n{n}").as_bytes()).await.ok();
                }
            })
        })
        .collect();
    for want in 1..=200 {
        assert_eq!(next_seq(&mut ws).await, want, "entries arrive in order, once each");
    }
    for w in writers {
        w.await.unwrap();
    }

    // Long-poll on B for the next entry; it is appended through A.
    let waiter = {
        let b_state = b.state.clone();
        let alice = alice.clone();
        let clock = b.clock.clone();
        tokio::spawn(async move {
            let b = Server { router: grove_server::router(b_state.clone()), state: b_state, clock };
            let started = Instant::now();
            let page = alice.get(&b, "/v1/rooms/feed/log?after=200&wait=10").await;
            (started.elapsed(), seqs(page.ok()))
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    post_app(&a, &alice, "feed", 0, b"for the long-poll").await.ok();
    let (took, got) = waiter.await.unwrap();
    assert_eq!(got, vec![201]);
    assert!(took < Duration::from_secs(5), "the long-poll waited {took:?}: it was not woken");
    assert_eq!(next_seq(&mut ws).await, 201);

    // Cut every listener connection of this database; append while they reconnect.
    let cut = db
        .rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'grove-listener' AND datname = current_database()",
        )
        .await;
    assert_eq!(cut, 2, "one listener per instance");
    for n in 0..20u32 {
        post_app(&a, &alice, "feed", 0, format!("during the outage {n}").as_bytes()).await.ok();
    }
    for want in 202..=221 {
        assert_eq!(next_seq(&mut ws).await, want, "nothing lost while the listener was down");
    }
}

/// Bob publishes 20 one-time KeyPackages and a last-resort one; 40 claims race, split across
/// both instances: each one-time item is handed out exactly once, the rest get the last resort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_one_time_keys_are_handed_out_once_across_instances() {
    let db = TestDb::create().await;
    let (a, b) = db.two_instances().await;
    let bob = User::new(2);
    let mut items: Vec<Value> = (0..20)
        .map(|n| json!({"kind": "mls_key_package", "last_resort": false, "data": b64(format!("kp{n}").as_bytes())}))
        .collect();
    items.push(json!({"kind": "mls_key_package", "last_resort": true, "data": b64(b"last")}));
    bob.post(&a, "/v1/keys", json!({"items": items})).await.ok();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let path = format!("/v1/keys/{}/claim", bob.id);
    let tasks: Vec<_> = (0..40u8)
        .map(|n| {
            let s = if n % 2 == 0 { a.clone() } else { b.clone() };
            let path = path.clone();
            tokio::spawn(async move { User::new(100 + n).post(&s, &path, json!({"kind": "mls_key_package"})).await })
        })
        .collect();
    let mut one_time = BTreeSet::new();
    let mut last_resort = 0;
    for t in tasks {
        let r = t.await.unwrap();
        let data = r.ok()["data"].as_str().unwrap().to_string();
        if r.json["last_resort"] == json!(true) {
            last_resort += 1;
        } else {
            assert!(one_time.insert(data), "a one-time key was handed out twice");
        }
    }
    assert_eq!((one_time.len(), last_resort), (20, 20));
    let counts = bob.get(&b, "/v1/keys").await;
    assert_eq!(counts.ok()["counts"], json!([{"kind": "mls_key_package", "one_time": 0, "last_resort": true}]));
}

/// A deposit through A wakes a mailbox long-poll on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_a_deposit_through_a_wakes_a_mailbox_reader_on_b() {
    let db = TestDb::create().await;
    let (a, b) = db.two_instances().await;
    let (alice, bob) = (User::new(1), User::new(2));
    register(&b, &bob).await;
    let (b_state, clock) = (b.state.clone(), b.clock.clone());
    let reader = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let b = Server { router: grove_server::router(b_state.clone()), state: b_state, clock };
            let started = Instant::now();
            let page = bob.get(&b, "/v1/mailbox?after=0&wait=10").await;
            (started.elapsed(), bodies(page.ok()))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.post(&a, &format!("/v1/mailboxes/{}", bob.id), json!({"body": b64(b"an invitation")})).await.ok();
    let (took, got) = reader.await.unwrap();
    assert_eq!(got, vec![b"an invitation".to_vec()]);
    assert!(took < Duration::from_secs(5), "the mailbox reader waited {took:?}: it was not woken");
}

/// The operator acts through instance A (`grove admin` on A's socket): B, which has the room
/// loaded, forgets it at the deletion's announcement and answers `room_not_found`; a key blocked
/// through A is refused by B once B re-reads the blocklist (every 5 s while serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_a_room_deleted_and_a_key_blocked_through_one_instance_hold_on_the_other() {
    use grove_server::admin::{execute, AdminAnswer, AdminRequest};
    let db = TestDb::create().await;
    let (a, b) = db.two_instances().await;
    let (alice, bob) = (User::new(1), User::new(2));
    sk_room(&a, &alice, "club").await;
    post_membership(&a, &alice, &alice, "club", 1, &[&alice, &bob], &[&alice]).await.ok();
    post_app(&b, &bob, "club", 1, b"b loads the room").await.ok();

    let deleted = execute(&a.state, AdminRequest::DeleteRoom { name: "club".into() }).await.unwrap();
    assert!(matches!(deleted, AdminAnswer::Deleted { entries: 2, .. }), "{deleted:?}");
    alice.get(&a, "/v1/rooms/club/log?after=0").await.err(404, "room_not_found");
    let started = Instant::now();
    loop {
        let r = bob.get(&b, "/v1/rooms/club/log?after=0").await;
        if r.status == 404 {
            r.err(404, "room_not_found");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "B still serves the deleted room: {}", r.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    post_app(&b, &bob, "club", 1, b"anyone?").await.err(404, "room_not_found");

    execute(&a.state, AdminRequest::Block { user: bob.id.to_string() }).await.unwrap();
    bob.get(&a, "/v1/mailbox?after=0").await.err(403, "blocked");
    b.state.reload_blocklist().await.unwrap();
    bob.get(&b, "/v1/mailbox?after=0").await.err(403, "blocked");
    let AdminAnswer::Users { users } = execute(&b.state, AdminRequest::Users).await.unwrap() else {
        panic!("not a user list")
    };
    assert!(users.iter().any(|u| u.user == bob.id.to_string() && u.blocked), "B's view of the database agrees");
}
