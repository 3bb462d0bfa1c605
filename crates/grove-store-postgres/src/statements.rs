//! The writer's SQL: every statement it prepares, each named next to its text.
//!
//! [`statements!`] declares the struct [`Stmts`] (one [`Statement`] field per name) and its
//! `prepare`, which prepares all of them at once on a new connection (pipelined), so a name can
//! never be paired with another statement's SQL.

use tokio_postgres::{Client, Statement};

use crate::codec::KEY_COUNTS_SQL;

/// Declares [`Stmts`] from `name = "SQL";` pairs.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {
        /// The writer's statements, prepared once per connection.
        pub(crate) struct Stmts {
            $($(#[$doc])* pub(crate) $name: Statement,)*
        }

        impl Stmts {
            /// Prepares every statement on `c`, concurrently.
            pub(crate) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
                let ($($name,)*) = tokio::try_join!($(c.prepare($sql),)*)?;
                Ok(Stmts { $($name,)* })
            }
        }
    };
}

statements! {
    begin = "BEGIN";
    commit = "COMMIT";
    rollback = "ROLLBACK";
    /// Locks the rooms a batch appends to, in id order (no deadlock between instances).
    lock_rooms = "SELECT id, epoch, head, state_version FROM rooms WHERE id = ANY($1::int8[]) ORDER BY id FOR UPDATE";
    insert_entries = "INSERT INTO entries (room, seq, kind, epoch, sender, ts, body) \
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::bytea[], $6::int8[], \
         $7::bytea[])";
    /// One head bump (and state change) per room of a batch.
    update_rooms = "UPDATE rooms AS r SET head = u.head, epoch = u.epoch, state_version = u.state_version, \
         state = COALESCE(u.state, r.state), members = COALESCE(u.members, r.members), \
         admins = COALESCE(u.admins, r.admins) \
         FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::bytea[], $6::bytea[], $7::bytea[]) \
         AS u(id, head, epoch, state_version, state, members, admins) WHERE r.id = u.id";
    upsert_state = "INSERT INTO room_states (room, epoch, state) VALUES ($1, $2, $3) \
         ON CONFLICT (room, epoch) DO UPDATE SET state = EXCLUDED.state";
    prune_states = "DELETE FROM room_states WHERE room = $1 AND epoch <= $2";
    /// Where removed members' reading ends, one row per (room, user), the newest removal.
    upsert_removals = "INSERT INTO removals (room, \"user\", seq, epoch) \
         SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::int8[]) \
         ON CONFLICT (room, \"user\") DO UPDATE SET seq = EXCLUDED.seq, epoch = EXCLUDED.epoch";
    /// Members added back read like any member.
    delete_removals = "DELETE FROM removals AS r USING unnest($1::int8[], $2::bytea[]) AS a(room, u) \
         WHERE r.room = a.room AND r.\"user\" = a.u";
    notify = "SELECT pg_notify($1, $2)";
    /// The per-user transaction lock under which room and key counts are checked.
    advisory_lock = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)";
    create_check = "SELECT EXISTS (SELECT 1 FROM rooms WHERE name = $1), \
         (SELECT count(*) FROM rooms WHERE created_by = $2)";
    create_insert = "WITH r AS (INSERT INTO rooms (name, mode, public, created_by, created_at, epoch, head, \
         state_version, state, members, admins) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $9) \
         ON CONFLICT (name) DO NOTHING RETURNING id, epoch, state) \
         INSERT INTO room_states (room, epoch, state) SELECT id, epoch, state FROM r RETURNING room";
    heads_ensure = "INSERT INTO mailbox_heads (owner, last_seq) SELECT o, 0 FROM unnest($1::bytea[]) AS o \
         ON CONFLICT (owner) DO NOTHING";
    heads_lock = "SELECT owner, last_seq FROM mailbox_heads WHERE owner = ANY($1::bytea[]) ORDER BY owner \
         FOR UPDATE";
    mail_live = "SELECT c.live, c.mine FROM unnest($1::bytea[], $2::bytea[], $3::int8[]) WITH ORDINALITY \
         AS d(owner, sender, ts, i) CROSS JOIN LATERAL (SELECT count(*) AS live, \
         count(*) FILTER (WHERE m.sender = d.sender) AS mine FROM mailbox m \
         WHERE m.owner = d.owner AND m.expires_at > d.ts) c ORDER BY d.i";
    mail_insert = "INSERT INTO mailbox (owner, seq, sender, ts, expires_at, body) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::int8[], $5::int8[], $6::bytea[])";
    heads_set = "UPDATE mailbox_heads AS h SET last_seq = u.last_seq \
         FROM unnest($1::bytea[], $2::int8[]) AS u(owner, last_seq) WHERE h.owner = u.owner";
    mail_ack = "DELETE FROM mailbox WHERE owner = $1 AND seq <= $2";
    mail_purge = "DELETE FROM mailbox WHERE expires_at <= $1";
    key_counts = KEY_COUNTS_SQL;
    key_delete_lr = "DELETE FROM key_items WHERE owner = $1 AND last_resort AND kind = ANY($2::text[])";
    key_insert = "INSERT INTO key_items (owner, kind, last_resort, data) \
         SELECT $1::bytea, k, lr, d FROM unnest($2::text[], $3::bool[], $4::bytea[]) AS u(k, lr, d)";
    /// A one-time key handed out once (`SKIP LOCKED`), else the last-resort one, kept.
    claim = "WITH one AS (DELETE FROM key_items WHERE id = (SELECT id FROM key_items \
         WHERE owner = $1 AND kind = $2 AND NOT last_resort ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING data) \
         SELECT data, false FROM one \
         UNION ALL SELECT data, true FROM key_items WHERE owner = $1 AND kind = $2 AND last_resort \
         AND NOT EXISTS (SELECT 1 FROM one)";
}
