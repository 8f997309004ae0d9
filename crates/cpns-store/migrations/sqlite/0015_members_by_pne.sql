-- The PNs an entity is a member of, found without reading every member (004 §5.5.5: a
-- directory request sees the PN-scoped entries of the PNs its asker is an authenticated member
-- of, once per request). Schema 5 dropped an index on `pne_id` that no query used then; this
-- one leads with it and ends with the PN, so the lookup reads the index alone. It costs one
-- more B-tree entry per member written.
CREATE INDEX pn_members_by_pne ON pn_members (pne_id, authenticated, pn_seq);
