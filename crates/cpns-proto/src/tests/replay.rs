//! Determinism (docs/design.md §2): the machines draw every random value from the generator they are
//! given and take time as an argument, so a whole run replays frame for frame from its seed.

use cpns_wire::SetupType;

use super::harness::{Harness, Party};
use super::store::PneSpec;

/// Every frame delivered in a run: who sent it, to whom, and its bytes.
fn frames(h: &Harness) -> Vec<(Party, Party, Vec<u8>)> {
    h.log
        .iter()
        .map(|f| (f.from, f.to, f.body.clone()))
        .collect()
}

/// A whole establishment over a `cpns` PAN with LocalEUKeys (sealed frames), then a PNE
/// registration: everything random in it (rands, PN id, keys, nonces, request ids) comes from
/// the seed.
fn run(seed: u64) -> Harness {
    let specs = [PneSpec::cpns(), PneSpec::cpns(), PneSpec::trusted()];
    let mut h = Harness::with_seed(&specs, seed);
    h.connect_gw();
    h.discover_all();
    h.setup(0, SetupType::All);
    let pn = h.joined(0).expect("the PN was established").pn_id;
    h.register(1, Some(pn));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    h
}

#[test]
fn the_same_seed_replays_every_frame() {
    let (a, b) = (run(7), run(7));
    let (fa, fb) = (frames(&a), frames(&b));
    assert!(
        fa.len() > 30,
        "a whole establishment ran: {} frames",
        fa.len()
    );
    assert!(
        fa.iter().any(|(_, _, body)| body[0] == 1),
        "sealed frames ran"
    );
    assert_eq!(fa, fb);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn another_seed_gives_other_frames() {
    let (a, b) = (run(7), run(8));
    let (fa, fb) = (frames(&a), frames(&b));
    // Same flow, same messages in the same order...
    let names = |h: &Harness| h.log.iter().map(|f| f.message).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    // ...but other random values on the wire.
    assert_ne!(fa, fb);
    let differing = fa.iter().zip(&fb).filter(|(x, y)| x != y).count();
    assert!(differing > fa.len() / 2, "only {differing} frames differ");
}
