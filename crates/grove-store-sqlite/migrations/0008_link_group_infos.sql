-- grove-store-sqlite schema, version 8: the room's GroupInfo sealed for its invite link's
-- holders (MLS link joins by external commit), under a key the server cannot derive.
CREATE TABLE link_group_infos (
    room        INTEGER NOT NULL PRIMARY KEY,
    token_hash  BLOB    NOT NULL,
    epoch       INTEGER NOT NULL,
    sealed      BLOB    NOT NULL
);
