-- A PNE's secure session with the server (003 §1.4.1 step 4): its CPNS ID and the SK_PNE of its
-- registration, sealed under the device's own storage key (docs/security.md §4.9). One row: a
-- newer registration replaces it.
CREATE TABLE local_session (
    id                 INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    cpns_id            TEXT    NOT NULL,
    pn_id              BLOB    NOT NULL CHECK (length(pn_id) = 16),
    sealed_session_key BLOB    NOT NULL,
    lifetime_s         INTEGER NOT NULL,
    stored_at          INTEGER NOT NULL
) STRICT;
