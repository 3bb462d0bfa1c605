//! The `grove-store` conformance suite, each scenario on a fresh database.

use std::sync::Arc;

use grove_store::conformance::Guarded;
use grove_store_postgres::PostgresStore;

use crate::TestDb;

/// A store on a fresh database, which is dropped after the store.
async fn temp_store() -> Guarded<PostgresStore, TestDb> {
    let db = TestDb::create().await;
    let store = PostgresStore::connect(db.url()).await.expect("connect");
    Guarded::new(store, db)
}

grove_store::conformance_tests!(|| async { Arc::new(temp_store().await) });
