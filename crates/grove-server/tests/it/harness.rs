//! Test harness: a server in memory (driven with `oneshot`) or on 127.0.0.1:0, and users who
//! sign their requests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ed25519_dalek::SigningKey;
use grove_server::{AppState, Config};
use grove_store::{MemoryStore, Store};
use grove_wire::auth::{sign_request, HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use grove_wire::UserId;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const T0: i64 = 1_800_000_000_000;

/// Generous limits so tests hit only the limit they are about.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.limits.user_requests_per_sec = 100_000;
    c.limits.ip_requests_per_sec = 100_000;
    c
}

pub struct Server {
    pub state: AppState,
    pub router: axum::Router,
    pub clock: Arc<AtomicI64>,
}

impl Server {
    pub fn new() -> Self {
        Self::with(test_config(), Arc::new(MemoryStore::new()))
    }

    pub fn with_config(config: Config) -> Self {
        Self::with(config, Arc::new(MemoryStore::new()))
    }

    pub fn with(config: Config, store: Arc<dyn Store>) -> Self {
        Self::with_key(config, store, SigningKey::from_bytes(&[200; 32]))
    }

    /// A server with its own key (as `grove serve` loads it from the data folder).
    pub fn with_key(config: Config, store: Arc<dyn Store>, key: SigningKey) -> Self {
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let state = AppState::with_clock(config, store, key, Arc::new(move || c.load(Ordering::SeqCst)));
        Server { router: grove_server::router(state.clone()), state, clock }
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    pub async fn call(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, json, text: String::from_utf8_lossy(&bytes).into_owned(), retry_after }
    }

    /// An unsigned request.
    pub async fn get(&self, path: &str) -> Resp {
        self.call(Request::get(path).body(Body::empty()).unwrap()).await
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
    pub retry_after: Option<String>,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("<no code>")
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(self.status.is_success(), "expected success, got {} {}", self.status, self.text);
        &self.json
    }

    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> &Value {
        assert_eq!((self.status.as_u16(), self.code()), (status, code), "body: {}", self.text);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {}", self.text);
        &self.json
    }
}

static NONCE: AtomicU64 = AtomicU64::new(0);

pub fn fresh_nonce() -> String {
    format!("nonce-{:016}", NONCE.fetch_add(1, Ordering::Relaxed))
}

#[derive(Clone)]
pub struct User {
    pub key: SigningKey,
    pub id: UserId,
}

impl User {
    pub fn new(seed: u8) -> Self {
        let key = SigningKey::from_bytes(&[seed; 32]);
        User { id: UserId(key.verifying_key().to_bytes()), key }
    }

    /// A request signed now, with a fresh nonce.
    pub fn request(&self, server: &Server, method: Method, path: &str, body: Vec<u8>) -> Request<Body> {
        self.request_at(server, server.now(), &fresh_nonce(), method, path, body)
    }

    pub fn request_at(
        &self,
        server: &Server,
        ts: i64,
        nonce: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Request<Body> {
        let h = sign_request(&self.key, &server.state.public_key(), method.as_str(), path, ts, nonce, &body);
        Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .header(HEADER_KEY, h.key)
            .header(HEADER_TIMESTAMP, h.timestamp)
            .header(HEADER_NONCE, h.nonce)
            .header(HEADER_SIGNATURE, h.signature)
            .body(Body::from(body))
            .unwrap()
    }

    pub async fn get(&self, server: &Server, path: &str) -> Resp {
        server.call(self.request(server, Method::GET, path, Vec::new())).await
    }

    pub async fn post(&self, server: &Server, path: &str, body: Value) -> Resp {
        server.call(self.request(server, Method::POST, path, body.to_string().into_bytes())).await
    }

    pub async fn post_raw(&self, server: &Server, path: &str, body: &[u8]) -> Resp {
        server.call(self.request(server, Method::POST, path, body.to_vec())).await
    }
}

pub fn b64(bytes: &[u8]) -> String {
    grove_wire::b64::encode(bytes)
}

/// Creates a sender-keys room owned by `owner`.
pub async fn sk_room(server: &Server, owner: &User, name: &str) {
    owner.post(server, "/v1/rooms", serde_json::json!({"name": name, "mode": "sender-keys"})).await.ok();
}

/// Appends an application entry.
pub async fn post_app(server: &Server, user: &User, room: &str, epoch: u64, body: &[u8]) -> Resp {
    user.post(
        server,
        &format!("/v1/rooms/{room}/log"),
        serde_json::json!({"kind": "application", "epoch": epoch, "body": b64(body)}),
    )
    .await
}

/// A room policy in which `users` are owners.
pub fn owners(users: &[&User]) -> grove_wire::policy::RoomPolicy {
    grove_wire::policy::RoomPolicy {
        roles: users.iter().map(|u| (u.id, grove_wire::policy::Role::Owner)).collect(),
        ..Default::default()
    }
}

/// Posts a membership version signed by `admin`, with `admins` as the room's owners.
pub async fn post_membership(
    server: &Server,
    poster: &User,
    admin: &User,
    room: &str,
    version: u64,
    members: &[&User],
    admins: &[&User],
) -> Resp {
    let m = grove_wire::membership::SignedMembership::sign(
        &admin.key,
        room,
        version,
        members.iter().map(|u| u.id).collect(),
        owners(admins),
    );
    poster
        .post(
            server,
            &format!("/v1/rooms/{room}/log"),
            serde_json::json!({"kind": "membership", "epoch": version, "body": b64(&serde_json::to_vec(&m).unwrap())}),
        )
        .await
}

/// The bodies of a log page.
pub fn bodies(page: &Value) -> Vec<Vec<u8>> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| grove_wire::b64::decode(e["body"].as_str().unwrap()).unwrap())
        .collect()
}

pub fn seqs(page: &Value) -> Vec<u64> {
    page["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// `user` makes themselves known to the server the way a client does when it first signs in:
/// by publishing a last-resort key item (deposits go only to users the server knows).
pub async fn register(server: &Server, user: &User) {
    let item = serde_json::json!({"kind": "olm_fallback", "last_resort": true, "data": b64(&user.id.0)});
    user.post(server, "/v1/keys", serde_json::json!({"items": [item]})).await.ok();
}
