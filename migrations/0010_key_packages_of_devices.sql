-- Key packages belong to a device: each is published by one device of its owner, and a
-- claim hands out one device's package. The data already stored is carried over: every
-- DID found in members, key packages and welcomes gets one device, its id derived from
-- the DID (legacy_device_id), registered when the DID was first seen, and every
-- existing key package is assigned to its owner's device.
-- depends: 0005_welcomes 0007_key_package_rows 0009_devices

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- The device a DID's rows from before devices are assigned to: the first 16 bytes of
-- SHA-256 over a fixed prefix and the DID, as a UUID. catbird_db.devices.legacy_device_id
-- computes the same in Python, for a client that has not registered a device of its own.
CREATE FUNCTION legacy_device_id(owner_did text)
RETURNS uuid
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
AS $$
    SELECT encode(
        substring(sha256(convert_to('catbird-db legacy device ' || owner_did, 'UTF8')) FROM 1 FOR 16),
        'hex'
    )::uuid
$$;

INSERT INTO devices (owner_did, id, registered_at)
SELECT
    seen.did AS owner_did,
    legacy_device_id(seen.did) AS id,
    min(seen.seen_at) AS registered_at
FROM (
    SELECT
        m.member_did AS did,
        m.joined_at AS seen_at
    FROM members AS m
    UNION ALL
    SELECT
        k.owner_did,
        k.created_at
    FROM key_packages AS k
    UNION ALL
    SELECT
        w.recipient_did,
        w.created_at
    FROM welcomes AS w
) AS seen
GROUP BY seen.did
ON CONFLICT DO NOTHING;

-- The publishing device. Filled, then NOT NULL: the table is locked for this migration's
-- transaction either way (ADD COLUMN and the UPDATE), and a key package without its
-- device would be claimable by no per-device claim.
ALTER TABLE key_packages ADD COLUMN device_id uuid;

UPDATE key_packages SET device_id = legacy_device_id(owner_did);

-- squawk-ignore adding-not-nullable-field
ALTER TABLE key_packages ALTER COLUMN device_id SET NOT NULL;

-- A package's device is its owner's. Devices are never deleted, so no ON DELETE.
-- Validated at once: the key packages are locked for this transaction already, and every
-- row was assigned its owner's device just above.
-- squawk-ignore constraint-missing-not-valid, adding-foreign-key-constraint
ALTER TABLE key_packages ADD CONSTRAINT key_packages_device_fkey
FOREIGN KEY (owner_did, device_id) REFERENCES devices (owner_did, id);

-- claim_key_package, claim_key_packages, get_key_package, count_key_packages and the
-- per-device cap of publishing: one device's unconsumed packages of one suite, regular
-- ones oldest first, last-resort ones newest first. The owner leads, so a user's
-- packages (count_key_packages) are one range too. Neither the drop nor the build can
-- be CONCURRENTLY inside the migration's transaction; the table is locked by the UPDATE
-- above anyway.
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX key_packages_available;

-- squawk-ignore require-concurrent-index-creation
CREATE INDEX key_packages_available
ON key_packages (owner_did, device_id, cipher_suite, is_last_resort, created_at, id)
WHERE consumed_at IS NULL;

-- The view gains the device at its end (CREATE OR REPLACE VIEW may only append), so the
-- application role's rights on it stay as they were.
CREATE OR REPLACE VIEW key_package_rows AS
SELECT
    k.id,
    k.owner_did,
    k.cipher_suite,
    k.key_data,
    k.key_package_ref,
    k.is_last_resort,
    k.created_at,
    k.expires_at,
    k.consumed_at,
    k.consumed_by_did,
    k.device_id
FROM key_packages AS k;
