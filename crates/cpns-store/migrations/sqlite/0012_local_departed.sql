-- A PN GW's LocalEUKey copies of members whose membership ended while they were away (docs/
-- security.md §4.4, "A member that was away"): the PNE proves itself with its key on its next
-- link, so the PN GW relays its PN Key Request and the server's sealed word that the
-- membership ended reaches it. `sealed_local_key` is the stored form of §4.2 (rand_server ‖
-- wrapped, 76 bytes), wrapped under the PN GW's EUKey as it was received. A row goes when the
-- word was relayed, when the PNE is a member again, or when the PN GW keeps too many.
CREATE TABLE local_departed (
    pn_id            BLOB    NOT NULL,
    pne_id           TEXT    NOT NULL,
    sealed_local_key BLOB    NOT NULL,
    departed_at      INTEGER NOT NULL,
    PRIMARY KEY (pn_id, pne_id)
) WITHOUT ROWID;
