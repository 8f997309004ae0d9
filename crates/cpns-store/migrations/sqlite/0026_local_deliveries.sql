-- A PNE's delivery sessions, kept so that a PNE restarted midway goes on with them
-- (docs/services.md, "A restarted PNE"): each session it sends or receives, with its key sealed
-- under the device's storage key (docs/security.md §4.9), what the session is (a source's grant,
-- a target's invitation, each in CBOR without its key) and, for a source, the files it sends
-- (CBOR: [[path, size], ...]).
-- A row goes when the PNE's part of the session ended.
CREATE TABLE local_deliveries (
    session     BLOB    NOT NULL PRIMARY KEY CHECK (length(session) = 16),
    as_source   INTEGER NOT NULL CHECK (as_source IN (0, 1)),
    sealed_key  BLOB    NOT NULL,
    description BLOB    NOT NULL,
    files       BLOB    NOT NULL,
    stored_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
