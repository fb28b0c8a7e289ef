-- Back to key packages of a DID alone. The view is made anew without the device (a view
-- cannot lose a column in place): run `catbird-db grant` again for the application role.
DROP VIEW key_package_rows;

CREATE VIEW key_package_rows AS
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
    k.consumed_by_did
FROM key_packages AS k;

DROP INDEX key_packages_available;

CREATE INDEX key_packages_available
ON key_packages (owner_did, cipher_suite, is_last_resort, created_at, id)
WHERE consumed_at IS NULL;

ALTER TABLE key_packages DROP COLUMN device_id;

-- The devices the upgrade made for the data it carried over.
DELETE FROM devices AS d
WHERE d.id = legacy_device_id(d.owner_did);

DROP FUNCTION legacy_device_id(text);
