-- `catbird-db seed` (catbird_db/tools/seed.py): a realistic data set for plans and benchmarks.
-- The loads are binary COPY, written `WITH BINARY`: PostgreSQL still accepts that older
-- spelling, and sqlfluff cannot parse `(FORMAT binary)`.

-- name: seed_target_has_rows
-- Whether the database holds data already: `catbird-db seed` fills only an empty
-- schema, so it never mixes made-up rows into real ones.
SELECT (
    EXISTS (SELECT 1 FROM conversations)
    OR EXISTS (SELECT 1 FROM key_packages)
    OR EXISTS (SELECT 1 FROM blobs)
    OR EXISTS (SELECT 1 FROM blob_usage)
    OR EXISTS (SELECT 1 FROM devices)
) AS has_rows;

-- name: copy_conversations
-- Loads seeded conversations (binary COPY; seed.py gives the column types).
COPY conversations (
    id, creator_did, cipher_suite, epoch, last_seq, title, created_at, updated_at
) FROM STDIN WITH BINARY;

-- name: copy_members
-- Loads seeded memberships.
COPY members (
    convo_id, member_did, role, joined_at, left_at, joined_seq, last_read_seq
) FROM STDIN WITH BINARY;

-- name: copy_messages
-- Loads seeded messages and commits.
COPY messages (
    convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at, expires_at
) FROM STDIN WITH BINARY;

-- name: copy_key_packages
-- Loads seeded key packages; their ids come from the identity, in load order.
COPY key_packages (
    owner_did,
    cipher_suite,
    key_data,
    key_package_ref,
    is_last_resort,
    created_at,
    expires_at,
    consumed_at,
    consumed_by_did,
    used_at,
    used_in_convo,
    use_count,
    device_id
) FROM STDIN WITH BINARY;

-- name: copy_welcomes
-- Loads seeded welcomes.
COPY welcomes (
    convo_id,
    id,
    recipient_did,
    key_package_ref,
    welcome_data,
    created_at,
    consumed_at,
    recipient_device_id,
    expires_at,
    withdrawn_at
) FROM STDIN WITH BINARY;

-- name: copy_blobs
-- Loads seeded blobs.
COPY blobs (cid, uploader_did, convo_id, size, mime_type, created_at, data)
FROM STDIN WITH BINARY;

-- name: copy_blob_usage
-- Loads what each seeded uploader's blobs take.
COPY blob_usage (owner_did, used_bytes, quota_bytes) FROM STDIN WITH BINARY;

-- name: copy_devices
-- Loads the seeded users' devices.
COPY devices (owner_did, id, signature_key, registered_at, revoked_at) FROM STDIN WITH BINARY;

-- name: copy_member_devices
-- Loads the seeded members' devices in their groups.
COPY member_devices (convo_id, member_did, device_id, joined_seq, joined_at, left_at)
FROM STDIN WITH BINARY;

-- name: vacuum_analyze_seeded
-- After a seed: statistics for the planner, and the visibility map that autovacuum
-- would have set on a production table (index-only scans are costed by it).
VACUUM (ANALYZE)
conversations, members, messages, key_packages, welcomes, blobs, blob_usage, devices,
member_devices;
