-- grove-store-postgres schema, version 5: invite links (the hash of the link's token only) and
-- join requests waiting for an admin's client.
CREATE TABLE room_links (
    room        bigint PRIMARY KEY,
    token_hash  bytea  NOT NULL,
    max_uses    bigint,
    uses        bigint NOT NULL,
    expires_at  bigint,
    created_by  bytea  NOT NULL,
    created_at  bigint NOT NULL
);
CREATE TABLE join_requests (
    room  bigint NOT NULL,
    "user" bytea NOT NULL,
    home  text   NOT NULL,
    proof bytea  NOT NULL,
    at    bigint NOT NULL,
    PRIMARY KEY (room, "user")
);
