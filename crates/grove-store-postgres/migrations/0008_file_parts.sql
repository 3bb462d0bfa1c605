-- grove-store-postgres schema, version 7: each recorded part's SHA-256, inserted by the same
-- statement that moves its blob's `received` (compare-and-set). A second request for a part
-- already recorded is taken (as held) only with the same hash, so of two instances receiving
-- one part at once, the part a blob holds is the one the database recorded. Parts recorded
-- before this version have no row. The rows go with their blob.
CREATE TABLE file_parts (
    blob   bytea  NOT NULL REFERENCES files (blob) ON DELETE CASCADE,
    at     bigint NOT NULL,
    sha256 bytea  NOT NULL,
    PRIMARY KEY (blob, at)
);
