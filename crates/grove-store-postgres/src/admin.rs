//! The operator's reads and writes (`grove admin`). Rare and small, so they do not go through
//! the group-committing writer: each runs on a pooled connection. Deleting a room locks its row
//! first (as the writer does for an append), so it cannot interleave with an append; other
//! instances' cached state of the room is refreshed by the usual announcement. PostgreSQL keeps
//! deleted rows until `VACUUM` reclaims them (autovacuum does, in time): see
//! docs/operating.md.

use std::collections::BTreeMap;

use grove_store::{DeletedRoom, Result, RoomOverview, UserUsage};
use grove_wire::UserId;

use crate::codec::{col, db_err, room_from_row, seq_from_db, user_from_db, ROOM_COLUMNS};
use crate::{PostgresStore, NOTIFY_CHANNEL};

impl PostgresStore {
    pub(crate) async fn admin_rooms(&self) -> Result<Vec<RoomOverview>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {ROOM_COLUMNS}, \
                       (SELECT COALESCE(SUM(octet_length(body)), 0)::bigint FROM entries WHERE entries.room = rooms.id), \
                       (SELECT MAX(ts) FROM entries WHERE entries.room = rooms.id) \
                     FROM rooms ORDER BY name"
                ),
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let room = room_from_row(row)?;
                let bytes: i64 = col(row, 12)?;
                let last: Option<i64> = col(row, 13)?;
                let last_activity = last.unwrap_or(room.created_at);
                Ok(RoomOverview { room, bytes: seq_from_db(bytes)?, last_activity })
            })
            .collect()
    }

    pub(crate) async fn admin_delete_room(&self, name: &str) -> Result<Option<DeletedRoom>> {
        let mut client = self.pool.get().await.map_err(crate::pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let Some(row) =
            tx.query_opt("SELECT id FROM rooms WHERE name = $1 FOR UPDATE", &[&name]).await.map_err(db_err)?
        else {
            return Ok(None);
        };
        let id: i64 = col(&row, 0)?;
        let files = tx
            .query(&format!("DELETE FROM files WHERE room = $1 RETURNING {}", crate::files::FILE_COLUMNS), &[&id])
            .await
            .map_err(db_err)?
            .iter()
            .map(crate::files::file_from_row)
            .collect::<Result<Vec<_>>>()?;
        let entries = tx.execute("DELETE FROM entries WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM room_states WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM room_links WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM join_requests WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM link_group_infos WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM fault_reports WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM false_reports WHERE room = $1", &[&id]).await.map_err(db_err)?;
        tx.execute("DELETE FROM rooms WHERE id = $1", &[&id]).await.map_err(db_err)?;
        // Every instance forgets the room (`listener`: a `-ID` room); an origin no store has, so
        // that none ignores it as its own.
        let payload = format!("admin;-{id};");
        tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &payload]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(DeletedRoom { id, entries, files }))
    }

    pub(crate) async fn admin_users(&self) -> Result<Vec<UserUsage>> {
        let mut out: BTreeMap<UserId, UserUsage> = BTreeMap::new();
        let blank = |user: UserId| UserUsage { user, mailbox_messages: 0, mailbox_bytes: 0, key_items: 0 };
        let rows = self
            .query(
                "SELECT owner, COUNT(*)::bigint, COALESCE(SUM(octet_length(body)), 0)::bigint FROM mailbox GROUP BY owner",
                &[],
            )
            .await?;
        for row in &rows {
            let owner: Vec<u8> = col(row, 0)?;
            let user = user_from_db(&owner, "mailbox.owner")?;
            let u = out.entry(user).or_insert_with(|| blank(user));
            u.mailbox_messages = seq_from_db(col(row, 1)?)?;
            u.mailbox_bytes = seq_from_db(col(row, 2)?)?;
        }
        let rows = self.query("SELECT owner, COUNT(*)::bigint FROM key_items GROUP BY owner", &[]).await?;
        for row in &rows {
            let owner: Vec<u8> = col(row, 0)?;
            let user = user_from_db(&owner, "key_items.owner")?;
            out.entry(user).or_insert_with(|| blank(user)).key_items = seq_from_db(col(row, 1)?)?;
        }
        Ok(out.into_values().collect())
    }

    /// Deletes application entries accepted before `before` (log retention).
    pub(crate) async fn admin_purge_messages(&self, before: i64) -> Result<u64> {
        let client = self.pool.get().await.map_err(crate::pool_err)?;
        client.execute("DELETE FROM entries WHERE kind = 'application' AND ts < $1", &[&before]).await.map_err(db_err)
    }

    pub(crate) async fn admin_set_blocked(&self, user: &UserId, blocked: bool, at: i64) -> Result<bool> {
        let client = self.pool.get().await.map_err(crate::pool_err)?;
        let owner = user.as_bytes().as_slice();
        let n = if blocked {
            client
                .execute(
                    "INSERT INTO blocked (owner, since) VALUES ($1, $2) ON CONFLICT (owner) DO NOTHING",
                    &[&owner, &at],
                )
                .await
        } else {
            client.execute("DELETE FROM blocked WHERE owner = $1", &[&owner]).await
        }
        .map_err(db_err)?;
        Ok(n > 0)
    }

    pub(crate) async fn admin_blocked(&self) -> Result<Vec<UserId>> {
        let rows = self.query("SELECT owner FROM blocked ORDER BY owner", &[]).await?;
        rows.iter()
            .map(|r| {
                let b: Vec<u8> = col(r, 0)?;
                user_from_db(&b, "blocked.owner")
            })
            .collect()
    }
}
