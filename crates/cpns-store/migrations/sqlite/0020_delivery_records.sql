-- Delivery records (004 §5.5.8; docs/services.md, "Delivery"): what the server set up and saw
-- delivered, one row per session and target: the service it was delivered as, its source, the
-- PN whose PN GW relayed it, the user charged (the target's), the content's name and size, the
-- bytes the target said it received, when it started and ended, and how. They are the
-- operator's charging basis for chargeable services, whatever a device reports of its usage.
CREATE TABLE delivery_records (
    session     BLOB    NOT NULL CHECK (length(session) = 16),
    target      TEXT    NOT NULL,
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
    PRIMARY KEY (session, target)
) STRICT, WITHOUT ROWID;
CREATE INDEX delivery_records_by_user ON delivery_records (charged, started_at);
