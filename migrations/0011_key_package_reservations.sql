-- A claim reserves, an add consumes: a claimed regular package is held for its claimer
-- until reserved_until, and marked consumed only by the add commit that uses it (or by
-- consume_key_package). An adder who loses a commit race releases its packages, or lets
-- the reservation run out, and they are claimable again instead of wasted. Packages a
-- claim consumed before this migration stay consumed.
-- depends: 0010_key_packages_of_devices

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- Who holds a claimed, unconsumed package, and until when. Both or neither; never a
-- last-resort package (it serves every claim and is never held). The columns are new
-- and empty, so the checks hold on every row without a scan worth deferring.
ALTER TABLE key_packages
ADD COLUMN reserved_by_did did,
ADD COLUMN reserved_until timestamptz,
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT key_packages_reservation_whole
CHECK ((reserved_by_did IS NULL) = (reserved_until IS NULL)),
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT key_packages_last_resort_never_reserved
CHECK (NOT (is_last_resort AND reserved_by_did IS NOT NULL));

-- The view gains the reservation at its end (CREATE OR REPLACE VIEW may only append), so
-- the application role's rights on it stay as they were.
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
    k.device_id,
    k.reserved_by_did,
    k.reserved_until
FROM key_packages AS k;
