//! Baseline: mls-rs 0.57 as its examples use it (Basic credentials, RustCrypto, default rules
//! with the ratchet tree in the Welcome, its in-memory group state storage, `write_to_storage`
//! measured separately), bare group, the same operations as grove's.

use anyhow::{anyhow, Context, Result};
use mls_rs::client_builder::{
    BaseConfig, WithCryptoProvider, WithGroupStateStorage, WithIdentityProvider, WithMlsRules,
};
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::storage_provider::in_memory::InMemoryGroupStateStorage;
use mls_rs::{CipherSuite, CipherSuiteProvider, Client, CryptoProvider, ExtensionList, MlsMessage};
use mls_rs_core::group::GroupStateStorage;
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{progress, timed, Opts, Results};

type Cfg = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<
        BasicIdentityProvider,
        WithCryptoProvider<RustCryptoProvider, WithGroupStateStorage<InMemoryGroupStateStorage, BaseConfig>>,
    >,
>;

const CS: CipherSuite = CipherSuite::CURVE25519_AES128;

fn client(name: &str, storage: InMemoryGroupStateStorage) -> Result<Client<Cfg>> {
    let crypto = RustCryptoProvider::default();
    let cs = crypto.cipher_suite_provider(CS).context("ciphersuite")?;
    let (sk, pk) = cs.signature_key_generate().map_err(|e| anyhow!("keygen: {e:?}"))?;
    let cred = BasicCredential::new(name.as_bytes().to_vec()).into_credential();
    Ok(Client::builder()
        .group_state_storage(storage)
        .crypto_provider(crypto)
        .identity_provider(BasicIdentityProvider::new())
        .mls_rules(DefaultMlsRules::new().with_commit_options(CommitOptions::new().with_ratchet_tree_extension(true)))
        .signing_identity(SigningIdentity::new(cred, pk), sk, CS)
        .build())
}

fn kp(c: &Client<Cfg>) -> Result<MlsMessage> {
    c.generate_key_package_message(ExtensionList::default(), ExtensionList::default(), None)
        .map_err(|e| anyhow!("key package: {e}"))
}

fn len(m: &MlsMessage) -> Result<usize> {
    Ok(m.to_bytes().map_err(|e| anyhow!("encode: {e}"))?.len())
}

pub fn run(n: usize, opts: &Opts, res: &mut Results) -> Result<()> {
    let sc = "mls-rs bare";
    let mut rng = StdRng::seed_from_u64(0x5eed + n as u64);
    let creator = client("creator", InMemoryGroupStateStorage::new())?;
    let rstorage = InMemoryGroupStateStorage::new();
    let recv = client("receiver", rstorage.clone())?;
    let mut kps = vec![kp(&recv)?];
    for i in 2..n {
        kps.push(kp(&client(&format!("m{i}"), InMemoryGroupStateStorage::new())?)?);
    }
    progress(format!("  mls-rs N={n}: KeyPackages done; creating"));
    let mut group = creator.create_group(ExtensionList::default(), ExtensionList::default(), None)?;
    let (out, t) = timed(|| -> Result<_> {
        let mut b = group.commit_builder();
        for kp in kps {
            b = b.add_member(kp)?;
        }
        Ok(b.build()?)
    });
    let out = out?;
    res.tb(sc, "create: commit adding N−1 (sender)", n, t, len(&out.commit_message)?);
    let welcome = out.welcome_messages.first().context("no Welcome")?.clone();
    res.b(sc, "create: Welcome (with tree)", n, len(&welcome)?);
    let (r, t) = timed(|| group.apply_pending_commit());
    r?;
    res.t(sc, "create: apply own commit", n, t);
    let (r, t) = timed(|| recv.join_group(None, &welcome, None));
    let (mut rgroup, _) = r?;
    res.t(sc, "join from bulk Welcome", n, t);
    let gid = rgroup.group_id().to_vec();

    let mut alive: Vec<bool> = vec![true; n];
    for rep in 0..opts.reps {
        progress(format!("  mls-rs N={n}: rep {} of {}", rep + 1, opts.reps));
        // update
        let (r, t) = timed(|| group.commit(Vec::new()));
        let out = r?;
        res.tb(sc, "update: commit (sender)", n, t, len(&out.commit_message)?);
        let (r, t) = timed(|| group.apply_pending_commit());
        r?;
        res.t(sc, "update: apply own commit", n, t);
        let (r, t) = timed(|| rgroup.process_incoming_message(out.commit_message.clone()));
        r?;
        res.t(sc, "update: receiver process", n, t);
        let (r, t) = timed(|| rgroup.write_to_storage());
        r?;
        res.t(sc, "write_to_storage (receiver)", n, t);
        let stored = rstorage.state(&gid).map_err(|e| anyhow!("{e:?}"))?.map_or(0, |s| s.len());
        res.b(sc, "storage footprint (receiver)", n, stored);

        // remove a random member, then add one (it takes the blank leaf)
        let cands: Vec<usize> = (2..n).filter(|&i| alive[i]).collect();
        let x = *cands.choose(&mut rng).context("nobody to remove")?;
        let (r, t) = timed(|| -> Result<_> { Ok(group.commit_builder().remove_member(x as u32)?.build()?) });
        let out = r?;
        res.tb(sc, "remove: commit (sender)", n, t, len(&out.commit_message)?);
        group.apply_pending_commit()?;
        let (r, t) = timed(|| rgroup.process_incoming_message(out.commit_message.clone()));
        r?;
        res.t(sc, "remove: receiver process", n, t);
        alive[x] = false;

        let joiner = client(&format!("joiner{rep}"), InMemoryGroupStateStorage::new())?;
        let jkp = kp(&joiner)?;
        let (r, t) = timed(|| -> Result<_> { Ok(group.commit_builder().add_member(jkp)?.build()?) });
        let out = r?;
        res.tb(sc, "add 1: commit (sender)", n, t, len(&out.commit_message)?);
        let welcome = out.welcome_messages.first().context("no Welcome")?.clone();
        res.b(sc, "add 1: Welcome (with tree)", n, len(&welcome)?);
        group.apply_pending_commit()?;
        let (r, t) = timed(|| rgroup.process_incoming_message(out.commit_message.clone()));
        r?;
        res.t(sc, "add 1: receiver process", n, t);
        let (r, t) = timed(|| joiner.join_group(None, &welcome, None));
        r?;
        res.tb(sc, "join: from Welcome with tree", n, t, len(&welcome)?);
        alive[x] = true;
    }
    for _ in 0..(opts.reps * 5).max(5) {
        let (r, te) = timed(|| group.encrypt_application_message(&[7u8; 100], Vec::new()));
        let ct = r?;
        let size = len(&ct)?;
        let (r, td) = timed(|| rgroup.process_incoming_message(ct));
        r?;
        res.tb(sc, "msg 100 B: encrypt", n, te, size);
        res.t(sc, "msg 100 B: decrypt", n, td);
        res.t(sc, "msg 100 B: encrypt + decrypt", n, te + td);
    }
    Ok(())
}
