"""Schemathesis hooks for grove: signed requests, and the one refinement of a check that the
OpenAPI document cannot express.

Loaded by `.ci/schemathesis` through SCHEMATHESIS_HOOKS; written from the `groveSignature`
security scheme of `crates/grove-server/openapi.json` (and grove-wire's `auth` module):

    grove-request-v1
    <server public key, 64 lowercase hex: `public_key` of GET /v1/info>
    <method, upper case>
    <path and query exactly as sent>
    <timestamp: Unix milliseconds, decimal digits>
    <nonce: 16 to 64 characters of A-Z a-z 0-9 - _>
    <SHA-256 of the raw body bytes, 64 lowercase hex>

joined by single line feeds, signed with Ed25519, the signature in standard base64 in
`x-grove-signature`; the signer's public key (64 hex) in `x-grove-key`, the time in
`x-grove-timestamp`, the nonce in `x-grove-nonce`.

Environment: GROVE_URL, the server's base URL (e.g. http://127.0.0.1:8123);
GROVE_IDENTITIES, how many identities sign (default 6); GROVE_OPENAPI, a file to read the
document from instead of the server's `/v1/openapi.json`.
"""

import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import threading
import time
import urllib.parse
import urllib.request

import requests.auth
import schemathesis
from nacl.signing import SigningKey

BASE_URL = os.environ["GROVE_URL"].rstrip("/")


def _get_json(path):
    with urllib.request.urlopen(BASE_URL + path, timeout=10) as resp:
        return json.load(resp)


SERVER_KEY = _get_json("/v1/info")["public_key"].lower()


def _bytes(body):
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return body


def signed_headers(key, method, path_and_query, body, body_sha256=None):
    """The four headers of a request signed by `key` (a nacl SigningKey), over `body` or, for a
    streamed upload part, over the SHA-256 (lowercase hex) its `x-grove-content-sha256` declares."""
    if body_sha256 is None:
        body_sha256 = hashlib.sha256(_bytes(body)).hexdigest()
    timestamp = str(int(time.time() * 1000))
    nonce = secrets.token_urlsafe(24)  # 32 characters of A-Z a-z 0-9 - _
    message = "\n".join(
        [
            "grove-request-v1",
            SERVER_KEY,
            method.upper(),
            path_and_query,
            timestamp,
            nonce,
            body_sha256,
        ]
    ).encode("utf-8")
    signature = key.sign(message).signature
    return {
        "x-grove-key": key.verify_key.encode().hex(),
        "x-grove-timestamp": timestamp,
        "x-grove-nonce": nonce,
        "x-grove-signature": base64.b64encode(signature).decode("ascii"),
    }


def _publish_one_key(key):
    """Makes the identity known to the server (a mailbox takes deposits only for known users)."""
    body = json.dumps(
        {"items": [{"kind": "olm_fallback", "last_resort": True, "data": base64.b64encode(secrets.token_bytes(32)).decode()}]}
    ).encode()
    req = urllib.request.Request(BASE_URL + "/v1/keys", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    for name, value in signed_headers(key, "POST", "/v1/keys", body).items():
        req.add_header(name, value)
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 200:
            raise RuntimeError(f"publishing a key answered {resp.status}")


IDENTITIES = [SigningKey.generate() for _ in range(int(os.environ.get("GROVE_IDENTITIES", "6")))]
for _key in IDENTITIES:
    _publish_one_key(_key)
USER_IDS = [k.verify_key.encode().hex() for k in IDENTITIES]


def _room_of(r):
    """The room a request is about: its path's `{room}`, or the name a room creation asks for."""
    path = urllib.parse.urlsplit(r.url).path
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "v1" and parts[2] == "rooms":
        return parts[3]
    if path == "/v1/rooms" and r.method == "POST" and r.body:
        try:
            name = json.loads(r.body).get("name")
        except (ValueError, AttributeError):
            return None
        return name if isinstance(name, str) else None
    return None


class GroveSignature(requests.auth.AuthBase):
    """Signs each prepared request (its final method, path, query and body bytes) with one of
    the identities, a fresh timestamp and a fresh nonce. A request about a room is signed by
    the identity the room's name hashes to, so the one that created a room is the one that goes
    on to use it (stateful runs reach its log and files); any other by the next in turn."""

    def __init__(self):
        self._next = itertools.cycle(IDENTITIES)
        self._lock = threading.Lock()

    def __call__(self, r):
        room = _room_of(r)
        if room is not None:
            digest = hashlib.sha256(urllib.parse.unquote(room).encode("utf-8", "surrogatepass")).digest()
            key = IDENTITIES[digest[0] % len(IDENTITIES)]
        else:
            with self._lock:
                key = next(self._next)
        declared = r.headers.get("x-grove-content-sha256", "")
        if re.fullmatch("[0-9a-f]{64}", declared):
            # An upload part: the signature covers the hash the header declares (the server
            # compares it with the body once read).
            headers = signed_headers(key, r.method, r.path_url, None, body_sha256=declared)
        else:
            headers = signed_headers(key, r.method, r.path_url, r.body)
        for name, value in headers.items():
            r.headers[name] = value
        return r


schemathesis.auth.set_from_requests(GroveSignature())


@schemathesis.hook
def map_case(context, case):
    """In positive cases, a `user` path parameter names one of the signing identities half of
    the time (a random id is an unknown user: 404), so deposits and claims reach real mailboxes
    and key directories; an upload part declares its body's real SHA-256."""
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    if positive and isinstance(case.path_parameters, dict) and "user" in case.path_parameters:
        if secrets.randbelow(2) == 0:
            case.path_parameters["user"] = secrets.choice(USER_IDS)
    if positive and isinstance(case.headers, dict) and "x-grove-content-sha256" in case.headers:
        # The schema cannot tie the header to the body: a valid part declares its own hash.
        if isinstance(case.body, (bytes, str)):
            case.headers["x-grove-content-sha256"] = hashlib.sha256(_bytes(case.body)).hexdigest()
    return case


# Answers to schema-valid requests that the schema cannot rule out: the document cannot say
# which bytes are a valid MLS message, which sizes a server's configuration allows, that a
# room mode takes no such operation, or that a header is the SHA-256 of the body. Any other
# 400, 413, 416 or 507 to valid data is a finding.
SEMANTIC_REFUSALS = {
    400: {"invalid_commit", "invalid_proposal", "invalid_message", "wrong_kind", "bad_membership", "content_digest_mismatch"},
    413: {"payload_too_large", "file_too_large"},
    416: {"range_not_satisfiable"},
    507: {"storage_full"},
}


def _bodies(case, response):
    """The case's body and the bytes actually sent, parsed (a stateful step can send a value the
    case's own body does not show)."""
    out = [case.body]
    sent = [case.body, getattr(getattr(response, "request", None), "body", None)]
    for raw in sent:
        if isinstance(raw, (bytes, bytearray, str)):
            try:
                out.append(json.loads(raw))
            except (ValueError, UnicodeDecodeError):
                pass
    return out


def _has_fraction(value, text=False):
    """Whether a request part holds a number with a fractional part anywhere (with `text`, also
    a query or path value written as one). Stateful links can carry a drawn float such as
    4129736755199918.5 into an integer field."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return not value.is_integer()
    if text and isinstance(value, str) and "." in value:
        try:
            return not float(value).is_integer()
        except ValueError:
            return False
    if isinstance(value, dict):
        return any(_has_fraction(v, text) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_fraction(v, text) for v in value)
    return False


@schemathesis.check
def grove_valid_data_is_refused_only_for_its_meaning(ctx, response, case):
    """Valid data answered 400, 413, 416 or 507 must carry one of the codes above: a
    `malformed_body` or `bad_request` to a request the document calls valid means the document
    and the server disagree."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    allowed = SEMANTIC_REFUSALS.get(response.status_code)
    if allowed is None:
        return None
    if any(_has_fraction(b) for b in _bodies(case, response)) or any(
        _has_fraction(v, text=True) for v in (case.query, case.path_parameters)
    ):
        return None  # every number in grove's API is an integer: a fraction is not valid data
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        code = None
    part = (case.operation.method.upper(), case.operation.path) == ("PUT", "/v1/rooms/{room}/files/{blob}")
    if part and code == "bad_request" and b"this part is" in response.content:
        return None  # a part's length must be the upload's `part_bytes`: a number the schema does not know
    if code not in allowed:
        raise AssertionError(
            f"valid data refused with {response.status_code} `{code}`: {response.content[:300]!r}"
        )
    return None


def _named_codes():
    """(METHOD, path template) -> status -> the error codes its description names (backquoted)."""
    source = os.environ.get("GROVE_OPENAPI", "")
    if source and not source.startswith("http"):
        with open(source, encoding="utf-8") as f:
            document = json.load(f)
    else:
        document = _get_json("/v1/openapi.json")
    known = set(document["components"]["schemas"]["ApiError"]["properties"]["code"]["enum"])
    named = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                words = response.get("description", "").split("`")[1::2]
                named[(method.upper(), path, int(status))] = {w for w in words if w in known}
    return named


NAMED_CODES = _named_codes()


@schemathesis.check
def grove_error_codes_are_the_documented_ones(ctx, response, case):
    """An error answer's `code` is one its operation documents for that status: the document
    names, per operation and status, every machine-readable code a client must handle."""
    if response.status_code < 400:
        return None
    key = (case.operation.method.upper(), case.operation.path, response.status_code)
    documented = NAMED_CODES.get(key)
    if documented is None:
        return None  # an undocumented status: `status_code_conformance` reports it
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        code = None
    if code not in documented:
        raise AssertionError(
            f"{key[0]} {key[1]} answered {response.status_code} `{code}`, but documents only "
            f"{sorted(documented)} for that status: {response.content[:300]!r}"
        )
    return None
