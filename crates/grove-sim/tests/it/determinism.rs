//! Same seed and costs, same report; another seed changes what depends on chance.

use grove_sim::report::{markdown, summary, Notes};
use grove_sim::sim::{run, Settings};

use crate::{fixed_costs, params};

fn settings(seed: u64) -> Settings {
    Settings { ns: vec![3, 4, 40], net: params(), seed, messages: 8, offline_percent: vec![10, 50] }
}

#[test]
fn the_same_seed_gives_an_identical_report() {
    let costs = fixed_costs();
    let notes = Notes::default();
    let a = run(&costs, &settings(7)).unwrap();
    let b = run(&costs, &settings(7)).unwrap();
    assert_eq!(a, b);
    assert_eq!(markdown(&a, &costs, &notes), markdown(&b, &costs, &notes));
    assert_eq!(summary(&a, &notes), summary(&b, &notes));
    // Another seed draws other offline members, senders and ring orders.
    let c = run(&costs, &settings(8)).unwrap();
    assert_ne!(a.delivery, c.delivery);
}

#[test]
fn cells_beyond_the_measured_mls_sizes_are_marked_extrapolated() {
    let costs = fixed_costs();
    let r = run(&costs, &settings(1)).unwrap();
    assert!(!r.extrapolated(grove_sim::model::Encryption::Mls, 4));
    assert!(r.extrapolated(grove_sim::model::Encryption::Mls, 40));
    assert!(!r.extrapolated(grove_sim::model::Encryption::SenderKeys, 40), "Sender Keys costs do not depend on N");
    let md = markdown(&r, &costs, &Notes::default());
    assert!(md.contains(" †"), "extrapolated cells carry a dagger");
}

#[test]
fn a_group_too_small_for_the_model_is_refused_with_a_reason() {
    let mut s = settings(1);
    s.ns = vec![2];
    let err = run(&fixed_costs(), &s).unwrap_err();
    assert!(err.contains("at least 3"), "{err}");
}
