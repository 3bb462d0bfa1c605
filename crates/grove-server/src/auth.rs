//! Request authentication: the signed-request extractors and the per-IP rate limit.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use grove_wire::auth::{self, HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use grove_wire::UserId;
use serde::de::DeserializeOwned;
use sha2::Digest;

use crate::error::{AppError, AuthRefusal, LimitRefusal, RequestRefusal};
use crate::state::AppState;

/// A request with no body (GET, WebSocket upgrade) signed by `0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authed(pub UserId);

/// A signed request whose JSON body parsed as `T`.
#[derive(Debug)]
pub(crate) struct Signed<T> {
    /// The signer.
    pub user: UserId,
    /// The parsed body.
    pub body: T,
}

/// The one value of a signing header: missing, repeated or non-text headers are refused (a
/// second value would be one the signature does not cover).
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, AppError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthRefusal::MissingHeader { name })?;
    if values.next().is_some() {
        return Err(AuthRefusal::RepeatedHeader { name }.into());
    }
    value.to_str().map_err(|_| AuthRefusal::HeaderNotText { name }.into())
}

/// Unix milliseconds written the one way the signing format writes them: decimal digits with
/// no sign, no leading zero and no space (so one timestamp has one signed spelling).
fn parse_timestamp(text: &str) -> Option<i64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

/// Whether `ts` is within `skew_ms` of `now`, without overflow whatever the client sent.
fn fresh(now: i64, ts: i64, skew_ms: u64) -> bool {
    now.checked_sub(ts).is_some_and(|d| d.unsigned_abs() <= skew_ms)
}

/// Checks the four signing headers against the request; answers the signer.
pub(crate) fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<UserId, AppError> {
    authenticate_hashed(state, method, uri, headers, &sha2::Sha256::digest(body).into())
}

/// [`authenticate`] for a body known by its SHA-256 (a streamed body the caller still reads and
/// checks against it).
pub(crate) fn authenticate_hashed(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_sha256: &[u8; 32],
) -> Result<UserId, AppError> {
    let user: UserId = header(headers, HEADER_KEY)?.parse().map_err(|_| AuthRefusal::KeyNotUserId)?;
    let ts: i64 = parse_timestamp(header(headers, HEADER_TIMESTAMP)?).ok_or(AuthRefusal::TimestampNotMillis)?;
    let nonce = header(headers, HEADER_NONCE)?;
    if !auth::nonce_is_valid(nonce) {
        return Err(AuthRefusal::InvalidNonce.into());
    }
    let signature = header(headers, HEADER_SIGNATURE)?;
    let now = state.now();
    crate::quota::prune_if_due(state, now);
    let skew_secs = state.0.config.limits.clock_skew_secs;
    let skew = skew_secs.saturating_mul(1000);
    if !fresh(now, ts, skew) {
        return Err(AuthRefusal::StaleTimestamp { ts, skew_secs, now }.into());
    }
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let key = state.0.keys.get(&user).ok_or(AuthRefusal::InvalidKey)?;
    auth::verify_request_key_prehashed(
        &key,
        signature,
        &state.0.public_key,
        method.as_str(),
        pq,
        ts,
        nonce,
        body_sha256,
    )
    .map_err(|source| AuthRefusal::SignatureRejected { source })?;
    // After the signature: only the key's holder learns that it is blocked.
    if state.0.blocked.contains(&user) {
        return Err(AuthRefusal::Blocked.into());
    }
    user_rate(state, &user)?;
    let horizon = now.saturating_sub(i64::try_from(skew).unwrap_or(i64::MAX));
    if !state.0.nonces.insert(user, nonce, ts, horizon) {
        return Err(AuthRefusal::NonceReused.into());
    }
    Ok(user)
}

/// Counts one request of `user` against its rate limit: `rate_limited` once it is spent.
pub(crate) fn user_rate(state: &AppState, user: &UserId) -> Result<(), AppError> {
    state.0.user_limiter.check_key(user).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        rate_limited(wait.as_secs() + 1)
    })
}

fn rate_limited(secs: u64) -> AppError {
    LimitRefusal::TooManyRequests { secs }.into()
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.method, &parts.uri, &parts.headers, b"").map(Authed)
    }
}

/// The client's address as the per-IP rate limit sees it ([`client_ip`]); `None` on a Unix
/// socket, whose connections carry none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(ClientIp(peer.map(|ip| client_ip(ip, &parts.headers, &state.0.config.server.trusted_proxies))))
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Signed<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        json_content_type(&parts.headers)?;
        let limit = usize::try_from(state.0.config.limits.max_body_bytes).unwrap_or(usize::MAX);
        let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| body_error(e, limit))?;
        let user = authenticate(state, &parts.method, &parts.uri, &parts.headers, &bytes)?;
        let body = serde_json::from_slice(&bytes).map_err(|source| RequestRefusal::NotJson { source })?;
        Ok(Signed { user, body })
    }
}

/// Refuses a body sent as anything but JSON. A missing `Content-Type` is taken as JSON (the
/// signature covers the body, not the header).
fn json_content_type(headers: &HeaderMap) -> Result<(), AppError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else { return Ok(()) };
    let essence = value.to_str().ok().and_then(|v| v.split(';').next()).map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        Ok(())
    } else {
        Err(RequestRefusal::NotJsonContentType.into())
    }
}

/// Why a request body could not be read, as an answer: too long (413), too slow (408), or
/// not valid HTTP framing (400; a broken chunked encoding, a connection cut mid-body).
pub(crate) fn body_error(e: axum::Error, limit: usize) -> AppError {
    if crate::serve::caused_by::<http_body_util::LengthLimitError>(&e) {
        RequestRefusal::BodyTooLarge { limit }.into()
    } else if crate::serve::caused_by::<crate::serve::BodyTimeout>(&e) {
        RequestRefusal::BodyTooSlow.into()
    } else {
        RequestRefusal::BodyUnreadable { source: e }.into()
    }
}

/// Per-IP rate limit, for every request (signed or not).
pub(crate) async fn ip_rate_limit(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        // Unsigned requests from many addresses add buckets too.
        crate::quota::prune_if_due(&state, state.now());
        let ip = client_ip(addr.ip(), req.headers(), &state.0.config.server.trusted_proxies);
        if let Err(not_until) = state.0.ip_limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return rate_limited(wait.as_secs() + 1).into_response();
        }
    }
    next.run(req).await
}

/// The client's address for the per-IP rate limit: the connection's `peer`, unless `peer` is a
/// trusted proxy, in which case the rightmost `X-Forwarded-For` address that is not itself a
/// trusted proxy (each proxy appends the address it received the request from, so everything
/// to the left of that entry was written by the client and proves nothing). A header that is
/// missing, not text, or whose entry at that place is not an address leaves `peer`.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else { return peer };
        hops.extend(value.split(',').map(str::trim));
    }
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = forwarded(&["203.0.113.7"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &[]), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &[ip("127.0.0.1")]), ip("198.51.100.1"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_a_spoofed_prefix_is_ignored() {
        let proxy = ip("127.0.0.1");
        let lb = ip("10.0.0.5");
        let trusted = [proxy, lb];
        // The proxy appended the client it saw; what the client wrote itself stays to the left.
        let h = forwarded(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("203.0.113.7"));
        // Two proxies in a row, and the header split over two lines.
        let h = forwarded(&["garbage, 203.0.113.7", "10.0.0.5"]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("203.0.113.7"));
        let h = forwarded(&["2001:db8::1"]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn a_missing_or_broken_header_leaves_the_proxy() {
        let proxy = ip("127.0.0.1");
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
        assert_eq!(client_ip(proxy, &forwarded(&["not-an-address"]), &[proxy]), proxy);
        assert_eq!(client_ip(proxy, &forwarded(&["127.0.0.1"]), &[proxy]), proxy);
        assert_eq!(client_ip(proxy, &forwarded(&[""]), &[proxy]), proxy);
    }
}
