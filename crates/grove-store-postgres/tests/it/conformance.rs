//! The `grove-store` conformance suite, each scenario on a fresh database.

use async_trait::async_trait;
use grove_store::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, NewEntry, NewMail, NewRoom, PublishOutcome, Result, RoomId,
    RoomRecord, Store,
};
use grove_store_postgres::PostgresStore;
use grove_wire::api::{ClaimedKey, Entry, KeyCount, KeyItemUpload, KeyKind, MailboxEntry};
use grove_wire::UserId;
use std::sync::Arc;

use crate::TestDb;

/// A store on a fresh database, dropped with the store.
struct TempStore {
    store: PostgresStore,
    _db: TestDb,
}

impl TempStore {
    async fn new() -> Self {
        let db = TestDb::create().await;
        let store = PostgresStore::connect(db.url()).await.expect("connect");
        TempStore { store, _db: db }
    }
}

#[async_trait]
impl Store for TempStore {
    async fn create_room(&self, room: NewRoom, max: u64) -> Result<CreateRoomOutcome> {
        self.store.create_room(room, max).await
    }
    async fn room(&self, name: &str) -> Result<Option<RoomRecord>> {
        self.store.room(name).await
    }
    async fn public_rooms(&self, after: &str, limit: u32) -> Result<Vec<RoomRecord>> {
        self.store.public_rooms(after, limit).await
    }
    async fn append(&self, room: RoomId, entry: NewEntry) -> Result<AppendOutcome> {
        self.store.append(room, entry).await
    }
    async fn room_state(&self, room: RoomId, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.store.room_state(room, epoch).await
    }
    async fn read(&self, room: RoomId, after: u64, limit: u32) -> Result<Vec<Entry>> {
        self.store.read(room, after, limit).await
    }
    async fn deposit(&self, mail: NewMail, quota: u64) -> Result<DepositOutcome> {
        self.store.deposit(mail, quota).await
    }
    async fn mailbox_read(&self, owner: &UserId, after: u64, limit: u32, now: i64) -> Result<Vec<MailboxEntry>> {
        self.store.mailbox_read(owner, after, limit, now).await
    }
    async fn mailbox_ack(&self, owner: &UserId, up_to: u64) -> Result<u64> {
        self.store.mailbox_ack(owner, up_to).await
    }
    async fn purge_expired(&self, now: i64) -> Result<u64> {
        self.store.purge_expired(now).await
    }
    async fn publish_keys(&self, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> Result<PublishOutcome> {
        self.store.publish_keys(owner, items, cap).await
    }
    async fn claim_key(&self, owner: &UserId, kind: KeyKind) -> Result<Option<ClaimedKey>> {
        self.store.claim_key(owner, kind).await
    }
    async fn key_counts(&self, owner: &UserId) -> Result<Vec<KeyCount>> {
        self.store.key_counts(owner).await
    }
}

grove_store::conformance_tests!(|| async { Arc::new(TempStore::new().await) });
