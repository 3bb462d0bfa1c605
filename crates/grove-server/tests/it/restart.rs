//! A restarted server has every acknowledged entry, the same order, and the rooms' state.

use std::sync::Arc;

use grove_store_sqlite::{SqliteOptions, SqliteStore};
use mls_rs::group::ExportedTree;
use serde_json::json;

use crate::harness::*;
use crate::mls::{bytes, client, mls_room, post_handshake};

fn sqlite_server(dir: &std::path::Path) -> Server {
    let store = SqliteStore::open(&dir.join("grove.db"), SqliteOptions::default()).unwrap();
    Server::with(test_config(), Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_every_entry_and_the_mls_state_are_there() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (User::new(1), User::new(2));
    let (ac, bc) = (client(&alice), client(&bob));
    let mut ag;
    {
        let s = sqlite_server(dir.path());
        ag = mls_room(&s, &alice, &ac, "r").await;
        let kp = bc.generate_key_package_message(Default::default(), Default::default(), None).unwrap();
        let add = ag.commit_builder().add_member(kp).unwrap().build().unwrap();
        post_handshake(&s, &alice, "r", "commit", 0, &bytes(&add.commit_message)).await.ok();
        ag.apply_pending_commit().unwrap();
        for n in 0..20u32 {
            let m = ag.encrypt_application_message(&n.to_be_bytes(), vec![]).unwrap();
            post_handshake(&s, &alice, "r", "application", 1, &bytes(&m)).await.ok();
        }
        sk_room(&s, &bob, "sk").await;
        post_app(&s, &bob, "sk", 0, b"kept").await.ok();
    }
    let s = sqlite_server(dir.path());
    let page = alice.get(&s, "/v1/rooms/r/log").await;
    assert_eq!(seqs(page.ok()), (1..=21).collect::<Vec<_>>());
    assert_eq!(page.json["epoch"], json!(1));
    assert_eq!(bodies(&bob.get(&s, "/v1/rooms/sk/log").await.json), [b"kept".to_vec()]);
    // The public group state came back: the tree serves a joiner, the next commit validates,
    // a stale one is still refused, and numbering continues without a gap.
    let tree = bob.get(&s, "/v1/rooms/r/tree").await;
    let tree = grove_wire::b64::decode(tree.ok()["ratchet_tree"].as_str().unwrap()).unwrap();
    assert_eq!(ExportedTree::from_bytes(&tree).unwrap().to_bytes().unwrap(), ag.export_tree().to_bytes().unwrap());
    let update = ag.commit(vec![]).unwrap();
    post_handshake(&s, &alice, "r", "commit", 0, &bytes(&update.commit_message)).await.err(409, "wrong_epoch");
    let r = post_handshake(&s, &alice, "r", "commit", 1, &bytes(&update.commit_message)).await;
    assert_eq!((r.status.as_u16(), r.json["seq"].clone(), r.json["epoch"].clone()), (201, json!(22), json!(2)));
}
