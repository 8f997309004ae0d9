-- Forwarding between two PNs of one PN GW (docs/services.md, "Forwarding between PNs"): the PN
-- a kept route's targets are members of, when it is not the route's own PN. NULL: its own.
ALTER TABLE local_delivery_routes ADD COLUMN to_pn BLOB CHECK (to_pn IS NULL OR length(to_pn) = 16);
