//! Invite links and join requests (`grove_store::joins`). Rare and small, so, like the
//! operator's writes, they run on a pooled connection rather than through the group-committing
//! writer; a request locks the room's link row (`FOR UPDATE`), so its use is counted once even
//! with several instances.

use grove_store::joins::admits;
use grove_store::{JoinOutcome, JoinRequest, LinkGroupInfo, Result, RoomId, RoomLink, StoreError};
use grove_wire::UserId;
use tokio_postgres::Row;

use crate::codec::{col, db_err, seq_from_db, user_from_db};
use crate::PostgresStore;

const LINK_COLUMNS: &str = "token_hash, max_uses, uses, expires_at, created_by, created_at";

fn link_from_row(row: &Row) -> Result<RoomLink> {
    let hash: Vec<u8> = col(row, 0)?;
    let max_uses: Option<i64> = col(row, 1)?;
    let by: Vec<u8> = col(row, 4)?;
    Ok(RoomLink {
        token_hash: <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| StoreError::corrupt("room_links.token_hash is not 32 bytes"))?,
        max_uses: max_uses.map(seq_from_db).transpose()?,
        uses: seq_from_db(col(row, 2)?)?,
        expires_at: col(row, 3)?,
        created_by: user_from_db(&by, "room_links.created_by")?,
        created_at: col(row, 5)?,
    })
}

fn info_from_row(row: &Row) -> Result<LinkGroupInfo> {
    let hash: Vec<u8> = col(row, 0)?;
    Ok(LinkGroupInfo {
        token_hash: <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| StoreError::corrupt("link_group_infos.token_hash is not 32 bytes"))?,
        epoch: seq_from_db(col(row, 1)?)?,
        sealed: col(row, 2)?,
    })
}

fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PostgresStore {
    pub(crate) async fn pg_set_room_link(&self, room: RoomId, link: Option<RoomLink>) -> Result<()> {
        let client = self.pool.get().await.map_err(crate::pool_err)?;
        match link {
            None => client.execute("DELETE FROM room_links WHERE room = $1", &[&room]).await,
            Some(l) => client
                .execute(
                    "INSERT INTO room_links (room, token_hash, max_uses, uses, expires_at, created_by, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (room) DO UPDATE SET token_hash = EXCLUDED.token_hash, \
                           max_uses = EXCLUDED.max_uses, uses = EXCLUDED.uses, expires_at = EXCLUDED.expires_at, \
                           created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at",
                    &[
                        &room,
                        &l.token_hash.as_slice(),
                        &l.max_uses.map(to_db),
                        &to_db(l.uses),
                        &l.expires_at,
                        &l.created_by.as_bytes().as_slice(),
                        &l.created_at,
                    ],
                )
                .await,
        }
        .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn pg_room_link(&self, room: RoomId) -> Result<Option<RoomLink>> {
        let rows = self.query(&format!("SELECT {LINK_COLUMNS} FROM room_links WHERE room = $1"), &[&room]).await?;
        rows.first().map(link_from_row).transpose()
    }

    pub(crate) async fn pg_request_join(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        request: JoinRequest,
        max_pending: u64,
    ) -> Result<JoinOutcome> {
        let mut client = self.pool.get().await.map_err(crate::pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let link = tx
            .query_opt(&format!("SELECT {LINK_COLUMNS} FROM room_links WHERE room = $1 FOR UPDATE"), &[&room])
            .await
            .map_err(db_err)?
            .as_ref()
            .map(link_from_row)
            .transpose()?;
        if let Err(refused) = admits(link.as_ref(), &token_hash, request.at) {
            return Ok(refused);
        }
        let user = request.user.as_bytes().as_slice();
        let already = tx
            .query_opt("SELECT 1 FROM join_requests WHERE room = $1 AND \"user\" = $2", &[&room, &user])
            .await
            .map_err(db_err)?;
        if already.is_some() {
            return Ok(JoinOutcome::AlreadyRequested);
        }
        let row = tx.query_one("SELECT COUNT(*) FROM join_requests WHERE room = $1", &[&room]).await.map_err(db_err)?;
        if seq_from_db(col(&row, 0)?)? >= max_pending {
            return Ok(JoinOutcome::TooManyPending);
        }
        tx.execute(
            "INSERT INTO join_requests (room, \"user\", home, at, proof) VALUES ($1, $2, $3, $4, $5)",
            &[&room, &user, &request.home, &request.at, &request.proof],
        )
        .await
        .map_err(db_err)?;
        tx.execute("UPDATE room_links SET uses = uses + 1 WHERE room = $1", &[&room]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(JoinOutcome::Requested)
    }

    pub(crate) async fn pg_use_link(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<std::result::Result<(), JoinOutcome>> {
        let mut client = self.pool.get().await.map_err(crate::pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let link = tx
            .query_opt(&format!("SELECT {LINK_COLUMNS} FROM room_links WHERE room = $1 FOR UPDATE"), &[&room])
            .await
            .map_err(db_err)?
            .as_ref()
            .map(link_from_row)
            .transpose()?;
        if let Err(refused) = admits(link.as_ref(), &token_hash, now) {
            return Ok(Err(refused));
        }
        tx.execute("UPDATE room_links SET uses = uses + 1 WHERE room = $1", &[&room]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    pub(crate) async fn pg_set_link_group_info(&self, room: RoomId, info: LinkGroupInfo) -> Result<bool> {
        let mut client = self.pool.get().await.map_err(crate::pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        // Serialises uploads for the room with its link's row (absent for a room without one).
        tx.execute("SELECT 1 FROM room_links WHERE room = $1 FOR UPDATE", &[&room]).await.map_err(db_err)?;
        let kept = tx
            .query_opt("SELECT token_hash, epoch, sealed FROM link_group_infos WHERE room = $1", &[&room])
            .await
            .map_err(db_err)?
            .as_ref()
            .map(info_from_row)
            .transpose()?;
        if !grove_store::joins::replaces(kept.as_ref(), &info) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO link_group_infos (room, token_hash, epoch, sealed) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (room) DO UPDATE SET token_hash = EXCLUDED.token_hash, epoch = EXCLUDED.epoch, \
                   sealed = EXCLUDED.sealed",
            &[&room, &info.token_hash.as_slice(), &to_db(info.epoch), &info.sealed],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    pub(crate) async fn pg_link_group_info(&self, room: RoomId) -> Result<Option<LinkGroupInfo>> {
        let rows =
            self.query("SELECT token_hash, epoch, sealed FROM link_group_infos WHERE room = $1", &[&room]).await?;
        rows.first().map(info_from_row).transpose()
    }

    pub(crate) async fn pg_join_requests(&self, room: RoomId) -> Result<Vec<JoinRequest>> {
        let rows = self
            .query(
                "SELECT \"user\", home, at, proof FROM join_requests WHERE room = $1 ORDER BY at, \"user\"",
                &[&room],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let user: Vec<u8> = col(row, 0)?;
                Ok(JoinRequest {
                    user: user_from_db(&user, "join_requests.user")?,
                    home: col(row, 1)?,
                    at: col(row, 2)?,
                    proof: col(row, 3)?,
                })
            })
            .collect()
    }

    pub(crate) async fn pg_delete_join_request(&self, room: RoomId, user: &UserId) -> Result<bool> {
        let client = self.pool.get().await.map_err(crate::pool_err)?;
        let n = client
            .execute(
                "DELETE FROM join_requests WHERE room = $1 AND \"user\" = $2",
                &[&room, &user.as_bytes().as_slice()],
            )
            .await
            .map_err(db_err)?;
        Ok(n > 0)
    }
}
