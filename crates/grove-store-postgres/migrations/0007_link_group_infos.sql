-- grove-store-postgres schema, version 7: the room's GroupInfo sealed for its invite link's
-- holders (MLS link joins by external commit), under a key the server cannot derive.
CREATE TABLE link_group_infos (
    room        bigint PRIMARY KEY,
    token_hash  bytea  NOT NULL,
    epoch       bigint NOT NULL,
    sealed      bytea  NOT NULL
);
