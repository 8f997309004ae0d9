-- The CPNS store, SQLite schema 1: the server's inventory of record (users, enrolled entities,
-- PNs and their members, CPNS id allocation) and a device's local PN inventory (docs/design.md §5).
--
-- Tables are STRICT so a column only ever holds its declared type. Enumerations (entity kind,
-- PN state) are deliberately not CHECK-constrained: a later version may add values without
-- rebuilding the table, and the reader reports an unknown value as a corrupt row.
-- Times are milliseconds since the Unix epoch. PN ids are their 16 raw bytes.

CREATE TABLE users (
    id         TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
) STRICT;

CREATE TABLE entities (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    owner        TEXT    NOT NULL REFERENCES users (id),
    sealed_eukey BLOB    NOT NULL,
    capabilities BLOB,
    status       TEXT,
    cpns_id      TEXT UNIQUE,
    enrolled_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX entities_owner ON entities (owner);

-- The last CPNS id number handed out (003 §1.4.1 step 3); numbers are never reused.
CREATE TABLE cpns_id_seq (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;

INSERT INTO cpns_id_seq (id, last) VALUES (1, 0);

-- `seq` orders PNs by first registration; a retried registration keeps it.
CREATE TABLE pns (
    pn_id      BLOB    NOT NULL PRIMARY KEY CHECK (length(pn_id) = 16),
    gateway    TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    seq        INTEGER NOT NULL UNIQUE
) STRICT;

CREATE INDEX pns_gateway ON pns (gateway, seq);

-- `position` orders a PN's members as they were added.
CREATE TABLE pn_members (
    pn_id              BLOB    NOT NULL REFERENCES pns (pn_id) ON DELETE CASCADE,
    pne_id             TEXT    NOT NULL,
    position           INTEGER NOT NULL,
    initiator          INTEGER NOT NULL CHECK (initiator IN (0, 1)),
    authenticated      INTEGER NOT NULL CHECK (authenticated IN (0, 1)),
    capabilities       BLOB,
    sealed_session_key BLOB,
    joined_at          INTEGER NOT NULL,
    PRIMARY KEY (pn_id, pne_id)
) STRICT;

CREATE INDEX pn_members_pne ON pn_members (pne_id);

-- A device's (PN GW's or PNE's) own local PN inventory (000 §6.6.1.1 steps 13-15).
CREATE TABLE local_pns (
    pn_id     BLOB    NOT NULL PRIMARY KEY CHECK (length(pn_id) = 16),
    gateway   TEXT    NOT NULL,
    stored_at INTEGER NOT NULL,
    seq       INTEGER NOT NULL UNIQUE
) STRICT;

CREATE TABLE local_members (
    pn_id            BLOB    NOT NULL REFERENCES local_pns (pn_id) ON DELETE CASCADE,
    pne_id           TEXT    NOT NULL,
    position         INTEGER NOT NULL,
    capabilities     BLOB,
    sealed_local_key BLOB,
    route            TEXT,
    PRIMARY KEY (pn_id, pne_id)
) STRICT;
