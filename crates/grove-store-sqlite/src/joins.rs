//! Invite links and join requests (`grove_store::joins`). Rare writes: each runs on a
//! connection of its own in one `BEGIN IMMEDIATE` transaction, like the operator's, so that a
//! link's use is counted in the same transaction as the request it admits.

use std::path::Path;

use grove_store::columns::{seq_from_db, user_from_db};
use grove_store::joins::admits;
use grove_store::{JoinOutcome, JoinRequest, LinkGroupInfo, Result, RoomId, RoomLink};
use grove_wire::UserId;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::codec::db_err;

fn link_in(conn: &Connection, room: RoomId) -> Result<Option<RoomLink>> {
    let row = conn
        .prepare_cached(
            "SELECT token_hash, max_uses, uses, expires_at, created_by, created_at FROM room_links WHERE room = ?1",
        )
        .and_then(|mut s| {
            s.query_row([room], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()
        })
        .map_err(db_err)?;
    let Some((hash, max_uses, uses, expires_at, by, created_at)) = row else { return Ok(None) };
    let token_hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| grove_store::StoreError::corrupt("room_links.token_hash is not 32 bytes"))?;
    Ok(Some(RoomLink {
        token_hash,
        max_uses: max_uses.map(seq_from_db).transpose()?,
        uses: seq_from_db(uses)?,
        expires_at,
        created_by: user_from_db(&by, "room_links.created_by")?,
        created_at,
    }))
}

pub(crate) fn room_link(conn: &Connection, room: RoomId) -> Result<Option<RoomLink>> {
    link_in(conn, room)
}

pub(crate) fn join_requests(conn: &Connection, room: RoomId) -> Result<Vec<JoinRequest>> {
    let mut stmt = conn
        .prepare_cached("SELECT user, home, at, proof FROM join_requests WHERE room = ?1 ORDER BY at, user")
        .map_err(db_err)?;
    let mut rows = stmt.query([room]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let user: Vec<u8> = row.get(0).map_err(db_err)?;
        out.push(JoinRequest {
            user: user_from_db(&user, "join_requests.user")?,
            home: row.get(1).map_err(db_err)?,
            at: row.get(2).map_err(db_err)?,
            proof: row.get(3).map_err(db_err)?,
        });
    }
    Ok(out)
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)
}

fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn set_room_link(path: &Path, room: RoomId, link: Option<RoomLink>) -> Result<()> {
    let conn = crate::admin::writer(path)?;
    match link {
        None => conn.execute("DELETE FROM room_links WHERE room = ?1", [room]),
        Some(l) => conn.execute(
            "INSERT OR REPLACE INTO room_links (room, token_hash, max_uses, uses, expires_at, created_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                room,
                l.token_hash.as_slice(),
                l.max_uses.map(to_db),
                to_db(l.uses),
                l.expires_at,
                l.created_by.as_bytes().as_slice(),
                l.created_at
            ],
        ),
    }
    .map_err(db_err)?;
    Ok(())
}

pub(crate) fn request_join(
    path: &Path,
    room: RoomId,
    token_hash: [u8; 32],
    request: JoinRequest,
    max_pending: u64,
) -> Result<JoinOutcome> {
    let mut conn = crate::admin::writer(path)?;
    let tx = immediate(&mut conn)?;
    if let Err(refused) = admits(link_in(&tx, room)?.as_ref(), &token_hash, request.at) {
        return Ok(refused);
    }
    let user = request.user.as_bytes().as_slice();
    let already: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM join_requests WHERE room = ?1 AND user = ?2")
        .and_then(|mut s| s.query_row(params![room, user], |r| r.get(0)).optional())
        .map_err(db_err)?;
    if already.is_some() {
        return Ok(JoinOutcome::AlreadyRequested);
    }
    let waiting: i64 =
        tx.query_row("SELECT COUNT(*) FROM join_requests WHERE room = ?1", [room], |r| r.get(0)).map_err(db_err)?;
    if seq_from_db(waiting)? >= max_pending {
        return Ok(JoinOutcome::TooManyPending);
    }
    tx.execute(
        "INSERT INTO join_requests (room, user, home, at, proof) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![room, user, request.home, request.at, request.proof],
    )
    .map_err(db_err)?;
    tx.execute("UPDATE room_links SET uses = uses + 1 WHERE room = ?1", [room]).map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(JoinOutcome::Requested)
}

pub(crate) fn delete_join_request(path: &Path, room: RoomId, user: &UserId) -> Result<bool> {
    let conn = crate::admin::writer(path)?;
    let n = conn
        .execute("DELETE FROM join_requests WHERE room = ?1 AND user = ?2", params![room, user.as_bytes().as_slice()])
        .map_err(db_err)?;
    Ok(n > 0)
}

pub(crate) fn use_link(
    path: &Path,
    room: RoomId,
    token_hash: [u8; 32],
    now: i64,
) -> Result<std::result::Result<(), JoinOutcome>> {
    let mut conn = crate::admin::writer(path)?;
    let tx = immediate(&mut conn)?;
    if let Err(refused) = admits(link_in(&tx, room)?.as_ref(), &token_hash, now) {
        return Ok(Err(refused));
    }
    tx.execute("UPDATE room_links SET uses = uses + 1 WHERE room = ?1", [room]).map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(Ok(()))
}

fn info_in(conn: &Connection, room: RoomId) -> Result<Option<LinkGroupInfo>> {
    let row = conn
        .prepare_cached("SELECT token_hash, epoch, sealed FROM link_group_infos WHERE room = ?1")
        .and_then(|mut s| {
            s.query_row([room], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))
                .optional()
        })
        .map_err(db_err)?;
    let Some((hash, epoch, sealed)) = row else { return Ok(None) };
    let token_hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| grove_store::StoreError::corrupt("link_group_infos.token_hash is not 32 bytes"))?;
    Ok(Some(LinkGroupInfo { token_hash, epoch: seq_from_db(epoch)?, sealed }))
}

pub(crate) fn link_group_info(conn: &Connection, room: RoomId) -> Result<Option<LinkGroupInfo>> {
    info_in(conn, room)
}

pub(crate) fn set_link_group_info(path: &Path, room: RoomId, info: LinkGroupInfo) -> Result<bool> {
    let mut conn = crate::admin::writer(path)?;
    let tx = immediate(&mut conn)?;
    if !grove_store::joins::replaces(info_in(&tx, room)?.as_ref(), &info) {
        return Ok(false);
    }
    tx.execute(
        "INSERT OR REPLACE INTO link_group_infos (room, token_hash, epoch, sealed) VALUES (?1, ?2, ?3, ?4)",
        params![room, info.token_hash.as_slice(), to_db(info.epoch), info.sealed],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(true)
}
