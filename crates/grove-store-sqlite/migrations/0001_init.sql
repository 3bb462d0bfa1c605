-- grove-store-sqlite schema, version 1.
--
-- Integers that are u64 in the domain types (epoch, head, state_version, seq) are stored as
-- SQLite INTEGER (i64). Sequence numbers and heads are assigned by the store and stay far below
-- 2^63; epochs and state versions are stored bit-for-bit (`u64 as i64`) and read back the same.

-- Rooms, with the per-room log head, epoch and compare-and-set state version. `members` and
-- `admins` are concatenated 32-byte Ed25519 public keys.
CREATE TABLE rooms (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    mode          TEXT    NOT NULL,
    public        INTEGER NOT NULL,
    created_by    BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    head          INTEGER NOT NULL,
    state_version INTEGER NOT NULL,
    state         BLOB    NOT NULL,
    members       BLOB    NOT NULL,
    admins        BLOB    NOT NULL
);
CREATE INDEX rooms_by_creator ON rooms (created_by);
CREATE INDEX rooms_public_by_name ON rooms (name) WHERE public = 1;

-- Room logs: an append-only rowid table; (room, seq) is unique and is the read path.
CREATE TABLE entries (
    room   INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    epoch  INTEGER NOT NULL,
    sender BLOB    NOT NULL,
    ts     INTEGER NOT NULL,
    body   BLOB    NOT NULL
);
CREATE UNIQUE INDEX entries_room_seq ON entries (room, seq);

-- Mailboxes. `mailbox_heads` remembers the last sequence number handed out per owner, so that
-- numbers are never reused even after every message was acknowledged or purged.
CREATE TABLE mailbox (
    owner      BLOB    NOT NULL,
    seq        INTEGER NOT NULL,
    sender     BLOB    NOT NULL,
    ts         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    body       BLOB    NOT NULL,
    PRIMARY KEY (owner, seq)
);
CREATE INDEX mailbox_by_expiry ON mailbox (expires_at);

CREATE TABLE mailbox_heads (
    owner    BLOB    PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

-- The key directory: one-time items are deleted when claimed; at most one last-resort item per
-- (owner, kind), replaced on publish, never deleted by a claim.
CREATE TABLE key_items (
    id          INTEGER PRIMARY KEY,
    owner       BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    last_resort INTEGER NOT NULL,
    data        BLOB    NOT NULL
);
CREATE INDEX key_items_by_owner ON key_items (owner, kind, last_resort);
