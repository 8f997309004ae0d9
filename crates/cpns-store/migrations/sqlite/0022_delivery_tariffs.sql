-- A delivery's tariff (docs/services.md, "Charging from delivery"): the units per started MB of
-- its service when the session was set up, none when the service is not chargeable. A target's
-- part that ends delivered writes its charging record (charging_records) in the same
-- transaction, whatever the device reports of its usage.
ALTER TABLE delivery_records ADD COLUMN per_mb INTEGER CHECK (per_mb IS NULL OR per_mb >= 0);
