//! The conformance suite every [`Store`] backend runs.
//!
//! A backend's tests invoke [`conformance_tests!`](crate::conformance_tests) with a factory
//! that makes a fresh, empty store; each scenario below becomes one `#[tokio::test]`.

// Test code (compiled for backends' tests only): a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use grove_wire::api::{EntryKind, KeyItemUpload, KeyKind, RoomMode};
use grove_wire::attachment::BlobId;
use grove_wire::UserId;

use crate::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, MailboxQuota, NewEntry, NewMail, NewRoom, PublishOutcome,
    RoomRecord, StateUpdate, Store,
};

/// Generates one `#[tokio::test]` per conformance scenario for a backend.
///
/// `$make` is an expression of a closure `|| async { Arc<impl Store> }` returning a fresh store.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            rooms_have_unique_names_and_a_per_creator_limit,
            public_rooms_are_listed_by_name,
            sequence_numbers_are_gap_free_per_room,
            reads_page_after_a_cursor,
            a_state_update_applies_only_at_the_expected_version,
            concurrent_appends_get_distinct_gap_free_seqs,
            exactly_one_of_many_conflicting_updates_wins,
            mailbox_deposit_read_ack,
            mailbox_quota_and_ttl,
            one_sender_holds_at_most_its_share_of_a_mailbox,
            one_time_keys_are_handed_out_once_last_resort_never_consumed,
            a_user_at_the_key_cap_can_still_replace_a_last_resort_item,
            concurrent_claims_never_share_a_one_time_key,
            key_publish_respects_the_cap,
            recent_epochs_states_are_kept,
            removals_are_recorded_with_their_entry,
            files_respect_user_and_room_quotas,
            file_parts_land_in_order_once,
            the_same_part_twice_is_taken_once_and_another_body_refused,
            files_expire_and_are_deleted,
            the_operator_sees_rooms_and_users_and_deletes_a_room,
            blocked_keys_are_kept,
            a_link_counts_uses_and_expiry_and_requests_wait,
            a_links_sealed_group_info_moves_forward_and_joins_count_uses,
            fault_reports_are_kept_per_commit_and_reporter,
            old_messages_are_purged_and_handshakes_kept,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = ($make)().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// A store with something that must live as long as it (a temporary folder, a test database):
/// what a backend's conformance factory returns when the store alone would not keep its
/// resources alive.
pub struct Guarded<S, G> {
    store: S,
    _guard: G,
}

impl<S: Store, G: Send + Sync + 'static> Guarded<S, G> {
    /// Keeps `guard` alive as long as `store`.
    pub fn new(store: S, guard: G) -> Self {
        Guarded { store, _guard: guard }
    }
}

#[async_trait::async_trait]
impl<S: Store, G: Send + Sync + 'static> Store for Guarded<S, G> {
    async fn create_room(&self, room: NewRoom, max: u64) -> crate::Result<CreateRoomOutcome> {
        self.store.create_room(room, max).await
    }
    async fn room(&self, name: &str) -> crate::Result<Option<RoomRecord>> {
        self.store.room(name).await
    }
    async fn public_rooms(&self, after: &str, limit: u32) -> crate::Result<Vec<RoomRecord>> {
        self.store.public_rooms(after, limit).await
    }
    async fn append(&self, room: crate::RoomId, entry: NewEntry) -> crate::Result<AppendOutcome> {
        self.store.append(room, entry).await
    }
    async fn room_state(&self, room: crate::RoomId, epoch: u64) -> crate::Result<Option<Vec<u8>>> {
        self.store.room_state(room, epoch).await
    }
    async fn read(&self, room: crate::RoomId, after: u64, limit: u32) -> crate::Result<Vec<grove_wire::api::Entry>> {
        self.store.read(room, after, limit).await
    }
    async fn removal(&self, room: crate::RoomId, user: &UserId) -> crate::Result<Option<crate::Removal>> {
        self.store.removal(room, user).await
    }
    async fn deposit(&self, mail: NewMail, quota: MailboxQuota) -> crate::Result<DepositOutcome> {
        self.store.deposit(mail, quota).await
    }
    async fn mailbox_read(
        &self,
        owner: &UserId,
        after: u64,
        limit: u32,
        now: i64,
    ) -> crate::Result<Vec<grove_wire::api::MailboxEntry>> {
        self.store.mailbox_read(owner, after, limit, now).await
    }
    async fn mailbox_ack(&self, owner: &UserId, up_to: u64) -> crate::Result<u64> {
        self.store.mailbox_ack(owner, up_to).await
    }
    async fn purge_expired(&self, now: i64) -> crate::Result<u64> {
        self.store.purge_expired(now).await
    }
    async fn purge_messages(&self, before: i64) -> crate::Result<u64> {
        self.store.purge_messages(before).await
    }
    async fn publish_keys(&self, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> crate::Result<PublishOutcome> {
        self.store.publish_keys(owner, items, cap).await
    }
    async fn claim_key(&self, owner: &UserId, kind: KeyKind) -> crate::Result<Option<grove_wire::api::ClaimedKey>> {
        self.store.claim_key(owner, kind).await
    }
    async fn key_counts(&self, owner: &UserId) -> crate::Result<Vec<grove_wire::api::KeyCount>> {
        self.store.key_counts(owner).await
    }
    async fn create_file(
        &self,
        file: crate::NewFile,
        quota: crate::FileQuota,
    ) -> crate::Result<crate::CreateFileOutcome> {
        self.store.create_file(file, quota).await
    }
    async fn file(&self, blob: &BlobId) -> crate::Result<Option<crate::FileRecord>> {
        self.store.file(blob).await
    }
    async fn file_part(
        &self,
        blob: &BlobId,
        offset: u64,
        len: u64,
        sha256: &[u8; 32],
        exp: i64,
    ) -> crate::Result<crate::FilePartOutcome> {
        self.store.file_part(blob, offset, len, sha256, exp).await
    }
    async fn file_part_hashes(&self, blob: &BlobId) -> crate::Result<Vec<(u64, [u8; 32])>> {
        self.store.file_part_hashes(blob).await
    }
    async fn expired_files(&self, now: i64, limit: u32) -> crate::Result<Vec<crate::FileRecord>> {
        self.store.expired_files(now, limit).await
    }
    async fn delete_file(&self, blob: &BlobId) -> crate::Result<bool> {
        self.store.delete_file(blob).await
    }
    async fn file_totals(&self) -> crate::Result<crate::FileTotals> {
        self.store.file_totals().await
    }
    async fn rooms_overview(&self) -> crate::Result<Vec<crate::RoomOverview>> {
        self.store.rooms_overview().await
    }
    async fn delete_room(&self, name: &str) -> crate::Result<Option<crate::DeletedRoom>> {
        self.store.delete_room(name).await
    }
    async fn users_usage(&self) -> crate::Result<Vec<crate::UserUsage>> {
        self.store.users_usage().await
    }
    async fn set_blocked(&self, user: &UserId, blocked: bool, at: i64) -> crate::Result<bool> {
        self.store.set_blocked(user, blocked, at).await
    }
    async fn blocked_users(&self) -> crate::Result<Vec<UserId>> {
        self.store.blocked_users().await
    }
    async fn record_report(
        &self,
        room: crate::RoomId,
        seq: u64,
        reporter: &UserId,
        key: Option<Vec<u8>>,
        keep: usize,
    ) -> crate::Result<Vec<(UserId, Option<Vec<u8>>)>> {
        self.store.record_report(room, seq, reporter, key, keep).await
    }
    async fn false_reports(&self, room: crate::RoomId, user: &UserId, add: bool) -> crate::Result<u32> {
        self.store.false_reports(room, user, add).await
    }
    async fn forget_reports(&self, room: crate::RoomId, seq: u64) -> crate::Result<()> {
        self.store.forget_reports(room, seq).await
    }
    async fn headroom(&self) -> crate::Result<Option<u64>> {
        self.store.headroom().await
    }
    async fn set_room_link(&self, room: crate::RoomId, link: Option<crate::RoomLink>) -> crate::Result<()> {
        self.store.set_room_link(room, link).await
    }
    async fn room_link(&self, room: crate::RoomId) -> crate::Result<Option<crate::RoomLink>> {
        self.store.room_link(room).await
    }
    async fn request_join(
        &self,
        room: crate::RoomId,
        token_hash: [u8; 32],
        request: crate::JoinRequest,
        max_pending: u64,
    ) -> crate::Result<crate::JoinOutcome> {
        self.store.request_join(room, token_hash, request, max_pending).await
    }
    async fn join_requests(&self, room: crate::RoomId) -> crate::Result<Vec<crate::JoinRequest>> {
        self.store.join_requests(room).await
    }
    async fn delete_join_request(&self, room: crate::RoomId, user: &UserId) -> crate::Result<bool> {
        self.store.delete_join_request(room, user).await
    }
    async fn use_link(
        &self,
        room: crate::RoomId,
        token_hash: [u8; 32],
        now: i64,
    ) -> crate::Result<Result<(), crate::JoinOutcome>> {
        self.store.use_link(room, token_hash, now).await
    }
    async fn set_link_group_info(&self, room: crate::RoomId, info: crate::LinkGroupInfo) -> crate::Result<bool> {
        self.store.set_link_group_info(room, info).await
    }
    async fn link_group_info(&self, room: crate::RoomId) -> crate::Result<Option<crate::LinkGroupInfo>> {
        self.store.link_group_info(room).await
    }
}

/// The user with 32 bytes of `n`.
pub fn user(n: u8) -> UserId {
    UserId([n; 32])
}

/// Creates a private room owned by `user(1)` (for backends' own tests).
pub async fn create_room(store: &dyn Store, name: &str) -> crate::RoomId {
    create(store, name).await.id
}

/// An application entry from `user(1)` with this body (for backends' own tests).
pub fn entry(body: String) -> NewEntry {
    NewEntry { kind: EntryKind::Application, epoch: 0, sender: user(1), ts: 2, body: body.into_bytes(), update: None }
}

fn new_room(name: &str, creator: UserId, public: bool) -> NewRoom {
    NewRoom {
        name: name.to_string(),
        mode: RoomMode::Mls,
        public,
        created_by: creator,
        created_at: 1_000,
        epoch: 0,
        state: b"state-0".to_vec(),
        members: vec![creator],
        admins: vec![],
    }
}

async fn create(store: &dyn Store, name: &str) -> RoomRecord {
    match store.create_room(new_room(name, user(1), false), 1_000).await.unwrap() {
        CreateRoomOutcome::Created(r) => r,
        other => panic!("room {name} not created: {other:?}"),
    }
}

fn app(n: u64) -> NewEntry {
    NewEntry {
        kind: EntryKind::Application,
        epoch: 0,
        sender: user(1),
        ts: 2_000 + n as i64,
        body: format!("ciphertext {n}").into_bytes(),
        update: None,
    }
}

fn commit(expected_version: u64, new_epoch: u64, tag: &str) -> NewEntry {
    NewEntry {
        kind: EntryKind::Commit,
        epoch: new_epoch - 1,
        sender: user(1),
        ts: 3_000,
        body: tag.as_bytes().to_vec(),
        update: Some(StateUpdate {
            expected_state_version: expected_version,
            new_epoch,
            state: format!("state after {tag}").into_bytes(),
            members: vec![user(1), user(2)],
            admins: vec![],
            removed: vec![],
            added: vec![],
        }),
    }
}

/// Names are unique; a creator cannot exceed the limit; lookups find what was created.
pub async fn rooms_have_unique_names_and_a_per_creator_limit(store: Arc<dyn Store>) {
    let r = create(&*store, "paris").await;
    assert_eq!((r.epoch, r.head, r.state_version), (0, 0, 0));
    assert_eq!(r.members, vec![user(1)]);
    let again = store.create_room(new_room("paris", user(2), false), 10).await.unwrap();
    assert_eq!(again, CreateRoomOutcome::NameTaken);
    assert!(matches!(
        store.create_room(new_room("lyon", user(1), false), 2).await.unwrap(),
        CreateRoomOutcome::Created(_)
    ));
    assert_eq!(store.create_room(new_room("nice", user(1), false), 2).await.unwrap(), CreateRoomOutcome::LimitReached);
    assert_eq!(store.room("paris").await.unwrap(), Some(r));
    assert_eq!(store.room("nowhere").await.unwrap(), None);
}

/// Only public rooms are listed, in name order, paged by name.
pub async fn public_rooms_are_listed_by_name(store: Arc<dyn Store>) {
    for (name, public) in [("c", true), ("a", true), ("b", false), ("d", true)] {
        let out = store.create_room(new_room(name, user(1), public), 100).await.unwrap();
        assert!(matches!(out, CreateRoomOutcome::Created(_)));
    }
    let names = |v: Vec<RoomRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(names(store.public_rooms("", 10).await.unwrap()), ["a", "c", "d"]);
    assert_eq!(names(store.public_rooms("a", 1).await.unwrap()), ["c"]);
}

/// Each room numbers its entries 1, 2, 3, … independently of other rooms.
pub async fn sequence_numbers_are_gap_free_per_room(store: Arc<dyn Store>) {
    let a = create(&*store, "a").await;
    let b = create(&*store, "b").await;
    for n in 1..=5u64 {
        assert_eq!(store.append(a.id, app(n)).await.unwrap(), AppendOutcome::Appended { seq: n, epoch: 0 });
        if n <= 2 {
            assert_eq!(store.append(b.id, app(n)).await.unwrap(), AppendOutcome::Appended { seq: n, epoch: 0 });
        }
    }
    assert_eq!(store.room("a").await.unwrap().unwrap().head, 5);
    assert_eq!(store.room("b").await.unwrap().unwrap().head, 2);
    assert_eq!(store.append(9_999, app(1)).await.unwrap(), AppendOutcome::NoSuchRoom);
}

/// Reads return entries after the cursor, in order, bounded by the limit, with what was written.
pub async fn reads_page_after_a_cursor(store: Arc<dyn Store>) {
    let r = create(&*store, "a").await;
    for n in 1..=10 {
        store.append(r.id, app(n)).await.unwrap();
    }
    let page = store.read(r.id, 3, 4).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    assert_eq!(page[0].body, b"ciphertext 4");
    assert_eq!(page[0].kind, EntryKind::Application);
    assert_eq!(page[0].sender, user(1));
    assert_eq!(page[0].ts, 2_004);
    assert!(store.read(r.id, 10, 100).await.unwrap().is_empty());
    assert!(store.read(r.id, u64::MAX, 100).await.unwrap().is_empty());
    assert_eq!(store.read(r.id, 0, 100).await.unwrap().len(), 10);
}

/// A state update applies only at the expected version, atomically with its entry; a stale one
/// writes nothing and reports the current epoch and head.
pub async fn a_state_update_applies_only_at_the_expected_version(store: Arc<dyn Store>) {
    let r = create(&*store, "a").await;
    store.append(r.id, app(1)).await.unwrap();
    assert_eq!(store.append(r.id, commit(0, 1, "c1")).await.unwrap(), AppendOutcome::Appended { seq: 2, epoch: 1 });
    let stale = store.append(r.id, commit(0, 1, "c1-rival")).await.unwrap();
    assert_eq!(stale, AppendOutcome::Conflict { epoch: 1, head: 2, state_version: 1 });
    let now = store.room("a").await.unwrap().unwrap();
    assert_eq!((now.epoch, now.head, now.state_version), (1, 2, 1));
    assert_eq!(now.state, b"state after c1");
    assert_eq!(now.members, vec![user(1), user(2)]);
    assert_eq!(store.read(r.id, 0, 10).await.unwrap().len(), 2, "the rival left no entry");
}

/// Many concurrent appends to one room get exactly the numbers 1..=N.
pub async fn concurrent_appends_get_distinct_gap_free_seqs(store: Arc<dyn Store>) {
    let r = create(&*store, "a").await;
    let mut tasks = Vec::new();
    for n in 0..200u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.append(r.id, app(n)).await.unwrap() }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            AppendOutcome::Appended { seq, .. } => assert!(seqs.insert(seq), "seq {seq} twice"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs, (1..=200).collect());
    let read: Vec<u64> = store.read(r.id, 0, 1_000).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(read, (1..=200).collect::<Vec<_>>());
}

/// Fifty concurrent updates at the same version: exactly one applies.
pub async fn exactly_one_of_many_conflicting_updates_wins(store: Arc<dyn Store>) {
    let r = create(&*store, "a").await;
    let mut tasks = Vec::new();
    for n in 0..50 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.append(r.id, commit(0, 1, &format!("c{n}"))).await.unwrap() }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            AppendOutcome::Appended { .. } => won += 1,
            AppendOutcome::Conflict { epoch, head, .. } => assert_eq!((epoch, head), (1, 1)),
            AppendOutcome::NoSuchRoom => panic!("room vanished"),
        }
    }
    assert_eq!(won, 1);
    let now = store.room("a").await.unwrap().unwrap();
    assert_eq!((now.epoch, now.head, now.state_version), (1, 1, 1));
}

/// A mailbox quota with no per-sender share below the total.
fn whole(total: u64) -> MailboxQuota {
    MailboxQuota { total, per_sender: total }
}

fn mail(owner: UserId, n: i64, expires_at: i64) -> NewMail {
    NewMail { owner, sender: user(9), ts: n, expires_at, body: format!("welcome {n}").into_bytes() }
}

/// Deposits are read in order after a cursor; acks delete; sequence numbers are never reused.
pub async fn mailbox_deposit_read_ack(store: Arc<dyn Store>) {
    let bob = user(2);
    for n in 1..=3 {
        assert_eq!(
            store.deposit(mail(bob, n, 10_000), whole(10)).await.unwrap(),
            DepositOutcome::Deposited { seq: n as u64 }
        );
    }
    let got = store.mailbox_read(&bob, 0, 10, 5).await.unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(got[1].body, b"welcome 2");
    assert_eq!(got[1].sender, user(9));
    assert_eq!(store.mailbox_read(&bob, 1, 1, 5).await.unwrap()[0].seq, 2);
    assert!(store.mailbox_read(&user(3), 0, 10, 5).await.unwrap().is_empty());
    assert_eq!(store.mailbox_ack(&bob, 2).await.unwrap(), 2);
    assert_eq!(store.mailbox_ack(&bob, 2).await.unwrap(), 0);
    assert_eq!(store.mailbox_read(&bob, 0, 10, 5).await.unwrap().len(), 1);
    store.mailbox_ack(&bob, 3).await.unwrap();
    assert_eq!(
        store.deposit(mail(bob, 4, 10_000), whole(10)).await.unwrap(),
        DepositOutcome::Deposited { seq: 4 },
        "sequence numbers continue after every message was acknowledged"
    );
}

/// A full mailbox refuses deposits; expired messages are not read, do not count, and are purged.
pub async fn mailbox_quota_and_ttl(store: Arc<dyn Store>) {
    let bob = user(2);
    store.deposit(mail(bob, 1, 100), whole(2)).await.unwrap();
    store.deposit(mail(bob, 2, 10_000), whole(2)).await.unwrap();
    assert_eq!(store.deposit(mail(bob, 3, 10_000), whole(2)).await.unwrap(), DepositOutcome::Full);
    // At t=200 the first message has expired: it is invisible and frees its slot.
    assert_eq!(store.mailbox_read(&bob, 0, 10, 200).await.unwrap().len(), 1);
    assert!(matches!(store.deposit(mail(bob, 200, 10_000), whole(2)).await.unwrap(), DepositOutcome::Deposited { .. }));
    assert_eq!(store.purge_expired(200).await.unwrap(), 1);
    assert_eq!(store.mailbox_read(&bob, 0, 10, 200).await.unwrap().len(), 2);
}

/// Mallory, depositing slowly, fills her share of Bob's mailbox and no more: Alice still gets
/// through; once Bob has read Mallory's messages (or they expired) she may deposit again.
pub async fn one_sender_holds_at_most_its_share_of_a_mailbox(store: Arc<dyn Store>) {
    let (bob, alice, mallory) = (user(2), user(1), user(66));
    let quota = MailboxQuota { total: 10, per_sender: 3 };
    let from = |sender: UserId, ts: i64, expires_at: i64| NewMail { owner: bob, sender, ts, expires_at, body: vec![7] };
    store.deposit(from(mallory, 1, 100), quota).await.unwrap();
    for ts in 2..=3 {
        assert!(matches!(
            store.deposit(from(mallory, ts, 10_000), quota).await.unwrap(),
            DepositOutcome::Deposited { .. }
        ));
    }
    assert_eq!(store.deposit(from(mallory, 4, 10_000), quota).await.unwrap(), DepositOutcome::SenderFull);
    assert_eq!(store.deposit(from(alice, 5, 10_000), quota).await.unwrap(), DepositOutcome::Deposited { seq: 4 });
    // Mallory's first message expires at 100: its slot is hers again.
    assert_eq!(store.deposit(from(mallory, 150, 10_000), quota).await.unwrap(), DepositOutcome::Deposited { seq: 5 });
    assert_eq!(store.deposit(from(mallory, 151, 10_000), quota).await.unwrap(), DepositOutcome::SenderFull);
    // Bob reads and acknowledges everything: Mallory's share is free.
    store.mailbox_ack(&bob, 5).await.unwrap();
    assert_eq!(store.deposit(from(mallory, 152, 10_000), quota).await.unwrap(), DepositOutcome::Deposited { seq: 6 });
}

fn kp(data: &str, last_resort: bool) -> KeyItemUpload {
    KeyItemUpload { kind: KeyKind::MlsKeyPackage, last_resort, data: data.as_bytes().to_vec() }
}

/// One-time items are handed out once each; then the last-resort item, forever.
pub async fn one_time_keys_are_handed_out_once_last_resort_never_consumed(store: Arc<dyn Store>) {
    let bob = user(2);
    assert_eq!(store.claim_key(&bob, KeyKind::MlsKeyPackage).await.unwrap(), None);
    let out = store.publish_keys(&bob, vec![kp("kp1", false), kp("kp2", false), kp("lr1", true)], 100).await.unwrap();
    let PublishOutcome::Stored(counts) = out else { panic!("not stored") };
    assert_eq!((counts[0].one_time, counts[0].last_resort), (2, true));
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let c = store.claim_key(&bob, KeyKind::MlsKeyPackage).await.unwrap().unwrap();
        assert!(!c.last_resort);
        got.insert(c.data);
    }
    assert_eq!(got, [b"kp1".to_vec(), b"kp2".to_vec()].into_iter().collect());
    for _ in 0..3 {
        let c = store.claim_key(&bob, KeyKind::MlsKeyPackage).await.unwrap().unwrap();
        assert!(c.last_resort);
        assert_eq!(c.data, b"lr1");
    }
    store.publish_keys(&bob, vec![kp("lr2", true)], 100).await.unwrap();
    assert_eq!(store.claim_key(&bob, KeyKind::MlsKeyPackage).await.unwrap().unwrap().data, b"lr2");
    assert_eq!(store.claim_key(&bob, KeyKind::OlmOneTime).await.unwrap(), None);
    let counts = store.key_counts(&bob).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].one_time, counts[0].last_resort), (0, true));
}

/// Bob holds as many one-time items as the server allows; he can still publish (and replace)
/// his last-resort items, but not one more one-time item.
pub async fn a_user_at_the_key_cap_can_still_replace_a_last_resort_item(store: Arc<dyn Store>) {
    let bob = user(2);
    let items = (0..4).map(|n| kp(&format!("kp{n}"), false)).collect();
    assert!(matches!(store.publish_keys(&bob, items, 4).await.unwrap(), PublishOutcome::Stored(_)));
    let out = store.publish_keys(&bob, vec![kp("lr1", true)], 4).await.unwrap();
    assert!(matches!(out, PublishOutcome::Stored(_)), "a first last-resort item at the cap: {out:?}");
    let out = store.publish_keys(&bob, vec![kp("lr2", true)], 4).await.unwrap();
    assert!(matches!(out, PublishOutcome::Stored(_)), "a replaced last-resort item at the cap: {out:?}");
    let out = store.publish_keys(&bob, vec![kp("kp4", false)], 4).await.unwrap();
    assert!(matches!(out, PublishOutcome::LimitReached), "a fifth one-time item: {out:?}");
    let counts = store.key_counts(&bob).await.unwrap();
    assert_eq!((counts[0].one_time, counts[0].last_resort), (4, true));
}

/// Concurrent claimers never receive the same one-time item.
pub async fn concurrent_claims_never_share_a_one_time_key(store: Arc<dyn Store>) {
    let bob = user(2);
    let items = (0..20).map(|n| kp(&format!("kp{n}"), false)).collect();
    store.publish_keys(&bob, items, 100).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.claim_key(&bob, KeyKind::MlsKeyPackage).await.unwrap() }));
    }
    let mut seen = BTreeSet::new();
    let mut none = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(c) => assert!(seen.insert(c.data), "a one-time key was handed out twice"),
            None => none += 1,
        }
    }
    assert_eq!((seen.len(), none), (20, 20));
}

/// Publishing past the cap stores nothing.
pub async fn key_publish_respects_the_cap(store: Arc<dyn Store>) {
    let bob = user(2);
    store.publish_keys(&bob, vec![kp("a", false), kp("b", false)], 3).await.unwrap();
    let out = store.publish_keys(&bob, vec![kp("c", false), kp("d", false)], 3).await.unwrap();
    assert_eq!(out, PublishOutcome::LimitReached);
    assert_eq!(store.key_counts(&bob).await.unwrap()[0].one_time, 2);
    assert!(matches!(store.publish_keys(&bob, vec![kp("lr", true)], 3).await.unwrap(), PublishOutcome::Stored(_)));
}

/// The state of each recent epoch stays readable; a proposal's update replaces its epoch's
/// state; epochs beyond the history window are forgotten.
pub async fn recent_epochs_states_are_kept(store: Arc<dyn Store>) {
    let r = create(&*store, "a").await;
    assert_eq!(store.room_state(r.id, 0).await.unwrap().unwrap(), b"state-0");
    assert_eq!(store.room_state(r.id, 1).await.unwrap(), None);
    store.append(r.id, commit(0, 1, "c1")).await.unwrap();
    let mut proposal = commit(1, 1, "p1");
    proposal.kind = EntryKind::Proposal;
    store.append(r.id, proposal).await.unwrap();
    assert_eq!(store.room_state(r.id, 0).await.unwrap().unwrap(), b"state-0");
    assert_eq!(store.room_state(r.id, 1).await.unwrap().unwrap(), b"state after p1");
    for epoch in 2..=(crate::STATE_HISTORY + 2) {
        // State version n takes the room from epoch n to n + 1 (the proposal used version 1).
        store.append(r.id, commit(epoch, epoch, &format!("c{epoch}"))).await.unwrap();
    }
    assert_eq!(store.room_state(r.id, 0).await.unwrap(), None, "beyond the window");
    assert_eq!(store.room_state(r.id, 2).await.unwrap(), None, "beyond the window");
    let last = crate::STATE_HISTORY + 2;
    assert_eq!(store.room_state(r.id, 3).await.unwrap().unwrap(), b"state after c3");
    assert_eq!(store.room_state(r.id, last).await.unwrap().unwrap(), format!("state after c{last}").into_bytes());
    assert_eq!(store.room_state(9_999, 0).await.unwrap(), None);
}

/// A commit moving the room from state version `expected` to epoch `new_epoch` that removes
/// and adds these users.
fn membership_commit(expected: u64, new_epoch: u64, removed: &[UserId], added: &[UserId]) -> NewEntry {
    let mut e = commit(expected, new_epoch, &format!("c{new_epoch}"));
    let u = e.update.as_mut().unwrap();
    u.removed = removed.to_vec();
    u.added = added.to_vec();
    e
}

/// A state update that removes a member records, with its entry, where that member's reading
/// ends; a rival that lost the compare-and-set records nothing; adding the member back forgets
/// it; removing it again records the new entry. Other users and rooms are untouched.
pub async fn removals_are_recorded_with_their_entry(store: Arc<dyn Store>) {
    let (carol, dave) = (user(3), user(4));
    let r = create(&*store, "a").await;
    let other = create(&*store, "b").await;
    store.append(r.id, app(1)).await.unwrap();
    assert_eq!(store.removal(r.id, &carol).await.unwrap(), None, "a member reads on");
    let removed = store.append(r.id, membership_commit(0, 1, &[carol], &[])).await.unwrap();
    assert_eq!(removed, AppendOutcome::Appended { seq: 2, epoch: 1 });
    store.append(r.id, app(3)).await.unwrap();
    let rival = store.append(r.id, membership_commit(0, 1, &[dave], &[])).await.unwrap();
    assert!(matches!(rival, AppendOutcome::Conflict { .. }), "{rival:?}");
    assert_eq!(store.removal(r.id, &carol).await.unwrap(), Some(crate::Removal { seq: 2, epoch: 1 }));
    assert_eq!(store.removal(r.id, &dave).await.unwrap(), None, "the rival that lost recorded nothing");
    assert_eq!(store.removal(other.id, &carol).await.unwrap(), None, "another room");
    assert_eq!(store.removal(r.id, &user(1)).await.unwrap(), None, "another user");

    store.append(r.id, membership_commit(1, 2, &[], &[carol])).await.unwrap();
    assert_eq!(store.removal(r.id, &carol).await.unwrap(), None, "added back");
    // Removing carol and dave again, in one update.
    let again = store.append(r.id, membership_commit(2, 3, &[carol, dave], &[])).await.unwrap();
    assert_eq!(again, AppendOutcome::Appended { seq: 5, epoch: 3 });
    assert_eq!(store.removal(r.id, &carol).await.unwrap(), Some(crate::Removal { seq: 5, epoch: 3 }));
    assert_eq!(store.removal(r.id, &dave).await.unwrap(), Some(crate::Removal { seq: 5, epoch: 3 }));
}

fn new_file(n: u8, room: crate::RoomId, owner: UserId, size: u64) -> crate::NewFile {
    crate::NewFile {
        blob: BlobId([n; 16]),
        room,
        owner,
        size,
        part_bytes: 100,
        created_at: 1_000 + i64::from(n),
        expires_at: 10_000 + i64::from(n),
    }
}

/// Quotas count every blob not yet deleted (in progress ones with their full size), per
/// uploader and per room; a refusal stores nothing.
pub async fn files_respect_user_and_room_quotas(store: Arc<dyn Store>) {
    use crate::{CreateFileOutcome, FileQuota};
    let a = create(&*store, "files-a").await.id;
    let b = create(&*store, "files-b").await.id;
    let quota = FileQuota { per_user: 1_000, per_room: 1_500 };
    let created = |o: CreateFileOutcome| matches!(o, CreateFileOutcome::Created(_));
    assert!(created(store.create_file(new_file(1, a, user(1), 600), quota).await.unwrap()));
    let r = store.create_file(new_file(2, b, user(1), 401), quota).await.unwrap();
    assert_eq!(r, CreateFileOutcome::UserQuota { used: 600 });
    assert!(created(store.create_file(new_file(3, b, user(1), 400), quota).await.unwrap()));
    assert!(created(store.create_file(new_file(4, a, user(2), 900), quota).await.unwrap()));
    let r = store.create_file(new_file(5, a, user(3), 1), quota).await.unwrap();
    assert_eq!(r, CreateFileOutcome::RoomQuota { used: 1_500 });
    assert_eq!(store.file(&BlobId([2; 16])).await.unwrap(), None, "a refusal stores nothing");
    let rec = store.file(&BlobId([1; 16])).await.unwrap().unwrap();
    assert_eq!((rec.room, rec.owner, rec.size, rec.received, rec.part_bytes), (a, user(1), 600, 0, 100));
    assert_eq!((rec.created_at, rec.expires_at), (1_001, 10_001));
    assert!(!rec.complete());
    let totals = store.file_totals().await.unwrap();
    assert_eq!((totals.files, totals.bytes), (3, 1_900));
    // Deleting frees the quota.
    assert!(store.delete_file(&BlobId([4; 16])).await.unwrap());
    assert!(!store.delete_file(&BlobId([4; 16])).await.unwrap());
    assert!(created(store.create_file(new_file(5, a, user(3), 900), quota).await.unwrap()));
}

/// A part lands only at the blob's current offset and within its size, exactly once, also
/// when many race for the same offset; completing it sets the retention expiry.
pub async fn file_parts_land_in_order_once(store: Arc<dyn Store>) {
    use crate::{FilePartOutcome, FileQuota};
    let room = create(&*store, "parts").await.id;
    let quota = FileQuota { per_user: u64::MAX, per_room: u64::MAX };
    store.create_file(new_file(1, room, user(1), 250), quota).await.unwrap();
    let blob = BlobId([1; 16]);
    let conflict =
        |o: &FilePartOutcome, received: u64| matches!(o, FilePartOutcome::Conflict(f) if f.received == received);
    let h = |n: u8| [n; 32];
    assert!(conflict(&store.file_part(&blob, 100, 100, &h(1), 99).await.unwrap(), 0), "not at the offset");
    assert!(conflict(&store.file_part(&blob, 0, 251, &h(1), 99).await.unwrap(), 0), "past the size");
    assert!(conflict(&store.file_part(&blob, 0, u64::MAX, &h(1), 99).await.unwrap(), 0), "overflowing");
    // Eight racers for offset 0, each with another body: exactly one wins.
    let mut racers = Vec::new();
    for n in 0..8u8 {
        let s = store.clone();
        racers.push(tokio::spawn(async move { (n, s.file_part(&blob, 0, 100, &[n; 32], 99).await.unwrap()) }));
    }
    let mut won = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            (n, FilePartOutcome::Recorded(f)) => {
                won.push(n);
                assert_eq!(f.received, 100);
            }
            (_, other) => assert!(conflict(&other, 100), "{other:?}"),
        }
    }
    assert_eq!(won.len(), 1);
    assert_eq!(store.file_part_hashes(&blob).await.unwrap(), vec![(0, h(won[0]))], "the winner's hash is kept");
    let FilePartOutcome::Recorded(f) = store.file_part(&blob, 100, 100, &h(20), 99).await.unwrap() else { panic!() };
    assert_eq!((f.received, f.expires_at, f.complete()), (200, 10_001, false));
    let FilePartOutcome::Recorded(f) = store.file_part(&blob, 200, 50, &h(21), 77_777).await.unwrap() else { panic!() };
    assert_eq!((f.received, f.expires_at, f.complete()), (250, 77_777, true));
    assert_eq!(store.file(&blob).await.unwrap().unwrap(), f);
    assert!(conflict(&store.file_part(&blob, 250, 1, &h(1), 1).await.unwrap(), 250), "nothing past a complete blob");
    assert_eq!(store.file_part(&BlobId([9; 16]), 0, 1, &h(1), 1).await.unwrap(), FilePartOutcome::NoSuchFile);
    assert_eq!(
        store.file_part_hashes(&blob).await.unwrap(),
        vec![(0, h(won[0])), (100, h(20)), (200, h(21))],
        "every part's hash, by offset"
    );
    assert!(store.delete_file(&blob).await.unwrap());
    assert_eq!(store.file_part_hashes(&blob).await.unwrap(), vec![], "the hashes go with the blob");
}

/// Two instances receive the same part at once: the same body is taken once and the second
/// answer says it is held; another body for a part already recorded is refused, and the
/// recorded hash stays.
pub async fn the_same_part_twice_is_taken_once_and_another_body_refused(store: Arc<dyn Store>) {
    use crate::{FilePartOutcome, FileQuota};
    let room = create(&*store, "same-part").await.id;
    let quota = FileQuota { per_user: u64::MAX, per_room: u64::MAX };
    store.create_file(new_file(2, room, user(1), 300), quota).await.unwrap();
    let blob = BlobId([2; 16]);
    let (body, other) = ([7u8; 32], [8u8; 32]);
    // Eight racers with the same body for offset 0: one records it, the others find it held.
    let mut racers = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        racers.push(tokio::spawn(async move { s.file_part(&blob, 0, 100, &body, 99).await.unwrap() }));
    }
    let (mut recorded, mut held) = (0, 0);
    for r in racers {
        match r.await.unwrap() {
            FilePartOutcome::Recorded(f) => {
                recorded += 1;
                assert_eq!(f.received, 100);
            }
            FilePartOutcome::Held(f) => {
                held += 1;
                assert_eq!(f.received, 100, "held: the blob as it is");
            }
            other => panic!("the same body is never a conflict: {other:?}"),
        }
    }
    assert_eq!((recorded, held), (1, 7));
    // Another body at offset 0 now: refused, part 0 keeps its hash, the blob did not move.
    let o = store.file_part(&blob, 0, 100, &other, 99).await.unwrap();
    assert!(matches!(&o, FilePartOutcome::Conflict(f) if f.received == 100), "{o:?}");
    assert_eq!(store.file_part_hashes(&blob).await.unwrap(), vec![(0, body)]);
    // The same body at offset 0 once more: held, nothing counted twice.
    let o = store.file_part(&blob, 0, 100, &body, 99).await.unwrap();
    assert!(matches!(&o, FilePartOutcome::Held(f) if f.received == 100), "{o:?}");
    // A held answer needs the very offset: the same hash elsewhere is no part of this blob.
    let o = store.file_part(&blob, 50, 100, &body, 99).await.unwrap();
    assert!(matches!(&o, FilePartOutcome::Conflict(f) if f.received == 100), "{o:?}");
    let FilePartOutcome::Recorded(f) = store.file_part(&blob, 100, 100, &other, 99).await.unwrap() else { panic!() };
    assert_eq!(f.received, 200);
    assert_eq!(store.file_part_hashes(&blob).await.unwrap(), vec![(0, body), (100, other)]);
    // A deleted room takes its blobs' hashes along.
    assert!(store.delete_room("same-part").await.unwrap().is_some());
    assert_eq!(store.file_part_hashes(&blob).await.unwrap(), vec![]);
}

/// Expired blobs are listed oldest first, bounded by the limit, and gone once deleted.
pub async fn files_expire_and_are_deleted(store: Arc<dyn Store>) {
    use crate::FileQuota;
    let room = create(&*store, "expiry").await.id;
    let quota = FileQuota { per_user: u64::MAX, per_room: u64::MAX };
    for n in [3u8, 1, 2, 4] {
        store.create_file(new_file(n, room, user(1), 10), quota).await.unwrap();
    }
    assert!(store.expired_files(10_000, 10).await.unwrap().is_empty());
    let due: Vec<BlobId> = store.expired_files(10_003, 10).await.unwrap().into_iter().map(|f| f.blob).collect();
    assert_eq!(due, vec![BlobId([1; 16]), BlobId([2; 16]), BlobId([3; 16])]);
    let due = store.expired_files(i64::MAX, 2).await.unwrap();
    assert_eq!(due.len(), 2);
    for f in due {
        assert!(store.delete_file(&f.blob).await.unwrap());
    }
    let left: Vec<BlobId> = store.expired_files(i64::MAX, 10).await.unwrap().into_iter().map(|f| f.blob).collect();
    assert_eq!(left, vec![BlobId([3; 16]), BlobId([4; 16])]);
    assert_eq!(store.file_totals().await.unwrap().files, 2);
}

/// The operator's view: every room with its size and last activity, every user's mailbox and
/// key-directory usage; deleting a room removes its log, states and attachment records, frees
/// its name, and leaves the other rooms alone.
pub async fn the_operator_sees_rooms_and_users_and_deletes_a_room(store: Arc<dyn Store>) {
    use crate::{FileQuota, UserUsage};
    let a = create(&*store, "alpha").await;
    let b = create(&*store, "beta").await;
    for n in 0..3 {
        store.append(a.id, app(n)).await.unwrap();
    }
    store.append(b.id, app(9)).await.unwrap();
    let quota = FileQuota { per_user: u64::MAX, per_room: u64::MAX };
    store.create_file(new_file(1, a.id, user(1), 10), quota).await.unwrap();
    store.create_file(new_file(2, b.id, user(1), 10), quota).await.unwrap();
    for body in ["one", "three"] {
        let mail =
            NewMail { owner: user(2), sender: user(1), ts: 5, expires_at: 99_999, body: body.as_bytes().to_vec() };
        store.deposit(mail, whole(100)).await.unwrap();
    }
    let items =
        (0..2u8).map(|i| KeyItemUpload { kind: KeyKind::OlmOneTime, last_resort: false, data: vec![i] }).collect();
    store.publish_keys(&user(3), items, 100).await.unwrap();

    let rooms = store.rooms_overview().await.unwrap();
    let names: Vec<&str> = rooms.iter().map(|r| r.room.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = &rooms[0];
    assert_eq!((alpha.room.head, alpha.bytes, alpha.last_activity), (3, 36, 2_002));
    assert_eq!((rooms[1].room.head, rooms[1].bytes, rooms[1].last_activity), (1, 12, 2_009));
    let empty = create(&*store, "gamma").await;
    let g = store.rooms_overview().await.unwrap().into_iter().find(|r| r.room.id == empty.id).unwrap();
    assert_eq!((g.bytes, g.last_activity), (0, 1_000), "an empty room was last active when created");
    let users = store.users_usage().await.unwrap();
    assert_eq!(
        users,
        vec![
            UserUsage { user: user(2), mailbox_messages: 2, mailbox_bytes: 8, key_items: 0 },
            UserUsage { user: user(3), mailbox_messages: 0, mailbox_bytes: 0, key_items: 2 },
        ]
    );

    let deleted = store.delete_room("alpha").await.unwrap().unwrap();
    assert_eq!((deleted.id, deleted.entries), (a.id, 3));
    assert_eq!(deleted.files.iter().map(|f| f.blob).collect::<Vec<_>>(), vec![BlobId([1; 16])]);
    assert_eq!(store.room("alpha").await.unwrap(), None);
    assert!(store.read(a.id, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.room_state(a.id, 0).await.unwrap(), None);
    assert_eq!(store.append(a.id, app(7)).await.unwrap(), AppendOutcome::NoSuchRoom);
    assert_eq!(store.file(&BlobId([1; 16])).await.unwrap(), None);
    assert!(store.file(&BlobId([2; 16])).await.unwrap().is_some(), "other rooms' files stay");
    assert_eq!(store.read(b.id, 0, 100).await.unwrap().len(), 1, "other rooms stay");
    assert_eq!(store.delete_room("alpha").await.unwrap(), None);
    let names: Vec<String> = store.rooms_overview().await.unwrap().into_iter().map(|r| r.room.name).collect();
    assert_eq!(names, ["beta", "gamma"]);
    let again = create(&*store, "alpha").await;
    assert_ne!(again.id, a.id, "the name is free; the id is new");
    assert!(store.read(again.id, 0, 100).await.unwrap().is_empty());
}

/// Log retention: application messages accepted before the cutoff go, in every room; commits
/// stay; reads skip the gaps; new entries take the next sequence number, never a purged one.
pub async fn old_messages_are_purged_and_handshakes_kept(store: Arc<dyn Store>) {
    let a = create(&*store, "a").await;
    let b = create(&*store, "b").await;
    for n in 1..=3 {
        store.append(a.id, app(n)).await.unwrap(); // ts 2_001..2_003
    }
    store.append(a.id, commit(0, 1, "c1")).await.unwrap(); // seq 4, ts 3_000
    store.append(b.id, app(1)).await.unwrap();
    let mut late = app(9);
    late.ts = 5_000;
    store.append(a.id, late).await.unwrap(); // seq 5
    assert_eq!(store.purge_messages(2_003).await.unwrap(), 3, "a's 1 and 2, b's 1");
    let seqs = |page: Vec<crate::Entry>| page.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.read(a.id, 0, 100).await.unwrap()), [3, 4, 5]);
    assert_eq!(seqs(store.read(a.id, 1, 2).await.unwrap()), [3, 4]);
    assert!(store.read(b.id, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.purge_messages(10_000).await.unwrap(), 2, "a's 3 and 5; the commit stays");
    let left = store.read(a.id, 0, 100).await.unwrap();
    assert_eq!((left.len(), left[0].seq, left[0].kind), (1, 4, EntryKind::Commit));
    assert_eq!(store.append(a.id, app(10)).await.unwrap(), AppendOutcome::Appended { seq: 6, epoch: 1 });
    assert_eq!(store.purge_messages(2_000).await.unwrap(), 0, "nothing older than 2_000 is left");
    assert_eq!(seqs(store.read(a.id, 0, 100).await.unwrap()), [4, 6]);
}

/// Fault reports are kept per room, commit and reporter (a reporter's second report replacing
/// its first), for a bounded number of commits; a room's false reports are counted per member;
/// deleting a room deletes both.
pub async fn fault_reports_are_kept_per_commit_and_reporter(store: Arc<dyn Store>) {
    let room = create_room(&*store, "garden").await;
    let other = create_room(&*store, "orchard").await;
    let key = |n: u8| Some(vec![n; 32]);
    assert_eq!(store.record_report(room, 5, &user(2), key(7), 3).await.unwrap(), vec![(user(2), key(7))]);
    let both = store.record_report(room, 5, &user(3), None, 3).await.unwrap();
    assert_eq!(both, vec![(user(2), key(7)), (user(3), None)]);
    // A second report of the same reporter replaces its first.
    let again = store.record_report(room, 5, &user(3), key(7), 3).await.unwrap();
    assert_eq!(again, vec![(user(2), key(7)), (user(3), key(7))]);
    assert_eq!(store.record_report(other, 5, &user(4), None, 3).await.unwrap(), vec![(user(4), None)]);
    // Only `keep` reported commits are kept: the one reported and the most recent others.
    for seq in [6, 7, 8] {
        store.record_report(room, seq, &user(2), None, 3).await.unwrap();
    }
    let five = store.record_report(room, 5, &user(4), None, 3).await.unwrap();
    assert_eq!(five, vec![(user(4), None)], "5's earlier reports were dropped for 8's");
    store.forget_reports(room, 7).await.unwrap();
    assert_eq!(store.record_report(room, 8, &user(3), None, 3).await.unwrap(), vec![(user(3), None)], "8 forgotten");
    assert_eq!(store.record_report(room, 6, &user(3), None, 3).await.unwrap().len(), 1, "6 dropped for 5");
    assert_eq!(store.record_report(room, 5, &user(3), None, 3).await.unwrap().len(), 2, "5 kept");
    assert_eq!(store.record_report(other, 5, &user(2), None, 3).await.unwrap().len(), 2, "the other room's stay");

    assert_eq!(store.false_reports(room, &user(2), false).await.unwrap(), 0);
    assert_eq!(store.false_reports(room, &user(2), true).await.unwrap(), 1);
    assert_eq!(store.false_reports(room, &user(2), true).await.unwrap(), 2);
    assert_eq!(store.false_reports(other, &user(2), false).await.unwrap(), 0);
    assert_eq!(store.false_reports(room, &user(2), false).await.unwrap(), 2);
    // Deleting a room deletes its reports.
    store.delete_room("garden").await.unwrap().unwrap();
    let room = create_room(&*store, "garden").await;
    assert_eq!(store.false_reports(room, &user(2), false).await.unwrap(), 0);
    assert_eq!(store.record_report(room, 6, &user(3), None, 3).await.unwrap().len(), 1);
}

/// Blocked keys are kept, listed in order, and each change is reported once.
pub async fn blocked_keys_are_kept(store: Arc<dyn Store>) {
    assert!(store.blocked_users().await.unwrap().is_empty());
    assert!(store.set_blocked(&user(2), true, 10).await.unwrap());
    assert!(!store.set_blocked(&user(2), true, 11).await.unwrap(), "blocked already");
    assert!(store.set_blocked(&user(1), true, 12).await.unwrap());
    assert_eq!(store.blocked_users().await.unwrap(), vec![user(1), user(2)]);
    assert!(store.set_blocked(&user(2), false, 13).await.unwrap());
    assert!(!store.set_blocked(&user(2), false, 14).await.unwrap(), "not blocked");
    assert_eq!(store.blocked_users().await.unwrap(), vec![user(1)]);
}

/// A room's link: two uses, then used up; a reset link refuses the old token; expiry; requests
/// wait once per user, up to the cap, until dropped; a deleted room forgets them.
pub async fn a_link_counts_uses_and_expiry_and_requests_wait(store: Arc<dyn Store>) {
    use crate::{JoinOutcome, JoinRequest, RoomLink};
    let room = create(&*store, "commons").await.id;
    let ask = |n: u8, at: i64| JoinRequest {
        user: user(n),
        home: format!("https://home{n}.example"),
        proof: vec![n; 32],
        at,
    };
    let link = |hash: u8, max_uses: Option<u64>, expires_at: Option<i64>| RoomLink {
        token_hash: [hash; 32],
        max_uses,
        uses: 0,
        expires_at,
        created_by: user(1),
        created_at: 5,
    };
    assert_eq!(store.request_join(room, [7; 32], ask(2, 10), 10).await.unwrap(), JoinOutcome::NoLink);
    store.set_room_link(room, Some(link(7, Some(2), Some(1_000)))).await.unwrap();
    assert_eq!(store.room_link(room).await.unwrap(), Some(link(7, Some(2), Some(1_000))));
    assert_eq!(store.request_join(room, [8; 32], ask(2, 10), 10).await.unwrap(), JoinOutcome::NoLink);
    assert_eq!(store.request_join(room, [7; 32], ask(2, 10), 10).await.unwrap(), JoinOutcome::Requested);
    assert_eq!(store.request_join(room, [7; 32], ask(2, 11), 10).await.unwrap(), JoinOutcome::AlreadyRequested);
    assert_eq!(store.request_join(room, [7; 32], ask(3, 12), 10).await.unwrap(), JoinOutcome::Requested);
    assert_eq!(store.request_join(room, [7; 32], ask(4, 13), 10).await.unwrap(), JoinOutcome::UsedUp);
    assert_eq!(store.room_link(room).await.unwrap().unwrap().uses, 2);
    let waiting = store.join_requests(room).await.unwrap();
    assert_eq!(waiting, vec![ask(2, 10), ask(3, 12)]);
    assert!(store.delete_join_request(room, &user(2)).await.unwrap());
    assert!(!store.delete_join_request(room, &user(2)).await.unwrap());
    assert_eq!(store.join_requests(room).await.unwrap(), vec![ask(3, 12)]);

    // A reset: the old token no longer works; the new one expires.
    store.set_room_link(room, Some(link(9, None, Some(100)))).await.unwrap();
    assert_eq!(store.request_join(room, [7; 32], ask(5, 20), 10).await.unwrap(), JoinOutcome::NoLink);
    assert_eq!(store.request_join(room, [9; 32], ask(5, 100), 10).await.unwrap(), JoinOutcome::Expired);
    // The cap on waiting requests.
    assert_eq!(store.request_join(room, [9; 32], ask(5, 20), 2).await.unwrap(), JoinOutcome::Requested);
    assert_eq!(store.request_join(room, [9; 32], ask(6, 21), 2).await.unwrap(), JoinOutcome::TooManyPending);
    // Revoked.
    store.set_room_link(room, None).await.unwrap();
    assert_eq!(store.room_link(room).await.unwrap(), None);
    assert_eq!(store.request_join(room, [9; 32], ask(6, 22), 10).await.unwrap(), JoinOutcome::NoLink);
    // Other rooms have their own.
    let other = create(&*store, "other").await.id;
    assert!(store.join_requests(other).await.unwrap().is_empty());
    store.delete_room("commons").await.unwrap();
    assert!(store.join_requests(room).await.unwrap().is_empty());
}

/// A link join by external commit: members keep the room's sealed GroupInfo, which moves only
/// forward for one link and is replaced at once for a new link; each join counts a use of the
/// link, refused when it is used up, expired or not the room's; a deleted room forgets it.
pub async fn a_links_sealed_group_info_moves_forward_and_joins_count_uses(store: Arc<dyn Store>) {
    use crate::{JoinOutcome, LinkGroupInfo, RoomLink};
    let room = create(&*store, "plaza").await.id;
    let info = |hash: u8, epoch: u64| LinkGroupInfo { token_hash: [hash; 32], epoch, sealed: vec![hash, epoch as u8] };
    assert_eq!(store.link_group_info(room).await.unwrap(), None);
    assert!(store.set_link_group_info(room, info(7, 3)).await.unwrap());
    assert!(store.set_link_group_info(room, info(7, 4)).await.unwrap(), "a later epoch");
    assert!(store.set_link_group_info(room, info(7, 4)).await.unwrap(), "the same epoch again (another member)");
    assert!(!store.set_link_group_info(room, info(7, 2)).await.unwrap(), "an older epoch is not kept");
    assert_eq!(store.link_group_info(room).await.unwrap(), Some(info(7, 4)));
    assert!(store.set_link_group_info(room, info(9, 1)).await.unwrap(), "a reset link's, whatever its epoch");
    assert_eq!(store.link_group_info(room).await.unwrap(), Some(info(9, 1)));

    // Joins count uses.
    assert_eq!(store.use_link(room, [9; 32], 10).await.unwrap(), Err(JoinOutcome::NoLink));
    let link = RoomLink {
        token_hash: [9; 32],
        max_uses: Some(2),
        uses: 0,
        expires_at: Some(1_000),
        created_by: user(1),
        created_at: 5,
    };
    store.set_room_link(room, Some(link)).await.unwrap();
    assert_eq!(store.use_link(room, [8; 32], 10).await.unwrap(), Err(JoinOutcome::NoLink));
    assert_eq!(store.use_link(room, [9; 32], 1_000).await.unwrap(), Err(JoinOutcome::Expired));
    assert_eq!(store.use_link(room, [9; 32], 10).await.unwrap(), Ok(()));
    assert_eq!(store.use_link(room, [9; 32], 11).await.unwrap(), Ok(()));
    assert_eq!(store.use_link(room, [9; 32], 12).await.unwrap(), Err(JoinOutcome::UsedUp));
    assert_eq!(store.room_link(room).await.unwrap().unwrap().uses, 2);

    let other = create(&*store, "square").await.id;
    assert_eq!(store.link_group_info(other).await.unwrap(), None);
    store.delete_room("plaza").await.unwrap();
    assert_eq!(store.link_group_info(room).await.unwrap(), None);
}
