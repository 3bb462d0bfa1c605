-- grove-store-postgres schema, version 3: where each removed member's reading of a room's log
-- ends (the entry that removed it, and the epoch that entry led to). Written in the transaction
-- of the entry that removes the member, under the room row's lock; deleted by the entry that
-- adds it back. Members removed before this version have no row: the server refuses them as
-- it did then.
CREATE TABLE removals (
    room  bigint NOT NULL,
    "user" bytea NOT NULL,
    seq   bigint NOT NULL,
    epoch bigint NOT NULL,
    PRIMARY KEY (room, "user")
);
