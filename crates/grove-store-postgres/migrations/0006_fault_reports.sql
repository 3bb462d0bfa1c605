-- grove-store-postgres schema, version 5: members' fault reports of MLS commits (grove-server
-- `rooms::fault`), kept across restarts and shared by the instances: per room, per reported
-- commit and reporter, the membership key the reporter revealed if any; and per room and
-- member, its false reports.
CREATE TABLE fault_reports (
    room           bigint NOT NULL,
    seq            bigint NOT NULL,
    reporter       bytea  NOT NULL,
    membership_key bytea,
    PRIMARY KEY (room, seq, reporter)
);

CREATE TABLE false_reports (
    room     bigint NOT NULL,
    reporter bytea  NOT NULL,
    count    bigint NOT NULL,
    PRIMARY KEY (room, reporter)
);
