//! Fault reports (`Store::record_report`, `false_reports`, `forget_reports`). Rare and small, so
//! they do not go through the group-committing writer: each runs on a pooled connection, the
//! record in one transaction.
//!
//! Records of one room are serialized across instances by an advisory transaction lock on the
//! room: two reports of one commit recorded at once on two instances would otherwise each
//! insert its row and read the commit's reports without the other's (neither committed yet),
//! and neither instance would see the two agreeing reports that void the commit. Under the
//! lock, the second reads after the first committed.

use grove_store::{Result, RoomId};
use grove_wire::UserId;

use crate::codec::{col, db_err, user_from_db};
use crate::PostgresStore;

/// Advisory lock namespace of fault reports (first key of `pg_advisory_xact_lock(int4, int4)`),
/// apart from the writer's and the files'.
const LOCK_REPORTS: i32 = 0x6772_0005;

/// The second key of a room's lock: its id folded into 32 bits (two rooms sharing one only
/// wait for each other).
fn room_key(room: RoomId) -> i32 {
    let b = room.to_be_bytes();
    i32::from_be_bytes([b[0] ^ b[4], b[1] ^ b[5], b[2] ^ b[6], b[3] ^ b[7]])
}

impl PostgresStore {
    pub(crate) async fn reports_record(
        &self,
        room: RoomId,
        seq: u64,
        reporter: &UserId,
        key: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Vec<(UserId, Option<Vec<u8>>)>> {
        let mut client = self.pool.get().await.map_err(crate::pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let others = i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX);
        let reporter = reporter.as_bytes().as_slice();
        tx.execute("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", &[&LOCK_REPORTS, &room_key(room)])
            .await
            .map_err(db_err)?;
        tx.execute(
            "INSERT INTO fault_reports (room, seq, reporter, membership_key) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room, seq, reporter) DO UPDATE SET membership_key = EXCLUDED.membership_key",
            &[&room, &seq, &reporter, &key],
        )
        .await
        .map_err(db_err)?;
        tx.execute(
            "DELETE FROM fault_reports WHERE room = $1 AND seq <> $2 AND seq NOT IN \
               (SELECT DISTINCT seq FROM fault_reports WHERE room = $1 AND seq <> $2 ORDER BY seq DESC LIMIT $3)",
            &[&room, &seq, &others],
        )
        .await
        .map_err(db_err)?;
        let rows = tx
            .query(
                "SELECT reporter, membership_key FROM fault_reports WHERE room = $1 AND seq = $2 ORDER BY reporter",
                &[&room, &seq],
            )
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let user: Vec<u8> = col(r, 0)?;
                Ok((user_from_db(&user, "fault_reports.reporter")?, col(r, 1)?))
            })
            .collect()
    }

    pub(crate) async fn reports_false(&self, room: RoomId, user: &UserId, add: bool) -> Result<u32> {
        let user = user.as_bytes().as_slice();
        let rows = if add {
            self.query(
                "INSERT INTO false_reports (room, reporter, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (room, reporter) DO UPDATE SET count = false_reports.count + 1 RETURNING count",
                &[&room, &user],
            )
            .await?
        } else {
            self.query("SELECT count FROM false_reports WHERE room = $1 AND reporter = $2", &[&room, &user]).await?
        };
        let n: i64 = match rows.first() {
            Some(r) => col(r, 0)?,
            None => 0,
        };
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub(crate) async fn reports_forget(&self, room: RoomId, seq: u64) -> Result<()> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.query("DELETE FROM fault_reports WHERE room = $1 AND seq >= $2 RETURNING seq", &[&room, &seq]).await?;
        Ok(())
    }
}
