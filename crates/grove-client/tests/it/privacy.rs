//! A profile locked at rest with a passphrase (`Profile::create` with a passphrase): what its files on disk
//! hold, and what a wrong passphrase and a changed one do.

use grove_client::profile::{ClientError, InitOptions, Profile};
use grove_client::{ClientStore, Passphrase, StoreError};
use grove_wire::api::RoomMode;

use crate::{texts, World};

/// Every byte of every file in a profile folder (the state file, its `-wal` and `-shm`).
fn raw_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn holds(files: &[(String, Vec<u8>)], needle: &[u8]) -> Vec<String> {
    files.iter().filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle)).map(|(p, _)| p.clone()).collect()
}

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.into()).unwrap()
}

fn locked(p: &Passphrase) -> InitOptions {
    InitOptions { passphrase: Some(p.clone()), ..InitOptions::default() }
}

/// Alice locks her profile with a passphrase and talks with Bob (who does not) in an MLS room
/// and a sender-keys room (Olm sessions). A thief copies both folders: Bob's hands over his
/// words; Alice's holds neither her identity secret, nor any message text, nor her name. A
/// wrong passphrase opens nothing and changes nothing; after `change_passphrase` the old one
/// no longer opens the profile, the new one does, and everything still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alices_locked_profile_hides_her_secret_and_every_word_from_a_thief() {
    let w = World::start().await;
    let dir = w.profile_dir("alice");
    let first = pass("correct horse battery staple");
    let mut alice = Profile::create(&dir, &w.url, locked(&first)).await.unwrap();
    assert!(alice.is_encrypted());
    let mut bob = w.user("bob").await;
    assert!(!bob.is_encrypted());
    alice.set_name("Alice Pleasance Liddell").await.unwrap();
    let mut said = Vec::new();
    for (room, mode) in [("garden", RoomMode::Mls), ("hedge", RoomMode::SenderKeys)] {
        alice.create_room_with_mode(&w.url, room, mode).await.unwrap();
        alice.invite(room, &bob.address().to_string()).await.unwrap();
        bob.sync().await.unwrap();
        let from_alice = format!("alice-whispers-in-the-{room}-at-midnight");
        let from_bob = format!("bob-answers-in-the-{room}-by-moonlight");
        alice.send(room, &from_alice).await.unwrap();
        bob.sync().await.unwrap();
        bob.send(room, &from_bob).await.unwrap();
        alice.sync().await.unwrap();
        assert_eq!(texts(&alice, room), [from_alice.clone(), from_bob.clone()]);
        said.extend([from_alice, from_bob]);
    }
    let secret =
        ClientStore::open_with(&dir.join("state.db"), Some(&first)).unwrap().meta("identity").unwrap().unwrap();
    assert_eq!(secret.len(), 32);
    drop(alice);
    drop(bob);

    let stolen = raw_files(&dir);
    assert!(holds(&stolen, &secret).is_empty(), "the identity secret is on disk");
    for text in &said {
        assert!(
            holds(&stolen, text.as_bytes()).is_empty(),
            "{text:?} is on disk: {:?}",
            holds(&stolen, text.as_bytes())
        );
    }
    assert!(holds(&stolen, b"Alice Pleasance Liddell").is_empty(), "the display name is on disk");
    // The same look at Bob's unlocked profile finds the words: the check can fail.
    let bobs = raw_files(&w.profile_dir("bob"));
    assert!(!holds(&bobs, said[0].as_bytes()).is_empty(), "bob's unlocked profile holds alice's words");

    // Without the passphrase, or with a wrong one, nothing opens and nothing changes.
    let before = std::fs::read(dir.join("state.db")).unwrap();
    assert!(Profile::is_locked(&dir).unwrap());
    assert!(matches!(Profile::open(&dir), Err(ClientError::Store(StoreError::Locked))));
    assert!(matches!(
        Profile::open_with(&dir, Some(&pass("incorrect horse"))),
        Err(ClientError::Store(StoreError::WrongPassphrase))
    ));
    assert_eq!(std::fs::read(dir.join("state.db")).unwrap(), before, "a wrong passphrase changed the file");

    // A new passphrase: the old one is refused, the new one opens everything.
    let second = pass("a whole new passphrase");
    let mut alice = Profile::open_with(&dir, Some(&first)).unwrap();
    alice.change_passphrase(&second).await.unwrap();
    drop(alice);
    assert!(matches!(Profile::open_with(&dir, Some(&first)), Err(ClientError::Store(StoreError::WrongPassphrase))));
    let mut alice = Profile::open_with(&dir, Some(&second)).unwrap();
    assert_eq!(texts(&alice, "hedge"), said[2..4]);
    // Her Olm sessions and chains (pickled under the data key) still work.
    let mut bob = Profile::open(&w.profile_dir("bob")).unwrap();
    alice.send("hedge", "still-whispering-after-the-change").await.unwrap();
    alice.send("garden", "and-in-the-garden-too").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "hedge").last().unwrap(), "still-whispering-after-the-change");
    assert_eq!(texts(&bob, "garden").last().unwrap(), "and-in-the-garden-too");
    drop(alice);
    let stolen = raw_files(&dir);
    assert!(holds(&stolen, b"still-whispering-after-the-change").is_empty());
    assert!(holds(&stolen, &secret).is_empty());
}

/// `create` on a folder that already holds a locked profile refuses, without the
/// passphrase and without touching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_init_on_a_locked_profile_is_refused() {
    let w = World::start().await;
    let dir = w.profile_dir("alice");
    let p = pass("one");
    drop(Profile::create(&dir, &w.url, locked(&p)).await.unwrap());
    let before = std::fs::read(dir.join("state.db")).unwrap();
    let again = Profile::create(&dir, &w.url, locked(&pass("two"))).await;
    assert!(matches!(again, Err(ClientError::AlreadyInitialised(_))), "{again:?}");
    assert_eq!(std::fs::read(dir.join("state.db")).unwrap(), before);
}

/// A server that keeps little (`[privacy] log_retention_secs`, `limits.mailbox_ttl_secs`): its
/// retention task deletes Alice's message once it is older than the retention and Carol's
/// unread invitation once it expires. Bob, away meanwhile, comes back to the room's changes
/// without the deleted message and reads what is said next; Carol's invitation is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_retention_task_deletes_old_messages_and_expired_mail() {
    let w = World::start_with(|c| {
        c.privacy.log_retention_secs = 3;
        c.privacy.purge_interval_secs = 1;
        c.limits.mailbox_ttl_secs = 3;
    })
    .await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut carol = w.user("carol").await;
    alice.create_room(&w.url, "garden").await.unwrap();
    alice.invite("garden", &bob.address().to_string()).await.unwrap();
    bob.sync().await.unwrap();
    let old = alice.send("garden", "said before the cutoff").await.unwrap();
    alice.invite("garden", &carol.address().to_string()).await.unwrap();
    assert!(alice.raw_entry("garden", old).await.is_ok(), "the message is on the server");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alice.raw_entry("garden", old).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the retention task never deleted the message");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The commit that added Carol (after the message) is kept.
    assert!(alice.raw_entry("garden", old + 1).await.is_ok(), "a commit was deleted");
    // Carol's invitation expired unread.
    let report = carol.sync().await.unwrap();
    assert!(report.joined.is_empty(), "{report:?}");

    bob.sync().await.unwrap();
    assert!(texts(&bob, "garden").is_empty(), "bob read a deleted message");
    assert_eq!(bob.members("garden").unwrap().len(), 3, "bob followed the commit adding carol");
    alice.send("garden", "said after the cutoff").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "garden"), ["said after the cutoff"]);
}
