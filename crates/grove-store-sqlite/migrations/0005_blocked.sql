-- grove-store-sqlite schema, version 4: keys the operator blocked (`grove admin block`).
CREATE TABLE blocked (
    owner BLOB    NOT NULL PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;
