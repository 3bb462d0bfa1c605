//! What members who are offline at send time get: P2P loses what the server and the swarm keep.

use grove_sim::model::Send;
use grove_sim::net::{simulate, Group, Hosting};
use grove_sim::sim::delivery;

use crate::params;

#[test]
fn carol_is_offline_p2p_never_delivers_to_her_and_the_server_delivers_when_she_returns() {
    // Ten members on the ring 0, 1, …, 9; member 3 ("Carol") is offline; member 0 sends.
    let mut group = Group::with_ring((0..10).collect()).unwrap();
    group.set_online(3, false);
    let msg = Send::Shared(300);
    for h in [Hosting::Mesh, Hosting::Ring, Hosting::StaleRing] {
        let o = simulate(h, &params(), &group, 0, msg);
        assert_eq!((o.delivered_online, o.delivered_later), (8, 0), "{h:?}: Carol's copy is lost for good");
    }
    for h in [Hosting::Server, Hosting::Swarm] {
        let o = simulate(h, &params(), &group, 0, msg);
        assert_eq!((o.delivered_online, o.delivered_later), (8, 1), "{h:?}: Carol reads it on return");
        assert!(o.stored >= 300, "{h:?} keeps a copy for her");
    }
}

#[test]
fn two_offline_members_cut_a_ring_that_has_not_re_linked() {
    // Members 3 and 7 offline: clockwise the message reaches 1, 2 and stops at 3; counter-clockwise
    // it reaches 9, 8 and stops at 7. Members 4, 5, 6 are online but never get it.
    let mut group = Group::with_ring((0..10).collect()).unwrap();
    group.set_online(3, false);
    group.set_online(7, false);
    let stale = simulate(Hosting::StaleRing, &params(), &group, 0, Send::Shared(300));
    assert_eq!(stale.delivered_online, 4);
    // Once the ring re-links around them, every online member gets it, the farthest 4 hops away.
    let relinked = simulate(Hosting::Ring, &params(), &group, 0, Send::Shared(300));
    assert_eq!((relinked.delivered_online, relinked.max_hops), (7, 4));
    // A pairwise bundle stops the same way.
    let bundle = simulate(Hosting::StaleRing, &params(), &group, 0, Send::PerMember(150));
    assert_eq!(bundle.delivered_online, 4);
}

#[test]
fn with_half_the_group_offline_only_store_and_forward_reaches_everyone_in_the_end() {
    let p = params();
    for h in [Hosting::Server, Hosting::Swarm] {
        let d = delivery(h, &p, 100, 50, 10, 3);
        assert!((d.at_send - 0.5).abs() < 0.02, "{h:?}: half online at send: {}", d.at_send);
        assert_eq!(d.after_return, 1.0, "{h:?}");
    }
    for h in [Hosting::Mesh, Hosting::Ring] {
        let d = delivery(h, &p, 100, 50, 10, 3);
        assert!((d.at_send - 0.5).abs() < 0.02, "{h:?}: {}", d.at_send);
        assert_eq!(d.after_return, d.at_send, "{h:?}: nothing more after return");
    }
    let d = delivery(Hosting::StaleRing, &p, 100, 50, 10, 3);
    assert!(d.at_send < 0.1, "a stale ring with half its members gone reaches almost nobody: {}", d.at_send);
}

#[test]
fn a_sender_outside_the_group_or_no_message_at_all_gives_empty_figures_not_a_crash() {
    let group = Group::new(4, 1);
    for h in [Hosting::Ring, Hosting::StaleRing, Hosting::Mesh, Hosting::Swarm, Hosting::Server] {
        assert_eq!(simulate(h, &params(), &group, 9, Send::Shared(10)).total, 0, "{h:?}");
        assert_eq!(delivery(h, &params(), 10, 10, 0, 1).after_return, 0.0);
        assert_eq!(delivery(h, &params(), 1, 10, 5, 1).after_return, 0.0);
    }
}
