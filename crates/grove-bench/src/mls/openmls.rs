//! Baseline: openmls 0.9 as its examples use it (`OpenMlsRustCrypto` with its memory storage,
//! Basic credentials, `MlsGroupCreateConfig` defaults plus the ratchet tree in the Welcome),
//! bare group, the same operations as grove's. openmls writes its storage on every operation,
//! so its times include that. Messages go through bytes (serialised and parsed) as on a wire.

use anyhow::{anyhow, bail, Context, Result};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls::treesync::LeafNodeParameters;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{progress, timed, Opts, Results};

const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

struct M {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    cwk: CredentialWithKey,
}

fn member(name: &str) -> Result<M> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CS.signature_algorithm()).map_err(|e| anyhow!("keygen: {e:?}"))?;
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.to_public_vec().into(),
    };
    Ok(M { provider, signer, cwk })
}

fn key_package(m: &M) -> Result<KeyPackage> {
    let b = KeyPackage::builder()
        .build(CS, &m.provider, &m.signer, m.cwk.clone())
        .map_err(|e| anyhow!("key package: {e:?}"))?;
    Ok(b.key_package().clone())
}

fn bytes(m: &MlsMessageOut) -> Result<Vec<u8>> {
    m.tls_serialize_detached().map_err(|e| anyhow!("encode: {e:?}"))
}

fn parse(b: &[u8]) -> Result<MlsMessageIn> {
    MlsMessageIn::tls_deserialize_exact(b).map_err(|e| anyhow!("decode: {e:?}"))
}

fn config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder().ciphersuite(CS).use_ratchet_tree_extension(true).build()
}

fn join(m: &M, welcome: &[u8]) -> Result<MlsGroup> {
    let MlsMessageBodyIn::Welcome(w) = parse(welcome)?.extract() else { bail!("not a Welcome") };
    let staged = StagedWelcome::new_from_welcome(&m.provider, config().join_config(), w, None)
        .map_err(|e| anyhow!("welcome: {e:?}"))?;
    staged.into_group(&m.provider).map_err(|e| anyhow!("join: {e:?}"))
}

/// Processes a commit (bytes) and merges it.
fn process_commit(g: &mut MlsGroup, m: &M, commit: &[u8]) -> Result<()> {
    let pm = parse(commit)?.try_into_protocol_message().map_err(|e| anyhow!("{e:?}"))?;
    let processed = g.process_message(&m.provider, pm).map_err(|e| anyhow!("process: {e:?}"))?;
    let ProcessedMessageContent::StagedCommitMessage(sc) = processed.into_content() else { bail!("not a commit") };
    g.merge_staged_commit(&m.provider, *sc).map_err(|e| anyhow!("merge: {e:?}"))
}

fn footprint(m: &M) -> usize {
    let values = m.provider.storage().values.read().map(|v| v.iter().map(|(k, v)| k.len() + v.len()).sum());
    values.unwrap_or(0)
}

pub fn run(n: usize, opts: &Opts, res: &mut Results) -> Result<()> {
    let sc = "openmls bare";
    let mut rng = StdRng::seed_from_u64(0x0de1 + n as u64);
    let c = member("creator")?;
    let r = member("receiver")?;
    let mut kps = vec![key_package(&r)?];
    for i in 2..n {
        kps.push(key_package(&member(&format!("m{i}"))?)?);
    }
    progress(format!("  openmls N={n}: KeyPackages done; creating"));
    let mut group =
        MlsGroup::new(&c.provider, &c.signer, &config(), c.cwk.clone()).map_err(|e| anyhow!("create: {e:?}"))?;
    let (out, t) = timed(|| group.add_members(&c.provider, &c.signer, &kps));
    let (commit, welcome, _) = out.map_err(|e| anyhow!("add: {e:?}"))?;
    let commit = bytes(&commit)?;
    let welcome = bytes(&welcome)?;
    res.tb(sc, "create: commit adding N−1 (sender)", n, t, commit.len());
    res.b(sc, "create: Welcome (with tree)", n, welcome.len());
    drop(kps);
    let (out, t) = timed(|| group.merge_pending_commit(&c.provider));
    out.map_err(|e| anyhow!("merge: {e:?}"))?;
    res.t(sc, "create: apply own commit", n, t);
    let (out, t) = timed(|| join(&r, &welcome));
    let mut rgroup = out?;
    res.t(sc, "join from bulk Welcome", n, t);

    let mut alive = vec![true; n];
    for rep in 0..opts.reps {
        progress(format!("  openmls N={n}: rep {} of {}", rep + 1, opts.reps));
        let (out, t) = timed(|| group.self_update(&c.provider, &c.signer, LeafNodeParameters::default()));
        let commit = bytes(&out.map_err(|e| anyhow!("update: {e:?}"))?.into_commit())?;
        res.tb(sc, "update: commit (sender)", n, t, commit.len());
        let (out, t) = timed(|| group.merge_pending_commit(&c.provider));
        out.map_err(|e| anyhow!("merge: {e:?}"))?;
        res.t(sc, "update: apply own commit", n, t);
        let (out, t) = timed(|| process_commit(&mut rgroup, &r, &commit));
        out?;
        res.t(sc, "update: receiver process", n, t);
        res.b(sc, "storage footprint (receiver)", n, footprint(&r));

        let cands: Vec<usize> = (2..n).filter(|&i| alive[i]).collect();
        let x = *cands.choose(&mut rng).context("nobody to remove")?;
        let (out, t) = timed(|| group.remove_members(&c.provider, &c.signer, &[LeafNodeIndex::new(x as u32)]));
        let commit = bytes(&out.map_err(|e| anyhow!("remove: {e:?}"))?.0)?;
        res.tb(sc, "remove: commit (sender)", n, t, commit.len());
        group.merge_pending_commit(&c.provider).map_err(|e| anyhow!("merge: {e:?}"))?;
        let (out, t) = timed(|| process_commit(&mut rgroup, &r, &commit));
        out?;
        res.t(sc, "remove: receiver process", n, t);
        alive[x] = false;

        let j = member(&format!("joiner{rep}"))?;
        let jkp = key_package(&j)?;
        let (out, t) = timed(|| group.add_members(&c.provider, &c.signer, &[jkp]));
        let (commit, welcome, _) = out.map_err(|e| anyhow!("add: {e:?}"))?;
        let (commit, welcome) = (bytes(&commit)?, bytes(&welcome)?);
        res.tb(sc, "add 1: commit (sender)", n, t, commit.len());
        res.b(sc, "add 1: Welcome (with tree)", n, welcome.len());
        group.merge_pending_commit(&c.provider).map_err(|e| anyhow!("merge: {e:?}"))?;
        let (out, t) = timed(|| process_commit(&mut rgroup, &r, &commit));
        out?;
        res.t(sc, "add 1: receiver process", n, t);
        let (out, t) = timed(|| join(&j, &welcome));
        out?;
        res.tb(sc, "join: from Welcome with tree", n, t, welcome.len());
        alive[x] = true;
    }
    for _ in 0..(opts.reps * 5).max(5) {
        let (out, te) = timed(|| group.create_message(&c.provider, &c.signer, &[7u8; 100]));
        let ct = bytes(&out.map_err(|e| anyhow!("encrypt: {e:?}"))?)?;
        let (out, td) = timed(|| -> Result<()> {
            let pm = parse(&ct)?.try_into_protocol_message().map_err(|e| anyhow!("{e:?}"))?;
            let processed = rgroup.process_message(&r.provider, pm).map_err(|e| anyhow!("decrypt: {e:?}"))?;
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(_) => Ok(()),
                _ => bail!("not an application message"),
            }
        });
        out?;
        res.tb(sc, "msg 100 B: encrypt", n, te, ct.len());
        res.t(sc, "msg 100 B: decrypt", n, td);
        res.t(sc, "msg 100 B: encrypt + decrypt", n, te + td);
    }
    Ok(())
}
