-- grove-store-sqlite schema, version 2: the public state of each room as of each of its
-- recent epochs (the last write for that epoch), so a joiner whose Welcome is for an older
-- epoch can still fetch the matching ratchet tree. Pruned to the last STATE_HISTORY epochs.
CREATE TABLE room_states (
    room  INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    state BLOB    NOT NULL,
    PRIMARY KEY (room, epoch)
) WITHOUT ROWID;
INSERT INTO room_states (room, epoch, state) SELECT id, epoch, state FROM rooms;
