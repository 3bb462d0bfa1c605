//! grove's engine at N members: bare group (one commit adding N−1), then the steady state
//! (members update in turn), with the hub validating every commit.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use grove_client::{Batch, ClientStore};
use grove_proto::identity::{Identity, UserId};
use grove_proto::mls::engine::{
    Changes, GroupId, MlsEngine, PendingCommit, StoredGroup, StoredState, DEFAULT_HANDSHAKE_BOUND,
    DEFAULT_JOURNAL_BOUND,
};
use grove_proto::mls::hub::HubGroup;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use grove_sim::measure::splice;
use grove_sim::measure::{engine, new_member, signer, snapshot_of, user};

use super::{fmt_b, fmt_ms, progress, timed, Opts, Results};

/// A member simulated by its secrets only: identity and current leaf HPKE secret.
#[derive(Clone)]
struct Member {
    secret: [u8; 32],
    leaf_sk: Vec<u8>,
    /// Its leaf key is still the KeyPackage's (it has not committed), so a ghost can act for it.
    spliceable: bool,
}

fn changes_bytes(ch: &Changes) -> usize {
    let g: usize = ch
        .groups
        .iter()
        .map(|w| {
            w.snapshot.bytes().map_or(0, |s| s.len())
                + w.epochs.iter().map(|e| e.data.as_ref().map_or(0, |d| d.len())).sum::<usize>()
                + w.journal.iter().map(|r| r.entry.len()).sum::<usize>()
        })
        .sum();
    g + ch.key_packages.iter().map(|k| k.data.as_ref().map_or(0, |d| d.len())).sum::<usize>()
}

fn persist(store: &mut ClientStore, ch: Changes) -> Result<(Duration, usize)> {
    let size = changes_bytes(&ch);
    let (r, t) = timed(|| store.commit(Batch { changes: vec![ch], ..Default::default() }));
    r.map_err(|e| anyhow!("client store: {e}"))?;
    Ok((t, size))
}

struct Room {
    n: usize,
    g: GroupId,
    creator: MlsEngine,
    creator_user: UserId,
    cstore: ClientStore,
    recv: MlsEngine,
    rstore: ClientStore,
    recv_secret: [u8; 32],
    recv_leaf_sk: Vec<u8>,
    recv_snapshot: Vec<u8>,
    hub: HubGroup,
    /// Leaf index → member (0: creator, 1: receiver: `None`).
    leaves: Vec<Option<Member>>,
    dir: tempfile::TempDir,
    joins: usize,
    /// The fill's changes of the creator and the receiver, not yet in their stores (written
    /// once, by [`Room::flush`], before anything is measured).
    unwritten: (Changes, Changes),
    rng: StdRng,
}

impl Room {
    fn set_recv_snapshot(&mut self, ch: &Changes) {
        if let Some(s) = snapshot_of(ch, &self.g) {
            self.recv_snapshot = s;
        }
    }

    /// A commit by the creator: sender, hub, apply, receiver (each timed, with persistence).
    fn creator_commit(
        &mut self,
        sc: &str,
        op: &str,
        res: &mut Results,
        make: impl FnOnce(
            &mut MlsEngine,
            &GroupId,
        ) -> Result<(PendingCommit, Changes), grove_proto::mls::engine::EngineError>,
    ) -> Result<PendingCommit> {
        let n = self.n;
        let (r, t) = timed(|| make(&mut self.creator, &self.g));
        let (pending, ch) = r?;
        res.tb(sc, &format!("{op}: commit (sender)"), n, t, pending.commit.len());
        let (t, b) = persist(&mut self.cstore, ch)?;
        res.tb(sc, &format!("{op}: sender persist"), n, t, b);
        let (r, t) = timed(|| self.hub.check_commit(&pending.commit, &self.creator_user));
        self.hub = r?.next;
        res.t(sc, &format!("{op}: hub check_commit"), n, t);
        let (r, t) = timed(|| self.creator.apply_pending(&self.g));
        let (_, ch) = r?;
        res.t(sc, &format!("{op}: apply own commit"), n, t);
        persist(&mut self.cstore, ch)?;
        let (r, tp) = timed(|| self.recv.process(&self.g, &pending.commit));
        let (_, ch) = r?;
        self.set_recv_snapshot(&ch);
        let (tw, b) = persist(&mut self.rstore, ch)?;
        res.t(sc, &format!("{op}: receiver process"), n, tp);
        res.tb(sc, &format!("{op}: receiver persist"), n, tw, b);
        res.t(sc, &format!("{op}: receiver process + persist"), n, tp + tw);
        Ok(pending)
    }

    /// One commit by the member at `leaf`, made by a ghost engine (see [`splice`]), validated by
    /// the hub and processed by the creator and the receiver. Untimed.
    fn ghost_update(&mut self, leaf: usize) -> Result<()> {
        let m = self.leaves[leaf].clone().context("no member at that leaf")?;
        if !m.spliceable {
            bail!("leaf {leaf} already committed");
        }
        // The receiver journals commits: write its current state (a checkpoint) to splice from.
        let ch = self.recv.checkpoint(&self.g)?;
        self.set_recv_snapshot(&ch);
        self.unwritten.1.merge(ch);
        let snap = splice(
            &self.recv_snapshot,
            1,
            &self.recv_leaf_sk,
            &signer(self.recv_secret),
            leaf as u32,
            &m.leaf_sk,
            &signer(m.secret),
        )?;
        let state = StoredState {
            groups: vec![StoredGroup {
                group_id: self.g.clone(),
                snapshot: snap.into(),
                epochs: Vec::new(),
                journal: Vec::new(),
            }],
            key_packages: Vec::new(),
        };
        let mut ghost = MlsEngine::load_with_rng(
            Identity::from_secret_bytes(m.secret),
            state,
            StdRng::seed_from_u64(self.rng.gen()),
        )?;
        let (pending, _) = ghost.commit_update(&self.g)?;
        drop(ghost);
        self.deliver(&pending.commit, &user(m.secret))?;
        if let Some(m) = self.leaves[leaf].as_mut() {
            m.spliceable = false;
        }
        Ok(())
    }

    /// An untimed commit by another member: the hub, the creator and the receiver each take it,
    /// in parallel (at 10,000 members each costs tens of ms); their changes wait in
    /// `unwritten` for [`Room::flush`].
    fn deliver(&mut self, commit: &[u8], committer: &UserId) -> Result<()> {
        let (hub, creator, recv) = std::thread::scope(|s| {
            let g = &self.g;
            let hub = &self.hub;
            let hub = s.spawn(move || hub.check_commit(commit, committer).map(|c| c.next));
            let creator = &mut self.creator;
            let creator = s.spawn(move || creator.process(g, commit));
            let recv = self.recv.process(g, commit);
            (hub.join(), creator.join(), recv)
        });
        self.hub = hub.map_err(|_| anyhow!("the hub's check panicked"))??;
        let (_, ch) = creator.map_err(|_| anyhow!("the creator's processing panicked"))??;
        self.unwritten.0.merge(ch);
        let (_, ch) = recv?;
        self.set_recv_snapshot(&ch);
        self.unwritten.1.merge(ch);
        Ok(())
    }

    /// Writes the fill's changes to the creator's and the receiver's stores (one transaction
    /// each: the merged changes hold the last snapshot and the journal rows after it).
    fn flush(&mut self) -> Result<()> {
        let (c, r) = std::mem::take(&mut self.unwritten);
        persist(&mut self.cstore, c)?;
        persist(&mut self.rstore, r)?;
        Ok(())
    }

    /// The measured operations, `reps` times each (the state moves on: each is applied).
    fn ops(&mut self, sc: &str, reps: usize, res: &mut Results) -> Result<()> {
        let n = self.n;
        for rep in 0..reps {
            progress(format!("  {sc} N={n}: rep {} of {reps}: update, remove, add, messages", rep + 1));
            self.creator_commit(sc, "update", res, |e, g| e.commit_update(g))?;

            // Remove a random member (not the creator or the receiver) ...
            let candidates: Vec<usize> = (2..self.leaves.len()).filter(|&i| self.leaves[i].is_some()).collect();
            let x = *candidates.choose(&mut self.rng).context("nobody to remove")?;
            let victim = user(self.leaves[x].as_ref().map(|m| m.secret).context("no member")?);
            self.creator_commit(sc, "remove", res, |e, g| e.commit_remove(g, &[victim]))?;
            self.leaves[x] = None;

            // ... and add one: it takes the blank leaf.
            let (mut joiner, js, kp, jleaf, jch) = new_member(&mut self.rng)?;
            let pending = self.creator_commit(sc, "add 1", res, |e, g| e.commit_add(g, &[kp]))?;
            let welcome = pending.welcome.context("no Welcome")?;
            res.b(sc, "add 1: Welcome", n, welcome.len());
            let (tree, t) = timed(|| self.hub.ratchet_tree());
            let tree = tree?;
            res.tb(sc, "ratchet tree (hub export)", n, t, tree.len());
            let (r, t) = timed(|| joiner.join(&welcome, &tree));
            let (_, info, ch) = r?;
            res.tb(sc, "join: engine (Welcome + tree from hub)", n, t, welcome.len() + tree.len());
            self.joins += 1;
            let mut jstore = ClientStore::open(&self.dir.path().join(format!("join-{}.db", self.joins)))
                .map_err(|e| anyhow!("client store: {e}"))?;
            persist(&mut jstore, jch)?;
            let (t, b) = persist(&mut jstore, ch)?;
            res.tb(sc, "join: persist", n, t, b);
            if info.members.get(x) != Some(&user(js)) {
                bail!("the joiner did not take leaf {x}");
            }
            // Tree hygiene, as grove's client does after every join: the joiner commits an
            // update at once, which fills the direct path the removal above left blank (the
            // joiner took the removed member's leaf, so it is the same path). Untimed. Not in
            // the bare group, which stays bare to compare with the baselines (their joiners
            // do not update).
            let hygiene = sc != "grove bare";
            if hygiene {
                let (pending, _) = joiner.commit_update(&self.g)?;
                joiner.apply_pending(&self.g)?;
                self.deliver(&pending.commit, &user(js))?;
                self.flush()?;
                res.b(sc, "add 1: joiner's first update (grove's client makes it at once)", n, pending.commit.len());
            }
            // After that update its leaf secret is no longer the KeyPackage's: no splicing.
            self.leaves[x] = Some(Member { secret: js, leaf_sk: jleaf, spliceable: !hygiene });
            drop(joiner);
        }

        // Application messages, 100 bytes, creator → receiver.
        let msgs = (reps * 5).max(5);
        for _ in 0..msgs {
            let (r, te) = timed(|| self.creator.encrypt(&self.g, &[7u8; 100]));
            let (ct, _, ch) = r?;
            let (tw, b) = persist(&mut self.cstore, ch)?;
            let (r, td) = timed(|| self.recv.process(&self.g, &ct));
            let (_, ch) = r?;
            self.set_recv_snapshot(&ch);
            let (tr, br) = persist(&mut self.rstore, ch)?;
            res.tb(sc, "msg 100 B: encrypt", n, te, ct.len());
            res.t(sc, "msg 100 B: decrypt", n, td);
            res.t(sc, "msg 100 B: encrypt + decrypt", n, te + td);
            res.tb(sc, "msg 100 B: persist sender", n, tw, b);
            res.tb(sc, "msg 100 B: persist receiver", n, tr, br);
        }
        // The journal: what a load replays, and what a checkpoint (every `DEFAULT_JOURNAL_BOUND`
        // messages, or on request) costs.
        // (It holds the messages and the commits above since the receiver's last checkpoint.)
        let rows = self.recv.journal_len(&self.g)?;
        let id = Identity::from_secret_bytes(self.recv_secret);
        let state = self.rstore.engine_state().map_err(|e| anyhow!("client store: {e}"))?;
        let handshakes = state.groups.iter().flat_map(|g| &g.journal).filter(|r| r.entry.first() == Some(&3)).count();
        if state.groups.iter().map(|g| g.journal.len()).sum::<usize>() != rows {
            bail!("the receiver's database and engine disagree on its journal");
        }
        // (Groups load on first use: the time includes that use.)
        let g = &self.g;
        let (r, t) = timed(|| {
            let e = MlsEngine::load_with_rng(id.clone(), state, StdRng::seed_from_u64(self.rng.gen()))?;
            e.epoch(g)
        });
        r?;
        res.t(sc, "load receiver: snapshot + journal (rows of the ops above)", n, t);
        progress(format!("  {sc} N={n}: that load replayed {rows} journal rows, {handshakes} of them commits"));
        for (who, eng, store) in
            [("sender", &mut self.creator, &mut self.cstore), ("receiver", &mut self.recv, &mut self.rstore)]
        {
            let (r, t) = timed(|| eng.checkpoint(&self.g));
            let ch = r?;
            res.tb(sc, &format!("checkpoint {who}: engine"), n, t, changes_bytes(&ch));
            let (t, _) = persist(store, ch)?;
            res.t(sc, &format!("checkpoint {who}: persist"), n, t);
        }
        let state = self.rstore.engine_state().map_err(|e| anyhow!("client store: {e}"))?;
        let (r, t) = timed(|| {
            let e = MlsEngine::load_with_rng(id, state, StdRng::seed_from_u64(self.rng.gen()))?;
            e.epoch(g)
        });
        r?;
        res.t(sc, "load receiver: snapshot, empty journal", n, t);
        // A message's share of the checkpoints: each side writes one per `bound` messages.
        let bound = DEFAULT_JOURNAL_BOUND as f64;
        let share = |res: &Results, what: &str| {
            ["sender", "receiver"]
                .iter()
                .map(|who| res.ms(sc, &format!("checkpoint {who}: {what}"), n))
                .sum::<Option<f64>>()
        };
        if let (Some(m), Some(c)) = (res.ms(sc, "msg 100 B: encrypt + decrypt", n), share(res, "engine")) {
            let t = m + c / bound;
            res.t(sc, "msg 100 B: encrypt + decrypt, incl. checkpoint share", n, Duration::from_secs_f64(t / 1e3));
        }
        if let (Some(ws), Some(wr), Some(c)) = (
            res.ms(sc, "msg 100 B: persist sender", n),
            res.ms(sc, "msg 100 B: persist receiver", n),
            share(res, "persist"),
        ) {
            let t = ws + wr + c / bound;
            res.t(sc, "msg 100 B: persist both, incl. checkpoint share", n, Duration::from_secs_f64(t / 1e3));
        }
        // A commit's share of the checkpoints: the receiver writes one per
        // `DEFAULT_HANDSHAKE_BOUND` handshakes it journals.
        let per = DEFAULT_HANDSHAKE_BOUND as f64;
        if let (Some(ce), Some(cp)) =
            (res.ms(sc, "checkpoint receiver: engine", n), res.ms(sc, "checkpoint receiver: persist", n))
        {
            for op in ["update", "remove", "add 1"] {
                if let Some(m) = res.ms(sc, &format!("{op}: receiver process + persist"), n) {
                    let t = m + (ce + cp) / per;
                    res.t(
                        sc,
                        &format!("{op}: receiver process + persist, incl. checkpoint share"),
                        n,
                        Duration::from_secs_f64(t / 1e3),
                    );
                }
            }
        }
        let (s, t) = timed(|| self.hub.snapshot());
        res.tb(sc, "hub snapshot", n, t, s?.len());
        Ok(())
    }
}

/// Everything for one N.
pub fn run(n: usize, opts: &Opts, res: &mut Results, notes: &mut Vec<String>) -> Result<()> {
    if n < 6 {
        bail!("N must be at least 6");
    }
    let mut rng = StdRng::seed_from_u64(0x6707e + n as u64);
    let dir = tempfile::tempdir()?;
    let sc = "grove bare";

    let creator_secret: [u8; 32] = rng.gen();
    let mut creator = engine(creator_secret, &mut rng);
    let mut cstore = ClientStore::open(&dir.path().join("creator.db")).map_err(|e| anyhow!("client store: {e}"))?;
    let (g, pgs, ch) = creator.create_group()?;
    persist(&mut cstore, ch)?;
    let mut hub = HubGroup::observe(&pgs.group_info, &pgs.ratchet_tree)?;

    let (mut recv, recv_secret, recv_kp, recv_leaf_sk, rch) = new_member(&mut rng)?;
    let mut rstore = ClientStore::open(&dir.path().join("recv.db")).map_err(|e| anyhow!("client store: {e}"))?;
    persist(&mut rstore, rch)?;

    progress(format!("  N={n}: generating {} KeyPackages", n - 2));
    let t0 = Instant::now();
    let mut kps = Vec::with_capacity(n - 1);
    kps.push(recv_kp);
    let mut leaves: Vec<Option<Member>> = vec![None, None];
    for _ in 2..n {
        let (_, secret, kp, leaf_sk, _) = new_member(&mut rng)?;
        kps.push(kp);
        leaves.push(Some(Member { secret, leaf_sk, spliceable: true }));
    }
    progress(format!(
        "  N={n}: KeyPackages done in {:.1} s; creating the group in one commit",
        t0.elapsed().as_secs_f64()
    ));

    // Create: one commit adding N−1.
    let (r, t) = timed(|| creator.commit_add(&g, &kps));
    let (pending, ch) = r?;
    let welcome = pending.welcome.clone().context("no Welcome")?;
    res.tb(sc, "create: commit adding N−1 (sender)", n, t, pending.commit.len());
    res.b(sc, "create: Welcome", n, welcome.len());
    let (t, b) = persist(&mut cstore, ch)?;
    res.tb(sc, "create: persist (ClientStore)", n, t, b);
    let (r, t) = timed(|| hub.check_commit(&pending.commit, &user(creator_secret)));
    hub = r?.next;
    res.t(sc, "create: hub check_commit", n, t);
    let (r, t) = timed(|| creator.apply_pending(&g));
    let (_, ch) = r?;
    res.t(sc, "create: apply own commit", n, t);
    persist(&mut cstore, ch)?;
    progress(format!("  N={n}: created; receiver joins from the bulk Welcome"));

    let tree = hub.ratchet_tree()?;
    let (r, t) = timed(|| recv.join(&welcome, &tree));
    let (_, info, ch) = r?;
    res.tb(sc, "join from bulk Welcome (Welcome + tree from hub)", n, t, welcome.len() + tree.len());
    if info.members.len() != n || info.members[1] != user(recv_secret) || info.members[0] != user(creator_secret) {
        bail!("unexpected leaf order");
    }
    let recv_snapshot = snapshot_of(&ch, &g).context("no receiver snapshot")?;
    persist(&mut rstore, ch)?;
    drop(kps);

    let mut room = Room {
        n,
        g,
        creator_user: user(creator_secret),
        creator,
        cstore,
        recv,
        rstore,
        recv_secret,
        recv_leaf_sk,
        recv_snapshot,
        hub,
        leaves,
        dir,
        joins: 0,
        unwritten: Default::default(),
        rng,
    };
    room.ops(sc, opts.reps, res)?;

    // Steady state: members update in turn (random order), the creator's own update measured at
    // 0 %, 10 %, 50 %, 100 % of the members updated.
    // (Members who joined in the ops above updated already, as grove's client does.)
    let mut order: Vec<usize> =
        (2..room.leaves.len()).filter(|&i| room.leaves[i].as_ref().is_some_and(|m| m.spliceable)).collect();
    order.shuffle(&mut room.rng);
    let total = order.len();
    let checkpoints = [(0usize, "0%"), (total / 10, "10%"), (total / 2, "50%"), (total, "100%")];
    let drain = |room: &mut Room, res: &mut Results, label: &str| -> Result<()> {
        room.flush()?;
        let pending = room.creator_commit("grove drain scratch", "update", res, |e, g| e.commit_update(g))?;
        let ms = res.ms("grove drain scratch", "update: commit (sender)", n);
        let rp = res.ms("grove drain scratch", "update: receiver process + persist", n);
        res.rows.retain(|r| r.scenario != "grove drain scratch");
        res.rec(
            "grove drain",
            &format!("commit@{label}"),
            n,
            ms.map(|m| Duration::from_secs_f64(m / 1e3)),
            Some(pending.commit.len()),
        );
        res.rec("grove drain", &format!("recv@{label}"), n, rp.map(|m| Duration::from_secs_f64(m / 1e3)), None);
        progress(format!(
            "  N={n}: {label} updated: creator's update {} / {}, receiver {}",
            ms.map(fmt_ms).unwrap_or_default(),
            fmt_b(pending.commit.len()),
            rp.map(fmt_ms).unwrap_or_default()
        ));
        Ok(())
    };
    drain(&mut room, res, "0%")?;
    let started = Instant::now();
    let mut done = 0usize;
    let mut complete = true;
    for (k, &leaf) in order.iter().enumerate() {
        if started.elapsed() > opts.fill_budget {
            complete = false;
            break;
        }
        room.ghost_update(leaf)?;
        done = k + 1;
        if done.is_multiple_of(200) || (done < 200 && done.is_multiple_of(50)) {
            progress(format!("  N={n}: {done}/{total} members updated ({:.0} s)", started.elapsed().as_secs_f64()));
        }
        if let Some((_, label)) = checkpoints.iter().find(|(c, _)| *c == done && *c > 0 && *c < total) {
            drain(&mut room, res, label)?;
        }
    }
    let fill_s = started.elapsed().as_secs_f64();
    if complete {
        drain(&mut room, res, "100%")?;
        notes.push(format!(
            "N={n}: all {total} other members updated in turn (ghost commits, each validated by the hub and processed by the creator and the receiver) in {fill_s:.0} s."
        ));
        progress(format!("  N={n}: steady state reached in {fill_s:.0} s; measuring"));
        room.ops("grove steady", opts.reps, res)?;
    } else {
        let pct = 100.0 * done as f64 / total as f64;
        let label = format!("{pct:.1}% (budget)");
        drain(&mut room, res, &label)?;
        notes.push(format!(
            "N={n}: the steady-state fill stopped at its budget of {:.0} s after {done} of {total} members updated ({pct:.1}%); the \"grove partial\" figures are at that state, not a full tree.",
            opts.fill_budget.as_secs_f64()
        ));
        progress(format!("  N={n}: fill budget reached at {done}/{total}; measuring the partial state"));
        room.ops("grove partial", opts.reps, res)?;
    }
    Ok(())
}
