-- Multi-user PNs (001 §5.2.1.1 step 10; docs/pn-lifecycle.md, "Multi-user PNs"): a member of
-- another user's PN records its own user, confirmed by that user's PN GW, so its use is charged
-- to it. NULL for the PN owner's own PNEs.
ALTER TABLE pn_members ADD COLUMN owner TEXT;
