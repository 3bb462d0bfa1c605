-- grove-store-sqlite schema, version 6: invite links (the hash of the link's token only) and
-- join requests waiting for an admin's client.
CREATE TABLE room_links (
    room        INTEGER NOT NULL PRIMARY KEY,
    token_hash  BLOB    NOT NULL,
    max_uses    INTEGER,
    uses        INTEGER NOT NULL,
    expires_at  INTEGER,
    created_by  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE join_requests (
    room  INTEGER NOT NULL,
    user  BLOB    NOT NULL,
    home  TEXT    NOT NULL,
    proof BLOB    NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
