-- grove-store-sqlite schema, version 8: each recorded part's SHA-256, written in the same
-- transaction that moves its blob's `received`. A second request for a part already recorded
-- is taken (as held) only with the same hash: with several writers, the part a blob holds is
-- the one the database recorded. Parts recorded before this version have no row.
CREATE TABLE file_parts (
    blob   BLOB    NOT NULL,
    at     INTEGER NOT NULL,
    sha256 BLOB    NOT NULL,
    PRIMARY KEY (blob, at)
) WITHOUT ROWID;
