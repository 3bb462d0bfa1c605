-- grove-store-postgres schema, version 2: metadata of encrypted attachments (the bytes live in
-- the servers' shared object store). One row per blob; `received` counts the bytes stored so
-- far and moves only by compare-and-set. Quotas are checked under advisory transaction locks
-- per uploader and per room.
CREATE TABLE files (
    blob       bytea  PRIMARY KEY,
    room       bigint NOT NULL,
    owner      bytea  NOT NULL,
    size       bigint NOT NULL,
    part_bytes bigint NOT NULL,
    received   bigint NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX files_by_owner ON files (owner);
CREATE INDEX files_by_room ON files (room);
CREATE INDEX files_by_expiry ON files (expires_at, blob);
