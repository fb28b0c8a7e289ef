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

-- claimable_key_packages: the packages a claim may hand out now, the rule written once:
-- unconsumed, unexpired, and, for a regular one, held by nobody (no reservation, or one
-- that has run out; a last-resort package is never held). The claims and the peek read
-- through it. A simple view over a simple view: the planner reads key_packages and its
-- indexes directly, and a claim's FOR UPDATE SKIP LOCKED locks the key_packages rows,
-- re-checking these conditions on their newest versions.
CREATE VIEW claimable_key_packages AS
SELECT k.*
FROM key_package_rows AS k
WHERE
    k.consumed_at IS NULL
    AND k.expires_at > now()
    AND (k.is_last_resort OR k.reserved_until IS NULL OR k.reserved_until <= now());
