-- Back to claims that consume at once. The view is made anew without the reservation (a
-- view cannot lose a column in place): run `catbird-db grant` again for the application
-- role. A package still reserved goes back to being claimable.
DROP VIEW claimable_key_packages;

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
    k.consumed_by_did,
    k.device_id
FROM key_packages AS k;

ALTER TABLE key_packages
DROP COLUMN reserved_by_did,
DROP COLUMN reserved_until;
