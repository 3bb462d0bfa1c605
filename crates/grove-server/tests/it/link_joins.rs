//! MLS link joins over the API: members keep the room's GroupInfo sealed for the link's
//! holders; a holder fetches it with the link's token and posts an external commit that adds
//! itself; each refusal with its code.

use grove_proto::identity::Identity;
use grove_proto::mls::engine::{GroupId, MlsEngine};
use grove_proto::mls::links::{group_info_key, open, seal};
use grove_proto::policy::Edit;
use grove_wire::policy::JoinRule;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::harness::*;
use crate::mls::post_handshake;

fn engine(user: &User, seed: u64) -> MlsEngine {
    MlsEngine::with_rng(Identity::from_secret_bytes(user.key.to_bytes()), StdRng::seed_from_u64(seed))
}

/// Alice's engine commits `edit` to the room's policy, posted and applied.
async fn commit_policy(s: &Server, alice: &User, e: &mut MlsEngine, g: &GroupId, edit: Edit) {
    let (pending, _) = e.commit_policy(g, edit).unwrap();
    post_handshake(s, alice, "plaza", "commit", pending.epoch, &pending.commit).await.ok();
    e.apply_pending(g).unwrap();
}

async fn put(s: &Server, user: &User, body: Value) -> Resp {
    let bytes = body.to_string().into_bytes();
    s.call(user.request(s, axum::http::Method::PUT, "/v1/rooms/plaza/link/group-info", bytes)).await
}

/// Alice's MLS room takes link holders: she keeps its GroupInfo sealed for her link; Dave
/// fetches it with the token and joins by an external commit, which counts one use. Refused:
/// an upload for another link or by a stranger, a fetch or join with a wrong token, by a banned
/// user, in a sender-keys room, an external commit posted as an ordinary entry, and a join
/// once the link is used up; under `approval` the way in is a request (`not_found`).
#[tokio::test]
async fn dave_joins_alices_room_by_the_link_and_the_server_checks_token_policy_and_uses() {
    let s = Server::new();
    let (alice, dave, mallory, erin) = (User::new(1), User::new(4), User::new(5), User::new(6));
    let mut ae = engine(&alice, 1);
    let (g, public, _) = ae.create_group().unwrap();
    let r = alice
        .post(
            &s,
            "/v1/rooms",
            json!({"name": "plaza", "mode": "mls", "mls": {
                "group_info": b64(&public.group_info), "ratchet_tree": b64(&public.ratchet_tree)}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    commit_policy(&s, &alice, &mut ae, &g, Edit::SetJoin(JoinRule::Link)).await;
    commit_policy(&s, &alice, &mut ae, &g, Edit::Ban(mallory.id)).await;
    let secret = [3u8; 32];
    let token = grove_wire::invite::token(&secret);
    let hash = grove_wire::invite::token_hash(&token);
    let link = json!({"token_hash": b64(&hash), "max_uses": 1});
    alice.post(&s, "/v1/rooms/plaza/link", link).await.ok();

    // Alice keeps the sealed GroupInfo; not for another link, not by a stranger, not older.
    let epoch = ae.epoch(&g).unwrap();
    let sealed = seal(&group_info_key(&secret), [1; 12], &ae.resync_group_info(&g).unwrap());
    let body = |h: &[u8], epoch: u64| json!({"token_hash": b64(h), "epoch": epoch, "sealed": b64(&sealed)});
    put(&s, &alice, body(&[9; 32], epoch)).await.err(403, "link_invalid");
    put(&s, &dave, body(&hash, epoch)).await.err(403, "not_member");
    put(&s, &alice, body(&hash[..31], epoch)).await.err(400, "bad_request");
    assert_eq!(put(&s, &alice, body(&hash, epoch)).await.ok()["kept"], true);
    assert_eq!(put(&s, &alice, body(&hash, epoch - 1)).await.ok()["kept"], false);

    // Fetching: the token, not its hash; Mallory is banned.
    let fetch = "/v1/rooms/plaza/link/group-info";
    dave.post(&s, fetch, json!({"token": b64(&hash)})).await.err(403, "link_invalid");
    dave.post(&s, fetch, json!({"token": b64(&token[..31])})).await.err(400, "bad_request");
    mallory.post(&s, fetch, json!({"token": b64(&token)})).await.err(403, "not_allowed");
    alice.post(&s, fetch, json!({"token": b64(&token)})).await.err(403, "not_allowed");
    let got = dave.post(&s, fetch, json!({"token": b64(&token)})).await.ok().clone();
    assert_eq!(got["epoch"], epoch);
    let sealed_back = grove_wire::b64::decode(got["sealed"].as_str().unwrap()).unwrap();
    let info = open(&group_info_key(&secret), &sealed_back).unwrap();

    // Dave's external commit: not as an ordinary entry, not with a wrong token, not by Erin.
    let mut de = engine(&dave, 4);
    let (dg, commit) = de.join_by_link(&info).unwrap();
    let r = post_handshake(&s, &dave, "plaza", "commit", commit.epoch, &commit.commit).await;
    assert_eq!(r.code(), "not_member", "{}", r.text);
    let join = |t: &[u8]| json!({"token": b64(t), "epoch": commit.epoch, "commit": b64(&commit.commit)});
    dave.post(&s, "/v1/rooms/plaza/link/join", join(&[8; 32])).await.err(403, "link_invalid");
    erin.post(&s, "/v1/rooms/plaza/link/join", join(&token)).await.err(403, "sender_mismatch");
    let r = dave.post(&s, "/v1/rooms/plaza/link/join", join(&token)).await;
    assert_eq!((r.status.as_u16(), r.json["epoch"].clone()), (201, json!(epoch + 1)), "{}", r.text);
    de.apply_resync(&dg).unwrap();
    let room = alice.get(&s, "/v1/rooms/plaza").await;
    assert_eq!(room.ok()["members"], json!([alice.id.to_string(), dave.id.to_string()]));
    // Again: the link is used up (one use).
    erin.post(&s, fetch, json!({"token": b64(&token)})).await.err(410, "link_used_up");

    // Under approval, a holder asks instead.
    let link = json!({"token_hash": b64(&hash)});
    alice.post(&s, "/v1/rooms/plaza/link", link).await.ok();
    let (pending, _) = {
        // Alice processes Dave's join first.
        let log = alice.get(&s, "/v1/rooms/plaza/log?after=0").await.ok().clone();
        let last = log["entries"].as_array().unwrap().last().unwrap()["body"].as_str().unwrap().to_string();
        ae.process(&g, &grove_wire::b64::decode(&last).unwrap()).unwrap();
        ae.commit_policy(&g, Edit::SetJoin(JoinRule::Approval)).unwrap()
    };
    post_handshake(&s, &alice, "plaza", "commit", pending.epoch, &pending.commit).await.ok();
    erin.post(&s, fetch, json!({"token": b64(&token)})).await.err(404, "not_found");

    // A sender-keys room has no such state.
    sk_room(&s, &alice, "sk").await;
    erin.post(&s, "/v1/rooms/sk/link/group-info", json!({"token": b64(&token)})).await.err(400, "wrong_kind");
}
