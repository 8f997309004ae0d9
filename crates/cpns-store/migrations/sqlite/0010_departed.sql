-- Members that left a PN, were removed from it, or whose PN was released (docs/pn-lifecycle.md,
-- "Membership that ended while away"): the SK_PNE they held in it, sealed at rest as in
-- `pn_members`, so the server can tell such a PNE, sealed end to end, that its membership
-- ended, when it comes back and asks. A PNE entering the PN again removes its row.
CREATE TABLE departed (
    pn_id              BLOB    NOT NULL CHECK (length(pn_id) = 16),
    pne_id             TEXT    NOT NULL,
    sealed_session_key BLOB    NOT NULL,
    reason             TEXT    NOT NULL,
    departed_at        INTEGER NOT NULL,
    PRIMARY KEY (pn_id, pne_id)
) STRICT, WITHOUT ROWID;
