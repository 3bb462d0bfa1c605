-- grove-store-postgres schema, version 3: keys the operator blocked (`grove admin block`).
CREATE TABLE blocked (
    owner  bytea  PRIMARY KEY,
    since  bigint NOT NULL
);
