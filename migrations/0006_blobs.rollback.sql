-- IF EXISTS: a database migrated with an earlier draft of 0006 (no blob_usage, no
-- trigger) can roll back with this file too.
DROP TABLE IF EXISTS blob_usage;
DROP TABLE IF EXISTS blobs;
DROP FUNCTION IF EXISTS blobs_give_back_bytes();
