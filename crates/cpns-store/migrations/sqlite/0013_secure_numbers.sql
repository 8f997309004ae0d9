-- Each secure call once (docs/security.md §4.8, "Each call once"). On the server, the replay
-- window of a member's secure session, kept with its SK_PNE and started again when a
-- registration replaces it: `secure_top` the highest Secure Request number taken, `secure_seen`
-- the 64-bit map of the numbers ending at it (bit i: top - i), both u64 stored as their i64 bit
-- pattern. On a PNE, the last number it gave a Secure Request under its SK_PNE of a PN.
ALTER TABLE pn_members ADD COLUMN secure_top INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pn_members ADD COLUMN secure_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE local_pns ADD COLUMN secure_seq INTEGER NOT NULL DEFAULT 0;
