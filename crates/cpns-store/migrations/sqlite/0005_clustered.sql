-- Fewer B-trees per write, and writes that append (docs/ARCHITECTURE.md decision 24).
--
-- Schema 1 gave `pns`, `pn_members` and `replays` a non-integer primary key, so each was a rowid
-- table plus an automatic index for that key, and `pns` and `pn_members` had one more index
-- each: registering a PN with two members and keeping its answer touched ten B-trees, two of
-- them at a random place (PN ids and request ids are random). Every B-tree touched is at least
-- one page written to the WAL and copied back at the checkpoint, in every commit.
--
-- Now:
-- * `pns` is keyed by `seq` (a rowid alias): a new PN is appended; `pn_id` has its own index.
-- * `pn_members` is a WITHOUT ROWID table keyed by (pn_seq, pne_id): a PN's members sit
--   together, after the newest PN's. `position` still orders them within their PN. The index
--   on `pne_id` alone, which no query used, is gone.
-- * `replays` rows are appended in the order they are kept (a kept answer that is replaced is
--   removed and appended again), so the oldest are first in rowid order and are purged from
--   the front without an index on their age; only the small (sender, request id) index entry
--   goes to a random place. Keeping the rows themselves in that index instead (WITHOUT ROWID)
--   was measured: the random leaves holding whole answers made every checkpoint copy more pages.
-- A PN with two members and its answer now touch six B-trees.

CREATE TABLE pns_v5 (
    seq        INTEGER NOT NULL PRIMARY KEY,
    pn_id      BLOB    NOT NULL UNIQUE CHECK (length(pn_id) = 16),
    gateway    TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

INSERT INTO pns_v5 (seq, pn_id, gateway, owner, state, created_at)
    SELECT seq, pn_id, gateway, owner, state, created_at FROM pns;

CREATE TABLE pn_members_v5 (
    pn_seq             INTEGER NOT NULL REFERENCES pns_v5 (seq) ON DELETE CASCADE,
    pne_id             TEXT    NOT NULL,
    position           INTEGER NOT NULL,
    initiator          INTEGER NOT NULL CHECK (initiator IN (0, 1)),
    authenticated      INTEGER NOT NULL CHECK (authenticated IN (0, 1)),
    capabilities       BLOB,
    sealed_session_key BLOB,
    joined_at          INTEGER NOT NULL,
    contents           BLOB,
    PRIMARY KEY (pn_seq, pne_id)
) STRICT, WITHOUT ROWID;

INSERT INTO pn_members_v5 (pn_seq, pne_id, position, initiator, authenticated, capabilities,
                           sealed_session_key, joined_at, contents)
    SELECT p.seq, m.pne_id, m.position, m.initiator, m.authenticated, m.capabilities,
           m.sealed_session_key, m.joined_at, m.contents
    FROM pn_members AS m JOIN pns AS p ON p.pn_id = m.pn_id;

DROP TABLE pn_members;
DROP TABLE pns;
ALTER TABLE pns_v5 RENAME TO pns;
ALTER TABLE pn_members_v5 RENAME TO pn_members;

-- The rowid (`seq`) ends every index entry, so this index lists a gateway's PNs in creation
-- order.
CREATE INDEX pns_gateway ON pns (gateway);

CREATE TABLE replays_v5 (
    sender     TEXT    NOT NULL,
    request_id INTEGER NOT NULL,
    answer     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

INSERT INTO replays_v5 (sender, request_id, answer, created_at)
    SELECT sender, request_id, answer, created_at FROM replays ORDER BY created_at;

DROP TABLE replays;
ALTER TABLE replays_v5 RENAME TO replays;

CREATE UNIQUE INDEX replays_key ON replays (sender, request_id);
