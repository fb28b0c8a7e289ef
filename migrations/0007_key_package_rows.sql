-- key_package_rows: a key package as the layer hands it out, its columns named once.
-- Every statement that returns key packages reads, inserts or updates through this view
-- (a simple view is updatable, and the planner reads key_packages and its indexes
-- directly), so the list of columns an application sees is written here alone. The
-- columns that record a package's use by an add (use_count, used_at, used_in_convo) are
-- the add's bookkeeping and stay out of it.
-- depends: 0004_key_packages

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

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
