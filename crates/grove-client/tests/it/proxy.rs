//! The forwarding half of the tests' proxies in front of a server: each test's proxy decides
//! what to do with a request (refuse it, cut it, hold it) and forwards the rest with [`pass`].

use axum::body::Body;
use axum::http::request::Parts;
use axum::response::Response;
use reqwest::header::HeaderMap;

/// Forwards a request to `upstream` and answers its status, headers and body.
pub async fn pass(http: &reqwest::Client, upstream: &str, parts: &Parts, body: Body) -> (u16, HeaderMap, Vec<u8>) {
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
    let bytes = axum::body::to_bytes(body, 1 << 26).await.unwrap();
    let mut rb = http.request(parts.method.clone(), format!("{upstream}{path}"));
    for (k, v) in parts.headers.iter() {
        if k != "host" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(bytes).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

/// A response with this status, these headers and this body.
pub fn respond(status: u16, headers: &HeaderMap, body: Vec<u8>) -> Response {
    let mut out = Response::builder().status(status);
    for (k, v) in headers {
        out = out.header(k, v);
    }
    out.body(Body::from(body)).unwrap()
}

/// Serves `app` on a free port of 127.0.0.1; answers its URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
