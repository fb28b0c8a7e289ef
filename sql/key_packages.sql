-- name: store_key_package
-- Publishes one key package. The expiry is the caller's, else now() plus the default
-- lifetime.
-- Returns: the row, or the stored one when the ref exists already (whoever owns it: the
-- function refuses another owner's); always one row.
-- Locks: only the row it inserts; a taken ref's row is read, not locked (ON CONFLICT DO
-- NOTHING).
-- Index: key_packages_key_package_ref_key (the conflict and the look-up).
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at (NOT NULL columns, read through a view and UNION ALL)
WITH inserted AS (
    -- The new row, unless the ref is taken.
    INSERT INTO key_package_rows (
        owner_did, cipher_suite, key_data, key_package_ref, is_last_resort, expires_at
    )
    VALUES (
        %(actor_did)s,
        %(cipher_suite)s,
        %(key_data)s,
        %(key_package_ref)s,
        %(is_last_resort)s,
        coalesce(%(expires_at)s::timestamptz, now() + %(lifetime_s)s * interval '1 second')
    )
    ON CONFLICT (key_package_ref) DO NOTHING
    RETURNING *
)

SELECT * FROM inserted
UNION ALL
SELECT k.*
FROM key_package_rows AS k
WHERE k.key_package_ref = %(key_package_ref)s AND NOT EXISTS (SELECT 1 FROM inserted);

-- name: get_key_package_by_ref
-- One key package by its ref, in any state. Read when a write matched no row, to say
-- why.
-- Returns: the package; no row for an unknown ref.
-- Locks: none.
-- Index: key_packages_key_package_ref_key.
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at (NOT NULL columns, read through a view)
SELECT k.*
FROM key_package_rows AS k
WHERE k.key_package_ref = %(key_package_ref)s;

-- name: publish_key_packages
-- Publishes a batch of one owner's key packages in one statement, in the order given
-- (the first is the oldest, claimed first).
-- Returns: no rows. Refs that exist already are skipped, so publishing the same batch
-- again inserts nothing.
-- Locks: only the rows it inserts (ON CONFLICT DO NOTHING locks no existing row).
-- Index: key_packages_key_package_ref_key (the conflict).
INSERT INTO key_packages (
    owner_did, cipher_suite, key_data, key_package_ref, is_last_resort, expires_at
)
SELECT
    %(actor_did)s AS owner_did,
    %(cipher_suite)s AS cipher_suite,
    p.key_data,
    p.key_package_ref,
    %(is_last_resort)s AS is_last_resort,
    coalesce(
        %(expires_at)s::timestamptz, now() + %(lifetime_s)s * interval '1 second'
    ) AS expires_at
FROM
    unnest(%(key_data)s::bytea[], %(key_package_refs)s::bytea[])
    WITH ORDINALITY AS p (key_data, key_package_ref, n)
ORDER BY p.n
ON CONFLICT (key_package_ref) DO NOTHING;

-- name: get_key_package
-- Peeks at the package a claim would hand out now (the oldest unexpired regular one,
-- else the newest last-resort one) without claiming it.
-- Returns: that package; no row when there is none.
-- Locks: none.
-- Index: key_packages_available.
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at (NOT NULL columns, read through a view)
(
    -- The oldest unexpired regular package.
    SELECT k.*
    FROM key_package_rows AS k
    WHERE
        k.owner_did = %(owner_did)s
        AND k.cipher_suite = %(cipher_suite)s
        AND NOT k.is_last_resort
        AND k.consumed_at IS NULL
        AND k.expires_at > now()
    ORDER BY k.created_at, k.id
    LIMIT 1
)
UNION ALL
(
    -- Else the newest unexpired last-resort one.
    SELECT k.*
    FROM key_package_rows AS k
    WHERE
        k.owner_did = %(owner_did)s
        AND k.cipher_suite = %(cipher_suite)s
        AND k.is_last_resort
        AND k.consumed_at IS NULL
        AND k.expires_at > now()
    ORDER BY k.created_at DESC, k.id DESC
    LIMIT 1
)
LIMIT 1;

-- name: claim_key_package
-- Hands out the owner's oldest unexpired, unconsumed regular package of that suite and
-- marks it consumed by the claimer; when none is left, the newest unexpired last-resort
-- package, which stays available.
-- Returns: the package handed out; no row when the owner has neither.
-- Locks: the regular package, FOR UPDATE SKIP LOCKED: concurrent claimers pass over a
-- row another is taking instead of queueing on it, and the lock with the UPDATE's
-- re-check of the locked row guarantees no row is handed out twice. A last-resort
-- package is read, not locked.
-- Index: key_packages_available, then key_packages_pkey.
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at (NOT NULL columns, read through a view)
WITH claimed AS (
    -- The oldest regular package nobody else is taking, marked consumed.
    UPDATE key_package_rows AS k
    SET consumed_at = now(), consumed_by_did = %(actor_did)s
    WHERE
        k.id = (
            SELECT a.id
            FROM key_packages AS a
            WHERE
                a.owner_did = %(owner_did)s
                AND a.cipher_suite = %(cipher_suite)s
                AND NOT a.is_last_resort
                AND a.consumed_at IS NULL
                AND a.expires_at > now()
            ORDER BY a.created_at, a.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
    RETURNING *
)

SELECT * FROM claimed
UNION ALL
(
    -- Else the newest last-resort package, unchanged.
    SELECT k.*
    FROM key_package_rows AS k
    WHERE
        k.owner_did = %(owner_did)s
        AND k.cipher_suite = %(cipher_suite)s
        AND k.is_last_resort
        AND k.consumed_at IS NULL
        AND k.expires_at > now()
        AND NOT EXISTS (SELECT 1 FROM claimed)
    ORDER BY k.created_at DESC, k.id DESC
    LIMIT 1
);

-- name: consume_key_package
-- Marks one known, unexpired, unconsumed package consumed by the actor. A last-resort
-- package is returned unchanged: it stays available.
-- Returns: the package; no row means the ref is unknown, consumed already, or expired.
-- Locks: the package's row (the UPDATE re-checks consumed_at on its newest version); a
-- last-resort package is read, not locked.
-- Index: key_packages_key_package_ref_key.
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at (NOT NULL columns, read through a view)
WITH consumed AS (
    -- The regular package, marked consumed.
    UPDATE key_package_rows AS k
    SET consumed_at = now(), consumed_by_did = %(actor_did)s
    WHERE
        k.key_package_ref = %(key_package_ref)s
        AND NOT k.is_last_resort
        AND k.consumed_at IS NULL
        AND k.expires_at > now()
    RETURNING *
)

SELECT * FROM consumed
UNION ALL
SELECT k.*
FROM key_package_rows AS k
WHERE
    k.key_package_ref = %(key_package_ref)s
    AND k.is_last_resort
    AND k.expires_at > now();

-- name: count_key_packages
-- The owner's unexpired, unconsumed packages per cipher suite: regular ones (what
-- claims hand out one by one) and last-resort ones apart.
-- Returns: one row per cipher suite the owner has such packages of; none when there is
-- none.
-- Locks: none.
-- Index: key_packages_available.
-- not null: available, last_resort (counts)
SELECT
    k.cipher_suite,
    count(*) FILTER (WHERE NOT k.is_last_resort) AS available,
    count(*) FILTER (WHERE k.is_last_resort) AS last_resort
FROM key_packages AS k
WHERE k.owner_did = %(actor_did)s AND k.consumed_at IS NULL AND k.expires_at > now()
GROUP BY k.cipher_suite
ORDER BY k.cipher_suite;

-- name: delete_expired_key_packages
-- Deletes one batch: unconsumed packages past their expiry, and consumed ones older
-- than the retention period.
-- Returns: no rows: the row count is the batch's.
-- Locks: up to batch_size packages, FOR UPDATE SKIP LOCKED: rows locked by a claim in
-- flight are left for the next batch.
-- Index: key_packages_expiry, key_packages_consumed (the batch), key_packages_pkey (the
-- delete).
DELETE FROM key_packages AS k
WHERE k.id IN (
    SELECT e.id
    FROM key_packages AS e
    WHERE
        (e.consumed_at IS NULL AND e.expires_at <= now())
        OR e.consumed_at < now() - %(older_than)s::interval
    ORDER BY e.id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
