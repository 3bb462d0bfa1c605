-- grove-store-sqlite schema, version 4: where each removed member's reading of a room's log
-- ends (the entry that removed it, and the epoch that entry led to). Written with the entry
-- that removes the member; deleted by the entry that adds it back. Members removed before
-- this version have no row: the server refuses them as it did then.
CREATE TABLE removals (
    room  INTEGER NOT NULL,
    user  BLOB    NOT NULL,
    seq   INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
