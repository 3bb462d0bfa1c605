-- grove-store-sqlite schema, version 6: members' fault reports of MLS commits (grove-server
-- `rooms::fault`), kept across restarts: per room, per reported commit and reporter, the
-- membership key the reporter revealed if any; and per room and member, its false reports.
CREATE TABLE fault_reports (
    room           INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    reporter       BLOB    NOT NULL,
    membership_key BLOB,
    PRIMARY KEY (room, seq, reporter)
) WITHOUT ROWID;

CREATE TABLE false_reports (
    room     INTEGER NOT NULL,
    reporter BLOB    NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (room, reporter)
) WITHOUT ROWID;
