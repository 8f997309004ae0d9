-- A PN's lifetime and member limit (beyond the documents; docs/pn-lifecycle.md, "Lifetime and
-- member limit"): when it expires (milliseconds since the Unix epoch) and the most members it
-- may have. NULL: no limit.
ALTER TABLE pns ADD COLUMN expires_at INTEGER;
ALTER TABLE pns ADD COLUMN max_members INTEGER CHECK (max_members > 0);

-- The PN GW keeps when each of its PNs expires, to release it then (and after a restart).
ALTER TABLE local_pns ADD COLUMN expires_at INTEGER;
