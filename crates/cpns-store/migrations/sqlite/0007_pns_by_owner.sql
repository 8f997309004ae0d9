-- A user's PNs by owner (004 §5.5.10: a PNE reads the PNs of its own user; docs/pn-lifecycle.md,
-- "Inventory queries"). One index on `pns`, written once per PN.
CREATE INDEX pns_owner ON pns (owner);
