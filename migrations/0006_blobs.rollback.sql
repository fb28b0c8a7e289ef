DROP TABLE blob_usage;
DROP TABLE blobs;
DROP FUNCTION blobs_give_back_bytes();
