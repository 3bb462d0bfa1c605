-- grove-store-sqlite schema, version 3: metadata of encrypted attachments (the bytes live in
-- the server's object store). One row per blob; `received` counts the bytes stored so far.
CREATE TABLE files (
    blob       BLOB    NOT NULL PRIMARY KEY,
    room       INTEGER NOT NULL,
    owner      BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    part_bytes INTEGER NOT NULL,
    received   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX files_by_owner ON files (owner);
CREATE INDEX files_by_room ON files (room);
CREATE INDEX files_by_expiry ON files (expires_at, blob);
