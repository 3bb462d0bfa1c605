//! Resync over the API: a `resync` entry (a member's sealed GroupInfo for members stuck at an
//! earlier epoch) is taken from members, of the room's current epoch, in the shape of a
//! ResyncOffer; an external commit is taken only as a member replacing its own leaf.

use mls_rs::MlsMessage;
use serde_json::json;

use crate::harness::*;
use crate::mls::{add_member, bytes, client, mls_room, post_handshake};

fn offer(stuck_epoch: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"stuck_epoch": stuck_epoch, "sealed": b64(&[7; 40])})).unwrap()
}

/// Bob (stuck, say) replaces his own leaf by an external commit from Alice's GroupInfo: taken,
/// nobody added or removed. Signed by Alice instead, or a stranger's join: refused. Offers are
/// taken from members in the current epoch only, and in shape.
#[tokio::test]
async fn a_member_replaces_its_own_leaf_and_offers_are_checked_for_shape_and_epoch() {
    let s = Server::new();
    let (alice, bob, dave) = (User::new(1), User::new(2), User::new(4));
    let (ac, bc, dc) = (client(&alice), client(&bob), client(&dave));
    let mut ag = mls_room(&s, &alice, &ac, "garden").await;
    let _bg = add_member(&s, &alice, &mut ag, &bc, "garden").await;
    let info = bytes(&ag.group_info_message_allowing_ext_commit(true).unwrap());

    let (_, resync) =
        bc.external_commit_builder().unwrap().with_removal(1).build(MlsMessage::from_bytes(&info).unwrap()).unwrap();
    let r = post_handshake(&s, &alice, "garden", "commit", 1, &bytes(&resync)).await;
    assert_eq!(r.code(), "sender_mismatch", "{}", r.text);
    let (_, join) = dc.external_commit_builder().unwrap().build(MlsMessage::from_bytes(&info).unwrap()).unwrap();
    let r = post_handshake(&s, &alice, "garden", "commit", 1, &bytes(&join)).await;
    assert_eq!(r.code(), "not_allowed", "a stranger's join: {}", r.text);
    let r = post_handshake(&s, &bob, "garden", "commit", 1, &bytes(&resync)).await;
    assert_eq!((r.status.as_u16(), r.json["epoch"].clone()), (201, json!(2)), "{}", r.text);
    let room = alice.get(&s, "/v1/rooms/garden").await;
    assert_eq!(room.ok()["members"], json!([alice.id.to_string(), bob.id.to_string()]));

    // Offers: Bob's for epoch 1, in epoch 2, is taken; the log holds it as a `resync` entry.
    let r = post_handshake(&s, &bob, "garden", "resync", 2, &offer(1)).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let log = alice.get(&s, "/v1/rooms/garden/log?after=0").await;
    let last = log.ok()["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["kind"].clone(), last["sender"].clone()), (json!("resync"), json!(bob.id.to_string())));
    for (epoch, body, code) in [
        (1, offer(0), "wrong_epoch"),
        (2, offer(2), "invalid_message"),
        (2, b"not json".to_vec(), "invalid_message"),
        (2, serde_json::to_vec(&json!({"stuck_epoch": 1, "sealed": ""})).unwrap(), "invalid_message"),
    ] {
        let r = post_handshake(&s, &alice, "garden", "resync", epoch, &body).await;
        assert_eq!(r.code(), code, "{}", r.text);
    }
    let r = post_handshake(&s, &dave, "garden", "resync", 2, &offer(1)).await;
    assert_eq!(r.code(), "not_member", "{}", r.text);
    sk_room(&s, &alice, "sk").await;
    let r = post_handshake(&s, &alice, "sk", "resync", 1, &offer(0)).await;
    assert_eq!(r.code(), "wrong_kind", "{}", r.text);
}
