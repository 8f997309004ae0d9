-- A PN GW's delivery routes (docs/services.md, "Delivery"): each session it relays, as the
-- server told it (its PN, its source, its targets, its size and chunk size), kept so that a
-- restarted PN GW relays the session again when its PNEs resume it. A row goes when every
-- target's part ended.
CREATE TABLE local_delivery_routes (
    session  BLOB    NOT NULL PRIMARY KEY CHECK (length(session) = 16),
    pn_id    BLOB    NOT NULL CHECK (length(pn_id) = 16),
    source   TEXT    NOT NULL,
    targets  TEXT    NOT NULL,
    size     INTEGER NOT NULL CHECK (size >= 0),
    chunk    INTEGER NOT NULL CHECK (chunk > 0)
) STRICT, WITHOUT ROWID;
