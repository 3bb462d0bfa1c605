//! Runs the real cryptography and fills a [`CostTable`]: exact sizes of real messages, CPU
//! times as the median (or mean over many) of wall-clock timings around single calls on this
//! machine, in this run.
//!
//! - **Pairwise:** vodozemac 0.11 Olm (`SessionConfig::version_1`, the libolm/Matrix format),
//!   used directly because grove-proto has no Olm module yet. Sizes are the binary message
//!   (`OlmMessage::to_parts`), not base64.
//! - **Sender Keys:** `grove_proto::senderkeys` (`SenderChain`, `ReceiverChain`,
//!   `SenderKeyDistribution`); a distribution travels inside an Olm message, measured as such.
//! - **MLS:** `grove_proto::mls::engine::MlsEngine` with seeded RNGs, the room's public state
//!   in a `grove_proto::mls::hub::HubGroup` (which serves the ratchet tree to joiners). The
//!   group is created by one commit adding N−1, then every member but the creator and one
//!   receiver commits a self-update in a seeded random order (steady state, grove's tree-hygiene
//!   rule), and only then are the creator's update, remove and add commits, the receiver's
//!   processing, a joiner's join and 100-byte messages measured. The other members exist only as
//!   their secrets: for its one update, a member is a "ghost" engine rebuilt from the receiver's
//!   snapshot with its own private leaf and signer ([`splice`], the technique of grove-bench's
//!   MLS benchmark). Engine times include the engine's own snapshot serialisation (grove's engine
//!   writes the whole group state on every operation) but no SQLite.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use grove_proto::identity::{Identity, UserId};
use grove_proto::mls::engine::{Changes, GroupId, MlsEngine, StoredGroup, StoredState};
use grove_proto::mls::hub::HubGroup;
use grove_proto::mls::identity::signing_identity;
use grove_proto::senderkeys::{ReceiverChain, SenderChain, SenderKeyDistribution};
use mls_rs::mls_rs_codec::MlsDecode;
use mls_rs_core::key_package::KeyPackageData;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use vodozemac::olm::{Account, InboundCreationResult, OlmMessage, SessionConfig};

use crate::costs::{CostTable, MlsCosts, MlsPoint, OlmCosts, SenderKeyCosts};

/// What to measure.
#[derive(Clone, Debug)]
pub struct MeasureOpts {
    /// Group sizes at which MLS runs for real.
    pub mls_sizes: Vec<u64>,
    /// Repetitions of each MLS commit (each is applied, so the state moves on).
    pub reps: usize,
    /// Iterations of each Olm and Sender Keys operation.
    pub iterations: usize,
    /// Seed of every RNG grove-proto uses (vodozemac draws from the OS; its sizes do not depend on it).
    pub seed: u64,
}

/// Plaintext of a group message and of a membership notice.
pub const MESSAGE_BYTES: usize = 100;
const ROOM: &str = "garden";

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A CPU clock: the CPU time of the whole process (every thread: mls-rs works on rayon
/// threads too) on Unix, so that time lost to other processes on a shared machine is not
/// counted; wall-clock time elsewhere.
#[derive(Clone, Copy)]
struct CpuClock(Duration);

impl CpuClock {
    #[cfg(unix)]
    fn now() -> CpuClock {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        CpuClock(Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32))
    }

    #[cfg(not(unix))]
    fn now() -> CpuClock {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        CpuClock(START.get_or_init(Instant::now).elapsed())
    }

    fn elapsed(self) -> Duration {
        CpuClock::now().0.saturating_sub(self.0)
    }
}

/// What the CPU figures are, for the report.
pub const CPU_CLOCK: &str = if cfg!(unix) {
    "process CPU time (CLOCK_PROCESS_CPUTIME_ID: every thread of the process, not time lost to other processes)"
} else {
    "wall-clock time"
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = CpuClock::now();
    let r = f();
    (r, micros(t.elapsed()))
}

/// Measures everything. `progress` gets a line per stage.
pub fn measure(opts: &MeasureOpts, mut progress: impl FnMut(String)) -> Result<CostTable> {
    progress("Sender Keys".into());
    let (sender_keys, dist_plain) = sender_keys(opts)?;
    progress("Olm (vodozemac)".into());
    let olm = olm(opts, dist_plain)?;
    let mut points = Vec::new();
    for &n in &opts.mls_sizes {
        let t = Instant::now();
        points.push(mls_point(n, opts, &mut progress)?);
        progress(format!("MLS N={n} done in {:.1} s", t.elapsed().as_secs_f64()));
    }
    Ok(CostTable { olm, sender_keys, mls: MlsCosts { points } })
}

/// Sender Keys costs and the size of a serialised distribution.
fn sender_keys(opts: &MeasureOpts) -> Result<(SenderKeyCosts, usize)> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let alice = Identity::from_secret_bytes([1; 32]).user_id();
    let e = |e: grove_proto::senderkeys::SenderKeyError| anyhow!("sender keys: {e}");
    let k = opts.iterations.max(1);
    let now = 1_800_000_000;

    let t = CpuClock::now();
    let mut dists = Vec::with_capacity(k);
    for _ in 0..k {
        let c = SenderChain::new(&mut rng, ROOM, 1, alice, now).map_err(e)?;
        dists.push(c.distribution().to_bytes());
    }
    let new_chain_us = micros(t.elapsed()) / k as f64;
    let distribution_bytes = dists[0].len();

    let t = CpuClock::now();
    for d in &dists {
        let d = SenderKeyDistribution::from_bytes(d).map_err(e)?;
        std::hint::black_box(ReceiverChain::from_distribution(&d));
    }
    let install_us = micros(t.elapsed()) / k as f64;

    let mut chain = SenderChain::new(&mut rng, ROOM, 1, alice, now).map_err(e)?;
    let mut receiver = ReceiverChain::from_distribution(&chain.distribution());
    let plaintext = [0x42u8; MESSAGE_BYTES];
    let t = CpuClock::now();
    let mut messages = Vec::with_capacity(k);
    for _ in 0..k {
        messages.push(chain.encrypt(&plaintext).map_err(e)?);
    }
    let encrypt_us = micros(t.elapsed()) / k as f64;
    let t = CpuClock::now();
    for m in &messages {
        receiver = receiver.decrypt(m).map_err(e)?.1;
    }
    let decrypt_us = micros(t.elapsed()) / k as f64;
    Ok((
        SenderKeyCosts {
            message_bytes: messages[0].len() as u64,
            distribution_bytes: distribution_bytes as u64,
            encrypt_us,
            decrypt_us,
            new_chain_us,
            install_us,
        },
        distribution_bytes,
    ))
}

/// Olm costs; `dist_plain` is the size of a Sender Keys distribution to carry.
fn olm(opts: &MeasureOpts, dist_plain: usize) -> Result<OlmCosts> {
    let cfg = SessionConfig::version_1();
    let alice = Account::new();
    let hello = [0x11u8; MESSAGE_BYTES];
    let k = opts.iterations.clamp(1, 500);
    let (mut out_us, mut in_us, mut prekey_bytes) = (Vec::new(), Vec::new(), 0);
    let mut pair = None;
    for _ in 0..k {
        let mut bob = Account::new();
        bob.generate_one_time_keys(1);
        let otk = *bob.one_time_keys().values().next().context("no one-time key")?;
        bob.mark_keys_as_published();
        let (r, t) = timed(|| -> Result<_> {
            let mut s = alice.create_outbound_session(cfg, bob.curve25519_key(), otk)?;
            let m = s.encrypt(hello)?;
            Ok((s, m))
        });
        let (s, m) = r?;
        out_us.push(t);
        let OlmMessage::PreKey(pre) = &m else { bail!("the first Olm message is not a pre-key message") };
        prekey_bytes = m.to_parts().1.len() as u64;
        let (r, t) = timed(|| bob.create_inbound_session(cfg, alice.curve25519_key(), pre));
        let InboundCreationResult { session, plaintext } = r?;
        in_us.push(t);
        if plaintext != hello {
            bail!("Olm pre-key message decrypted wrong");
        }
        pair = Some((s, session));
    }
    let (mut a, mut b) = pair.context("no Olm session")?;
    // Bob answers once, so Alice's next messages are normal messages (not pre-key).
    let reply = b.encrypt(b"ok")?;
    a.decrypt(&reply)?;
    let msg = [0x42u8; MESSAGE_BYTES];
    let iters = opts.iterations.max(1);
    let t = CpuClock::now();
    let mut msgs = Vec::with_capacity(iters);
    for _ in 0..iters {
        msgs.push(a.encrypt(msg)?);
    }
    let encrypt_us = micros(t.elapsed()) / iters as f64;
    let t = CpuClock::now();
    for m in &msgs {
        std::hint::black_box(b.decrypt(m)?);
    }
    let decrypt_us = micros(t.elapsed()) / iters as f64;
    let OlmMessage::Normal(_) = &msgs[0] else { bail!("expected a normal Olm message") };
    let message_bytes = msgs[0].to_parts().1.len() as u64;
    let dist = a.encrypt(vec![0x33u8; dist_plain])?;
    Ok(OlmCosts {
        message_bytes,
        notice_bytes: message_bytes,
        distribution_bytes: dist.to_parts().1.len() as u64,
        prekey_bytes,
        encrypt_us,
        decrypt_us,
        session_out_us: median(out_us),
        session_in_us: median(in_us),
    })
}

/// A member known only by its secrets: identity and current leaf HPKE secret.
struct Member {
    secret: [u8; 32],
    leaf_sk: Vec<u8>,
}

/// An engine drawing from its own seeded RNG (grove-proto reads no OS randomness).
pub fn engine(secret: [u8; 32], rng: &mut StdRng) -> MlsEngine {
    MlsEngine::with_rng(Identity::from_secret_bytes(secret), StdRng::seed_from_u64(rng.gen()))
}

/// A fresh member with one KeyPackage: (engine, secret, KeyPackage bytes, leaf HPKE secret,
/// the changes that stored the KeyPackage's secrets).
pub type NewMember = (MlsEngine, [u8; 32], Vec<u8>, Vec<u8>, Changes);

/// A fresh member with one KeyPackage (see [`NewMember`]); its leaf secret is what [`splice`]
/// needs to act for it.
pub fn new_member(rng: &mut StdRng) -> Result<NewMember> {
    let secret: [u8; 32] = rng.gen();
    let mut eng = engine(secret, rng);
    let (mut kps, _, ch) = eng.key_packages(1, false)?;
    let data = ch.key_packages.first().and_then(|k| k.data.as_ref()).context("no KeyPackage secret written")?;
    let kpd = KeyPackageData::mls_decode(&mut &data[..]).map_err(|e| anyhow!("KeyPackageData: {e}"))?;
    let leaf_sk = kpd.leaf_node_key.to_vec();
    let kp = kps.pop().context("no KeyPackage")?;
    Ok((eng, secret, kp, leaf_sk, ch))
}

/// The user id of an identity secret.
pub fn user(secret: [u8; 32]) -> UserId {
    Identity::from_secret_bytes(secret).user_id()
}

/// The MLS signature secret of an identity secret, as [`splice`] takes it.
pub fn signer(secret: [u8; 32]) -> Vec<u8> {
    signing_identity(&Identity::from_secret_bytes(secret)).1.as_bytes().to_vec()
}

/// The snapshot `ch` writes for group `g`, if it writes one.
pub fn snapshot_of(ch: &Changes, g: &GroupId) -> Option<Vec<u8>> {
    ch.groups.iter().find(|w| &w.group_id == g).and_then(|w| w.snapshot.bytes()).map(|s| s.to_vec())
}

fn varint(n: usize) -> Vec<u8> {
    if n < 1 << 6 {
        vec![n as u8]
    } else if n < 1 << 14 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else {
        ((n as u32) | 0x8000_0000).to_be_bytes().to_vec()
    }
}

fn read_varint(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.first()?;
    match first >> 6 {
        0 => Some((first as usize, 1)),
        1 => Some((((first as usize & 0x3f) << 8) | *b.get(1)? as usize, 2)),
        2 => Some((u32::from_be_bytes([first & 0x3f, *b.get(1)?, *b.get(2)?, *b.get(3)?]) as usize, 4)),
        _ => None,
    }
}

fn byte_vec(b: &[u8]) -> Vec<u8> {
    let mut v = varint(b.len());
    v.extend_from_slice(b);
    v
}

/// Builds member `index`'s snapshot from a template member's current mls-rs snapshot: every
/// public and shared part (group context, ratchet tree, transcript, epoch secrets, key
/// schedule) is the group's, the private tree is replaced by `index`'s (its leaf secret only,
/// as right after joining) and the signer by `index`'s. Enough to make a valid commit as that
/// member; mls-rs' snapshot layout is `version, RawGroupState, TreeKemPrivate{self_index u32,
/// secret_keys: Vec<Option<HpkeSecretKey>>}, EpochSecrets, KeySchedule, pending updates,
/// pending commit, signer` (mls-rs 0.57 `group/snapshot.rs`). The private tree is found by
/// the template's own leaf secret, the signer at the end; both are checked. grove-bench's MLS benchmark uses it too.
pub fn splice(
    t: &[u8],
    t_index: u32,
    t_leaf_sk: &[u8],
    t_signer: &[u8],
    index: u32,
    leaf_sk: &[u8],
    signer: &[u8],
) -> Result<Vec<u8>> {
    let mut pat = vec![1u8];
    pat.extend(byte_vec(t_leaf_sk));
    let pos = t.windows(pat.len()).position(|w| w == pat.as_slice()).context("template leaf secret not found")?;
    let mut span = None;
    for vlen in [1usize, 2, 4] {
        if pos < vlen + 4 {
            continue;
        }
        let Some((len, l)) = read_varint(&t[pos - vlen..pos]) else { continue };
        if l != vlen || t[pos - vlen - 4..pos - vlen] != t_index.to_be_bytes() || pos + len > t.len() {
            continue;
        }
        span = Some((pos - vlen - 4, pos + len));
        break;
    }
    let (start, end) = span.context("template private tree not found")?;
    let tail = byte_vec(t_signer);
    if !t.ends_with(&tail) || end > t.len() - tail.len() {
        bail!("template snapshot does not end with its signer");
    }
    let mut entry = vec![1u8];
    entry.extend(byte_vec(leaf_sk));
    let mut out = Vec::with_capacity(t.len() + 64);
    out.extend_from_slice(&t[..start]);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend(byte_vec(&entry));
    out.extend_from_slice(&t[end..t.len() - tail.len()]);
    out.extend(byte_vec(signer));
    Ok(out)
}

/// MLS costs at `n` members (n ≥ 6), steady state.
fn mls_point(n: u64, opts: &MeasureOpts, progress: &mut impl FnMut(String)) -> Result<MlsPoint> {
    if n < 6 {
        bail!("MLS is measured from N = 6");
    }
    let mut rng = StdRng::seed_from_u64(opts.seed ^ (0x5117 + n));
    let creator_secret: [u8; 32] = rng.gen();
    let creator_user = user(creator_secret);
    let mut creator = engine(creator_secret, &mut rng);
    let (g, pgs, _) = creator.create_group()?;
    let mut hub = HubGroup::observe(&pgs.group_info, &pgs.ratchet_tree)?;
    let (mut recv, recv_secret, recv_kp, recv_leaf_sk, _) = new_member(&mut rng)?;

    progress(format!("MLS N={n}: {} KeyPackages, one commit adding N−1", n - 1));
    let mut kps = vec![recv_kp];
    let mut leaves: Vec<Option<Member>> = vec![None, None];
    for _ in 2..n {
        let (_, secret, kp, leaf_sk, _) = new_member(&mut rng)?;
        kps.push(kp);
        leaves.push(Some(Member { secret, leaf_sk }));
    }
    let (pending, _) = creator.commit_add(&g, &kps)?;
    drop(kps);
    hub = hub.check_commit(&pending.commit, &creator_user)?.next;
    creator.apply_pending(&g)?;
    let welcome = pending.welcome.context("no Welcome")?;
    let (_, _, ch) = recv.join(&welcome, &hub.ratchet_tree()?)?;
    let mut recv_snapshot = snapshot_of(&ch, &g).context("no receiver snapshot")?;

    progress(format!("MLS N={n}: {} members commit an update (steady state)", n - 2));
    let mut order: Vec<usize> = (2..n as usize).collect();
    order.shuffle(&mut rng);
    let recv_signer = signer(recv_secret);
    for leaf in order {
        let m = leaves[leaf].as_ref().context("no member")?;
        // The receiver journals commits: write its current state (a checkpoint) to splice from.
        if let Some(s) = snapshot_of(&recv.checkpoint(&g)?, &g) {
            recv_snapshot = s;
        }
        let snap = splice(&recv_snapshot, 1, &recv_leaf_sk, &recv_signer, leaf as u32, &m.leaf_sk, &signer(m.secret))?;
        let state = StoredState {
            groups: vec![StoredGroup {
                group_id: g.clone(),
                snapshot: snap.into(),
                epochs: Vec::new(),
                journal: Vec::new(),
            }],
            key_packages: Vec::new(),
        };
        let mut ghost =
            MlsEngine::load_with_rng(Identity::from_secret_bytes(m.secret), state, StdRng::seed_from_u64(rng.gen()))?;
        let (pending, _) = ghost.commit_update(&g)?;
        drop(ghost);
        hub = hub.check_commit(&pending.commit, &user(m.secret))?.next;
        creator.process(&g, &pending.commit)?;
        let (_, ch) = recv.process(&g, &pending.commit)?;
        if let Some(s) = snapshot_of(&ch, &g) {
            recv_snapshot = s;
        }
    }

    progress(format!("MLS N={n}: measuring"));
    let (mut update, mut remove, mut add, mut process, mut join) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut update_b, mut remove_b, mut add_b, mut welcome_b, mut tree_b) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    // One creator commit: sender time, hub, apply, receiver time.
    let mut commit = |make: &mut dyn FnMut(&mut MlsEngine) -> Result<grove_proto::mls::engine::PendingCommit>,
                      creator: &mut MlsEngine,
                      recv: &mut MlsEngine,
                      hub: &mut HubGroup|
     -> Result<(grove_proto::mls::engine::PendingCommit, f64)> {
        let (r, t) = timed(|| make(creator));
        let pending = r?;
        *hub = hub.check_commit(&pending.commit, &creator_user)?.next;
        creator.apply_pending(&g)?;
        let (r, tp) = timed(|| recv.process(&g, &pending.commit));
        r?;
        process.push(tp);
        Ok((pending, t))
    };
    for _ in 0..opts.reps.max(1) {
        let gg = g.clone();
        let (p, t) = commit(&mut |e: &mut MlsEngine| Ok(e.commit_update(&gg)?.0), &mut creator, &mut recv, &mut hub)?;
        update.push(t);
        update_b.push(p.commit.len() as f64);

        let candidates: Vec<usize> = (2..leaves.len()).filter(|&i| leaves[i].is_some()).collect();
        let x = *candidates.choose(&mut rng).context("nobody to remove")?;
        let victim = user(leaves[x].as_ref().context("no member")?.secret);
        let (p, t) =
            commit(&mut |e: &mut MlsEngine| Ok(e.commit_remove(&gg, &[victim])?.0), &mut creator, &mut recv, &mut hub)?;
        remove.push(t);
        remove_b.push(p.commit.len() as f64);
        leaves[x] = None;

        let (mut joiner, js, kp, jleaf, _) = new_member(&mut rng)?;
        let (p, t) = commit(
            &mut |e: &mut MlsEngine| Ok(e.commit_add(&gg, std::slice::from_ref(&kp))?.0),
            &mut creator,
            &mut recv,
            &mut hub,
        )?;
        add.push(t);
        add_b.push(p.commit.len() as f64);
        let welcome = p.welcome.context("no Welcome")?;
        welcome_b = welcome.len() as u64;
        let tree = hub.ratchet_tree()?;
        tree_b = tree.len() as u64;
        let (r, t) = timed(|| joiner.join(&welcome, &tree));
        r?;
        join.push(t);
        leaves[x] = Some(Member { secret: js, leaf_sk: jleaf });
    }
    let (mut enc, mut dec, mut msg_b) = (Vec::new(), Vec::new(), 0);
    for _ in 0..(opts.reps * 5).max(5) {
        let (r, t) = timed(|| creator.encrypt(&g, &[0x42u8; MESSAGE_BYTES]));
        let (ct, _, _) = r?;
        enc.push(t);
        msg_b = ct.len() as u64;
        let (r, t) = timed(|| recv.process(&g, &ct));
        r?;
        dec.push(t);
    }
    Ok(MlsPoint {
        n,
        message_bytes: msg_b,
        encrypt_us: median(enc),
        decrypt_us: median(dec),
        update_bytes: median(update_b) as u64,
        update_us: median(update),
        remove_bytes: median(remove_b) as u64,
        remove_us: median(remove),
        add_bytes: median(add_b) as u64,
        add_us: median(add),
        process_us: median(process),
        welcome_bytes: welcome_b,
        tree_bytes: tree_b,
        join_us: median(join),
    })
}
