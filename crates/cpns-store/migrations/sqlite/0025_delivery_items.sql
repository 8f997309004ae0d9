-- Several services in one delivery session (004 §5.5.8.2, "Supporting single/multiple
-- services"; docs/services.md, "Several services in one session"): a session carries items, one
-- after another, each delivered as its own service with its own name, size, tariff and end. A
-- record is one item's part for one target: `item` is the item's place in the session (0 the
-- first; every session before this schema had only that one).
CREATE TABLE delivery_records_new (
    session     BLOB    NOT NULL CHECK (length(session) = 16),
    target      TEXT    NOT NULL,
    item        INTEGER NOT NULL DEFAULT 0 CHECK (item >= 0),
    service_id  TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    pn_id       BLOB    NOT NULL CHECK (length(pn_id) = 16),
    charged     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    bytes       INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    result      INTEGER,
    per_mb      INTEGER CHECK (per_mb IS NULL OR per_mb >= 0),
    PRIMARY KEY (session, target, item)
) STRICT, WITHOUT ROWID;
INSERT INTO delivery_records_new (session, target, item, service_id, source, pn_id, charged,
    name, size, bytes, started_at, ended_at, result, per_mb)
SELECT session, target, 0, service_id, source, pn_id, charged, name, size, bytes, started_at,
    ended_at, result, per_mb FROM delivery_records;
DROP TABLE delivery_records;
ALTER TABLE delivery_records_new RENAME TO delivery_records;
CREATE INDEX delivery_records_by_user ON delivery_records (charged, started_at);
