//! The OpenAPI document (`openapi.json`, served at `/v1/openapi.json`) against the code: it is a
//! well-formed OpenAPI 3.1 document, it documents exactly the routes the router registers, the
//! server serves it verbatim, it knows every error code with the right HTTP status, every
//! integer has its bounds, and every base64 field's `pattern` accepts exactly what the server's
//! decoder does. `.ci/schemathesis` checks it against a running server (docs/testing.md).

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use grove_wire::ErrorCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const LIB_RS: &str = include_str!("../src/lib.rs");
const ROUTES_RS: &str = include_str!("../src/routes.rs");
const PUSH_RS: &str = include_str!("../src/push.rs");
const FILES_RS: &str = include_str!("../src/files.rs");
const ERROR_RS: &str = include_str!("../../grove-wire/src/error.rs");

/// The HTTP methods a path item may hold.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn doc() -> Value {
    serde_json::from_str(grove_server::OPENAPI).expect("openapi.json is not valid JSON")
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("path item {path} is not an object"));
        for (method, op) in item {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

/// Resolves a local reference such as `#/components/schemas/Entry`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Calls `f` on every string value under `v`, with the key it is stored under (if any).
fn walk_strings(v: &Value, key: Option<&str>, f: &mut impl FnMut(Option<&str>, &str)) {
    match v {
        Value::String(s) => f(key, s),
        Value::Array(items) => items.iter().for_each(|i| walk_strings(i, key, f)),
        Value::Object(map) => map.iter().for_each(|(k, i)| walk_strings(i, Some(k), f)),
        _ => {}
    }
}

/// The `.route("PATH", method(handler).method(handler))` calls of `router` in lib.rs:
/// path → method → handler name.
fn registered_routes() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut routes = BTreeMap::new();
    let mut calls = 0;
    for (start, _) in LIB_RS.match_indices(".route(\"") {
        calls += 1;
        let rest = &LIB_RS[start + ".route(\"".len()..];
        let end = rest.find('"').expect("unterminated route path");
        let path = rest[..end].to_string();
        let mut s = rest[end + 1..].trim_start().strip_prefix(',').expect("`,` after the route path").trim_start();
        let mut methods = BTreeMap::new();
        loop {
            let open = s.find('(').expect("`method(handler)` after the route path");
            let method = s[..open].trim().to_string();
            assert!(METHODS.contains(&method.as_str()), "route {path}: unexpected method router `{method}`");
            // The handler runs to the matching parenthesis.
            let mut depth = 0;
            let mut close = None;
            for (i, c) in s[open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(open + i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let close = close.expect("unbalanced parentheses in a route");
            let handler = s[open + 1..close].trim();
            let handler = handler.rsplit("::").next().unwrap_or(handler).to_string();
            assert!(methods.insert(method.clone(), handler).is_none(), "route {path}: {method} twice");
            s = s[close + 1..].trim_start();
            match s.strip_prefix('.') {
                Some(next) => s = next.trim_start(),
                None => break,
            }
        }
        assert!(s.starts_with(')'), "route {path}: could not parse its method routers");
        assert!(routes.insert(path.clone(), methods).is_none(), "route {path} registered twice");
    }
    assert!(calls > 10, "found only {calls} routes in lib.rs: has `router` changed shape?");
    routes
}

/// The error codes by name, from the `as_str` arms of grove-wire's `ErrorCode`.
fn error_codes() -> BTreeMap<String, ErrorCode> {
    let start = ERROR_RS.find("pub fn as_str(self)").expect("ErrorCode::as_str in grove-wire");
    let body = &ERROR_RS[start..];
    let body = &body[..body.find("\n    }\n").expect("end of as_str")];
    let mut codes = BTreeMap::new();
    for line in body.lines() {
        let Some((variant, name)) = line.split_once("=>") else { continue };
        let name = name.trim().trim_end_matches(',').trim_matches('"').to_string();
        let code: ErrorCode = serde_json::from_value(Value::String(name.clone()))
            .unwrap_or_else(|e| panic!("{} => {name:?} does not deserialize: {e}", variant.trim()));
        assert_eq!(code.as_str(), name);
        assert!(codes.insert(name.clone(), code).is_none(), "{name} twice in as_str");
    }
    assert!(codes.len() > 20, "found only {} error codes in as_str", codes.len());
    codes
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3.1"), "openapi is {version}, not 3.1.x");
    assert_eq!(doc["info"]["title"], "grove");
    assert!(doc["info"]["version"].is_string());
    assert!(doc["components"]["schemas"].is_object());

    // `$ref`s, and component pointers quoted in descriptions (the push messages).
    let mut refs = Vec::new();
    walk_strings(&doc, None, &mut |key, s| {
        if key == Some("$ref") {
            refs.push(s.to_string());
        } else {
            for (i, _) in s.match_indices("#/components/") {
                let tail = &s[i..];
                let in_pointer = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '#' | '_');
                let end = tail.find(|c: char| !in_pointer(c)).unwrap_or(tail.len());
                refs.push(tail[..end].to_string());
            }
        }
    });
    assert!(refs.len() > 50, "only {} references: is the walk broken?", refs.len());
    for r in &refs {
        assert!(r.starts_with("#/components/"), "{r} is not a local component reference");
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
    let push = &doc["paths"]["/v1/push"]["get"]["description"];
    for schema in ["PushRequest", "PushEvent"] {
        let pointer = format!("#/components/schemas/{schema}");
        assert!(push.as_str().is_some_and(|d| d.contains(&pointer)), "the push operation does not point to {pointer}");
    }

    // Every operation is complete, and every `{param}` of its path is declared.
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_string()), "operationId {id} used twice");
        assert!(op["summary"].is_string(), "{method} {path}: no summary");
        assert!(op["security"].is_array(), "{method} {path}: says nothing about security");
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(responses.keys().any(|s| s.starts_with('1') || s.starts_with('2')), "{method} {path}: no success");
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p.get("$ref").and_then(|r| resolve(&doc, r.as_str()?)).unwrap_or(p)).collect())
            .unwrap_or_default();
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            assert!(
                params.iter().any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true),
                "{method} {path}: path parameter {name} is not declared"
            );
        }
        for p in &params {
            if p["in"] == "path" {
                let name = p["name"].as_str().unwrap_or_default();
                assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: declares path parameter {name}");
            }
        }
    }
}

#[test]
fn every_route_is_documented_with_its_methods_and_nothing_else() {
    let doc = doc();
    let registered: BTreeMap<String, BTreeSet<String>> =
        registered_routes().into_iter().map(|(path, methods)| (path, methods.into_keys().collect())).collect();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, method, _) in operations(&doc) {
        documented.entry(path).or_default().insert(method);
    }
    for (path, methods) in &registered {
        match documented.get(path) {
            None => panic!("route {path} ({methods:?}) is not documented"),
            Some(d) => assert_eq!(d, methods, "route {path}: documented methods differ from the router's"),
        }
    }
    for path in documented.keys() {
        assert!(registered.contains_key(path), "{path} is documented but not routed");
    }
}

/// Whether handler `name` (in routes.rs, push.rs or files.rs) extracts a signed request.
fn handler_is_signed(name: &str) -> bool {
    let needle = format!("async fn {name}(");
    let src = [ROUTES_RS, PUSH_RS, FILES_RS]
        .into_iter()
        .find_map(|src| src.find(&needle).map(|i| &src[i..]))
        .unwrap_or_else(|| panic!("handler {name} not found in routes.rs, push.rs or files.rs"));
    let signature = &src[..src.find('{').expect("handler body")];
    signature.contains("Authed") || signature.contains("Signed<") || signature.contains("SignedStream")
}

#[test]
fn exactly_the_signed_operations_require_the_signature() {
    let doc = doc();
    let scheme = &doc["components"]["securitySchemes"]["groveSignature"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    let description = scheme["description"].as_str().unwrap_or_default();
    for header in ["x-grove-key", "x-grove-timestamp", "x-grove-nonce", "x-grove-signature", "grove-request-v1"] {
        assert!(description.contains(header), "the security scheme does not describe {header}");
    }
    let mut public = BTreeSet::new();
    for (path, methods) in registered_routes() {
        for (method, handler) in methods {
            let op = &doc["paths"][&path][&method];
            assert!(op.is_object(), "{method} {path} is not documented");
            let required =
                op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("groveSignature").is_some()));
            let signed = handler_is_signed(&handler);
            assert_eq!(required, signed, "{method} {path} ({handler}): security does not match the handler");
            if !required {
                public.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> =
        ["GET /healthz", "GET /metrics", "GET /v1/info", "GET /v1/openapi.json", "GET /v1/rooms"]
            .map(String::from)
            .into();
    assert_eq!(public, expected);
}

#[tokio::test]
async fn the_server_serves_this_document() {
    let state = grove_server::AppState::new(
        grove_server::Config::default(),
        Arc::new(grove_store::MemoryStore::new()),
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    );
    let req = Request::builder().uri("/v1/openapi.json").body(Body::empty()).expect("request");
    let resp = grove_server::router(state).oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(std::str::from_utf8(&body).expect("UTF-8"), grove_server::OPENAPI);
    serde_json::from_slice::<Value>(&body).expect("served document parses");
}

#[test]
fn the_document_knows_every_error_code() {
    let doc = doc();
    let documented: BTreeSet<String> = doc["components"]["schemas"]["ApiError"]["properties"]["code"]["enum"]
        .as_array()
        .expect("ApiError.code has an enum")
        .iter()
        .map(|c| c.as_str().expect("codes are strings").to_string())
        .collect();
    let codes: BTreeSet<String> = error_codes().into_keys().collect();
    let missing: Vec<_> = codes.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&codes).collect();
    assert!(missing.is_empty(), "error codes missing from ApiError.code: {missing:?}");
    assert!(unknown.is_empty(), "ApiError.code lists codes grove-wire does not have: {unknown:?}");
}

#[test]
fn error_responses_name_codes_of_their_status() {
    let doc = doc();
    let codes = error_codes();
    assert!(doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .is_some_and(|r| r == "#/components/schemas/ApiError"));
    for (path, method, op) in operations(&doc) {
        for (status, resp) in op["responses"].as_object().into_iter().flatten() {
            let n: u16 = status.parse().unwrap_or_else(|_| panic!("{method} {path}: status {status} is not a number"));
            if n < 400 {
                continue;
            }
            let shared = "#/components/responses/Error";
            assert_eq!(resp["$ref"], shared, "{method} {path} {status}: not the shared Error response");
            let description = resp["description"].as_str().unwrap_or_default();
            // Backquoted words that are error codes; the others name fields and limits.
            let named: Vec<&str> =
                description.split('`').skip(1).step_by(2).filter(|w| codes.contains_key(*w)).collect();
            assert!(!named.is_empty(), "{method} {path} {status}: the description names no error code");
            for name in named {
                assert_eq!(codes[name].http_status(), n, "{method} {path}: `{name}` is not answered with {status}");
            }
        }
    }
}

/// Calls `f` on every object under `v` with its JSON pointer.
fn walk_objects(v: &Value, pointer: &str, f: &mut impl FnMut(&str, &serde_json::Map<String, Value>)) {
    match v {
        Value::Object(map) => {
            f(pointer, map);
            for (k, i) in map {
                walk_objects(i, &format!("{pointer}/{k}"), f);
            }
        }
        Value::Array(items) => {
            for (n, i) in items.iter().enumerate() {
                walk_objects(i, &format!("{pointer}/{n}"), f);
            }
        }
        _ => {}
    }
}

/// The JSON types a schema object allows (`type` as a string or a list).
fn types(schema: &serde_json::Map<String, Value>) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_integer_says_its_bounds_and_no_field_is_a_float() {
    let doc = doc();
    let mut integers = 0;
    walk_objects(&doc, "", &mut |pointer, schema| {
        let ts = types(schema);
        assert!(!ts.contains(&"number"), "{pointer}: a `number`; every numeric field of the API is an integer");
        if ts.contains(&"integer") {
            integers += 1;
            let min = schema.get("minimum").and_then(Value::as_i64);
            let max = schema.get("maximum").map(|m| m.as_u64().is_some() || m.as_i64().is_some());
            assert!(min.is_some() && max == Some(true), "{pointer}: an integer without an integer minimum and maximum");
        }
    });
    assert!(integers > 40, "only {integers} integers: is the walk broken?");
}

/// Canonical standard base64 as `grove_wire::b64` writes and reads it, and strings that are
/// almost that: every sample the server decodes or refuses for a reason a pattern can see.
fn base64_samples() -> Vec<String> {
    let mut out = Vec::new();
    let mut x: u32 = 0x9e37_79b9;
    for n in 0..100usize {
        let random: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        for bytes in [vec![0u8; n], vec![0xff; n], random] {
            let good = grove_wire::b64::encode(&bytes);
            let trimmed = good.trim_end_matches('=').to_string();
            out.push(format!("{good}\n"));
            out.push(format!(" {good}"));
            out.push(format!("{good}="));
            out.push(good.replace('+', "-").replace('/', "_"));
            if trimmed.len() != good.len() {
                out.push(trimmed.clone());
                // The last character with its unused low bits set: decodable by a lax decoder.
                let last = trimmed.chars().last().expect("non-empty");
                let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                let i = alphabet.find(last).expect("in the alphabet");
                out.push(format!(
                    "{}{}{}",
                    &trimmed[..trimmed.len() - 1],
                    &alphabet[i | 1..=i | 1],
                    &good[trimmed.len()..]
                ));
            }
            out.push(good);
        }
    }
    out.extend(["=", "==", "A", "AA", "AAA", "A===", "AA=A", "AAAA====", "AAAAA", "QQ==QQ=="].map(String::from));
    out
}

#[test]
fn every_binary_field_has_the_pattern_of_what_the_server_decodes() {
    let doc = doc();
    let samples = base64_samples();
    let mut fields = 0;
    walk_objects(&doc, "", &mut |pointer, schema| {
        if schema.get("contentEncoding").and_then(Value::as_str) != Some("base64") {
            return;
        }
        fields += 1;
        let pattern = schema.get("pattern").and_then(Value::as_str);
        let pattern = pattern.unwrap_or_else(|| panic!("{pointer}: a base64 field without a `pattern`"));
        let re = regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{pointer}: pattern does not compile: {e}"));
        let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        let max = schema.get("maxLength").and_then(Value::as_u64).unwrap_or(u64::MAX);
        // A field of a fixed number of bytes says so in `x-grove-bytes` (an annotation).
        let bytes = schema.get("x-grove-bytes").and_then(Value::as_u64);
        for s in &samples {
            let decoded = grove_wire::b64::decode(s).ok();
            let decodes = decoded.is_some();
            let expected = decoded.is_some_and(|d| bytes.is_none_or(|n| d.len() as u64 == n))
                && (min..=max).contains(&(s.chars().count() as u64));
            assert_eq!(
                re.is_match(s),
                expected,
                "{pointer}: pattern {pattern} on {s:?} (the server decodes it: {decodes})"
            );
        }
    });
    assert!(fields >= 10, "only {fields} base64 fields: is the walk broken?");
}
