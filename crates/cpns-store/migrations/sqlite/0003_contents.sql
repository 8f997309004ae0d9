-- Contents a PNE announced in its PN Setup Request (000 §6.6.1.1 step 1, "optionally, contents
-- information which the device has"), kept with the member on the server and on the PN GW as
-- the CBOR of a list of content items.
ALTER TABLE pn_members ADD COLUMN contents BLOB;
ALTER TABLE local_members ADD COLUMN contents BLOB;
