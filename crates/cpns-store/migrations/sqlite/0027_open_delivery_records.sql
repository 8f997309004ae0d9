-- The delivery records still open, by when they started: what the server's sweep of records
-- whose target never ended them reads (docs/services.md, "A target gone for good").
CREATE INDEX delivery_records_open ON delivery_records (started_at) WHERE ended_at IS NULL;
