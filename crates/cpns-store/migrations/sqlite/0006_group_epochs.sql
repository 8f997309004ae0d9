-- A PN's group key epochs (docs/pn-lifecycle.md, "Group key epochs"; docs/security.md §4.10).
--
-- * `pns`: the current epoch and its group key sealed at rest under K_rest. NULL in both until
--   the first membership change gives the PN a group key; the two are set together.
-- * `local_pns`: what a PNE keeps of the PN: its own SK_PNE for the PN (agreed at establishment
--   or registration) and the current epoch's group key, both sealed under the device's own
--   storage key (§4.9). A PN GW keeps neither (it holds no copy it could open).
ALTER TABLE pns ADD COLUMN epoch INTEGER CHECK (epoch >= 0);
ALTER TABLE pns ADD COLUMN sealed_group_key BLOB;
ALTER TABLE local_pns ADD COLUMN sealed_session_key BLOB;
ALTER TABLE local_pns ADD COLUMN epoch INTEGER CHECK (epoch >= 0);
ALTER TABLE local_pns ADD COLUMN sealed_group_key BLOB;
