-- name: lock_publishing_device
-- The actor's device a publish names, locked FOR NO KEY UPDATE until the transaction
-- ends: the publishes of one device are serialised (so the statement after this one
-- counts the device's live packages on a snapshot that sees every publish before it),
-- and a revocation either precedes the publish (seen here, on the row's newest version)
-- or waits for it (and then deletes what it published).
-- Returns: the device's revoked_at; no row when the actor has no device of that id.
-- Locks: the device row.
-- Index: devices_pkey or devices_id_key (either finds the one row).
SELECT d.revoked_at
FROM devices AS d
WHERE d.owner_did = %(actor_did)s AND d.id = %(device_id)s
FOR NO KEY UPDATE;

-- name: get_key_package_by_ref
-- One key package by its ref, in any state: what store_key_package stored (or found
-- stored), and, when a consume matched no row, why.
-- Returns: the package; no row for an unknown ref.
-- Locks: none.
-- Index: key_packages_key_package_ref_key.
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at, device_id (NOT NULL columns, read through a view)
SELECT k.*
FROM key_package_rows AS k
WHERE k.key_package_ref = %(key_package_ref)s;

-- name: publish_key_packages
-- Publishes a batch of one device's key packages in one statement, in the order given
-- (the first is the oldest, claimed first), under the device's lock
-- (lock_publishing_device). The cap is judged on what the statement really inserted:
-- the device's live (unconsumed, unexpired) packages before it plus the rows it
-- inserted, against max_live; past it, the caller rolls the statement back, so a batch
-- is stored whole or not at all.
-- Returns: one row: how many were inserted, and whether the device stays within the
-- cap. Refs that exist already are skipped, so publishing the same batch again inserts
-- nothing (and counts nothing against the cap).
-- Locks: only the rows it inserts (ON CONFLICT DO NOTHING locks no existing row).
-- Index: key_packages_available (the device's live packages, counted),
-- key_packages_key_package_ref_key (the conflict).
-- not null: published, within_cap (a count, and a comparison of two counts)
WITH inserted AS (
    -- The new packages, in their order.
    INSERT INTO key_packages (
        owner_did, device_id, cipher_suite, key_data, key_package_ref, is_last_resort,
        expires_at
    )
    SELECT
        %(actor_did)s AS owner_did,
        %(device_id)s AS device_id,
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
    ON CONFLICT (key_package_ref) DO NOTHING
    RETURNING 1 AS one
),

live AS (
    -- The device's live packages before this statement (it cannot see its own rows).
    SELECT count(*) AS n
    FROM key_packages AS k
    WHERE
        k.owner_did = %(actor_did)s
        AND k.device_id = %(device_id)s
        AND k.consumed_at IS NULL
        AND k.expires_at > now()
)

SELECT
    (SELECT count(*) FROM inserted) AS published,
    live.n + (SELECT count(*) FROM inserted) <= %(max_live)s AS within_cap
FROM live;

-- name: get_key_package
-- Peeks at the package claim_key_package would hand out now, for one device or for
-- any active device of the owner (the oldest unexpired, unreserved regular package,
-- else the newest last-resort one), without claiming it.
-- Returns: that package; no row when there is none.
-- Locks: none.
-- Index: devices_pkey (the owner's devices), key_packages_available (each device's
-- packages).
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at, device_id (NOT NULL columns, read through a view)
(
    -- The oldest unexpired regular package of an active device.
    SELECT k.*
    FROM devices AS d
    CROSS JOIN
        LATERAL (
            SELECT r.*
            FROM claimable_key_packages AS r
            WHERE
                r.owner_did = d.owner_did
                AND r.device_id = d.id
                AND r.cipher_suite = %(cipher_suite)s
                AND NOT r.is_last_resort
            ORDER BY r.created_at, r.id
            LIMIT 1
        ) AS k
    WHERE
        d.owner_did = %(owner_did)s
        AND d.revoked_at IS NULL
        AND (%(device_id)s::uuid IS NULL OR d.id = %(device_id)s::uuid)
    ORDER BY k.created_at, k.id
    LIMIT 1
)
UNION ALL
(
    -- Else the newest unexpired last-resort one.
    SELECT k.*
    FROM devices AS d
    CROSS JOIN
        LATERAL (
            SELECT r.*
            FROM claimable_key_packages AS r
            WHERE
                r.owner_did = d.owner_did
                AND r.device_id = d.id
                AND r.cipher_suite = %(cipher_suite)s
                AND r.is_last_resort
            ORDER BY r.created_at DESC, r.id DESC
            LIMIT 1
        ) AS k
    WHERE
        d.owner_did = %(owner_did)s
        AND d.revoked_at IS NULL
        AND (%(device_id)s::uuid IS NULL OR d.id = %(device_id)s::uuid)
    ORDER BY k.created_at DESC, k.id DESC
    LIMIT 1
)
LIMIT 1;

-- name: claim_key_packages
-- Hands out, in one statement, packages of the owner's active devices (or of the one
-- device asked for): each device's oldest unexpired, unconsumed, unreserved regular
-- package of that suite, reserved for the claimer for reservation_ttl_s (the add commit
-- that uses it consumes it), else its newest unexpired last-resort package (which is
-- never held and stays available). With single, only the oldest of the devices'
-- regular candidates is reserved, and last-resort packages are read only when none was.
-- Returns: one row per candidate device, in device id order: the device and the
-- package it gives (all NULL for a device that gives none); no row when the owner has
-- no active device (or not the one asked for).
-- Locks: each candidate device's oldest regular package, FOR UPDATE SKIP LOCKED:
-- concurrent claimers pass over a row another is taking instead of queueing on it, and
-- the lock with PostgreSQL's re-check of the locked row (unconsumed, not held)
-- guarantees no package is handed to two claimers at once. With single, the candidates
-- not chosen stay locked until the statement (or the caller's transaction) ends;
-- claimers meanwhile take the next ones. Last-resort packages are read, not locked.
-- Index: devices_pkey or devices_id_key (the owner's devices, or the one named),
-- key_packages_available (each device's packages), key_packages_pkey (the update).
-- not null: for_device (a device's id)
WITH candidates AS (
    -- The owner's active devices (or the one asked for).
    SELECT d.id
    FROM devices AS d
    WHERE
        d.owner_did = %(owner_did)s
        AND d.revoked_at IS NULL
        AND (%(device_id)s::uuid IS NULL OR d.id = %(device_id)s::uuid)
),

regular AS (
    -- Each device's oldest regular package nobody else is taking, locked.
    SELECT
        p.id,
        p.created_at
    FROM candidates AS d
    CROSS JOIN
        LATERAL (
            SELECT
                a.id,
                a.created_at
            FROM claimable_key_packages AS a
            WHERE
                a.owner_did = %(owner_did)s
                AND a.device_id = d.id
                AND a.cipher_suite = %(cipher_suite)s
                AND NOT a.is_last_resort
            ORDER BY a.created_at, a.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) AS p
),

chosen AS (
    -- Every device's candidate; with single, the oldest one alone (LIMIT NULL is none).
    SELECT r.id
    FROM regular AS r
    ORDER BY r.created_at, r.id
    LIMIT CASE WHEN %(single)s THEN 1 END
),

claimed AS (
    -- Those packages, reserved for the claimer.
    UPDATE key_package_rows AS k
    SET
        reserved_by_did = %(actor_did)s,
        reserved_until = statement_timestamp() + %(reservation_ttl_s)s * interval '1 second'
    FROM chosen
    WHERE k.id = chosen.id
    RETURNING k.*
),

last_resort AS (
    -- For a device that gave no regular package (with single: when none did), its
    -- newest last-resort one, unchanged.
    SELECT k.*
    FROM candidates AS d
    CROSS JOIN
        LATERAL (
            SELECT r.*
            FROM claimable_key_packages AS r
            WHERE
                r.owner_did = %(owner_did)s
                AND r.device_id = d.id
                AND r.cipher_suite = %(cipher_suite)s
                AND r.is_last_resort
            ORDER BY r.created_at DESC, r.id DESC
            LIMIT 1
        ) AS k
    WHERE
        NOT EXISTS (
            SELECT 1 FROM claimed AS c
            WHERE c.device_id = d.id OR %(single)s
        )
),

handed AS (
    -- What each device gives.
    SELECT * FROM claimed
    UNION ALL
    SELECT * FROM last_resort
)

SELECT
    d.id AS for_device,
    h.id,
    h.owner_did,
    h.cipher_suite,
    h.key_data,
    h.key_package_ref,
    h.is_last_resort,
    h.created_at,
    h.expires_at,
    h.consumed_at,
    h.consumed_by_did,
    h.device_id,
    h.reserved_by_did,
    h.reserved_until
FROM candidates AS d
LEFT JOIN handed AS h ON d.id = h.device_id
ORDER BY d.id;

-- name: consume_key_package
-- Marks one known, unexpired, unconsumed package consumed by the actor, unless another
-- claimer holds it (a live reservation of someone else's). A last-resort package is
-- returned unchanged: it stays available.
-- Returns: the package; no row means the ref is unknown, consumed already, reserved by
-- another claimer, or expired.
-- Locks: the package's row (the UPDATE re-checks consumed_at and the reservation on its
-- newest version); a last-resort package is read, not locked.
-- Index: key_packages_key_package_ref_key.
-- not null: id, owner_did, cipher_suite, key_data, key_package_ref, is_last_resort
-- not null: created_at, expires_at, device_id (NOT NULL columns, read through a view)
WITH consumed AS (
    -- The regular package, marked consumed, its reservation ended.
    UPDATE key_package_rows AS k
    SET
        consumed_at = now(),
        consumed_by_did = %(actor_did)s,
        reserved_by_did = NULL,
        reserved_until = NULL
    WHERE
        k.key_package_ref = %(key_package_ref)s
        AND NOT k.is_last_resort
        AND k.consumed_at IS NULL
        AND (
            k.reserved_until IS NULL
            OR k.reserved_until <= now()
            OR k.reserved_by_did = %(actor_did)s
        )
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

-- name: release_key_packages
-- Ends the actor's reservations of the given packages at once (an adder whose commit
-- lost a race gives back what it claimed): they are claimable again. Packages the
-- actor does not hold, consumed ones included, are left as they are.
-- Returns: no rows: the row count is how many were released.
-- Locks: the packages it releases.
-- Index: key_packages_key_package_ref_key.
UPDATE key_packages AS k
SET reserved_by_did = NULL, reserved_until = NULL
WHERE
    k.key_package_ref = any(%(key_package_refs)s::bytea[])
    AND k.reserved_by_did = %(actor_did)s
    AND k.consumed_at IS NULL;

-- name: count_key_packages
-- The owner's unexpired, unconsumed packages per cipher suite, all its devices
-- together: regular ones a claim could hand out now (available), regular ones held by
-- a claimer's live reservation (reserved, which come back when it is released or runs
-- out), and last-resort ones apart.
-- Returns: one row per cipher suite the owner has such packages of; none when there is
-- none.
-- Locks: none.
-- Index: key_packages_available.
-- not null: available, last_resort, reserved (counts)
SELECT
    k.cipher_suite,
    count(*) FILTER (
        WHERE NOT k.is_last_resort AND (k.reserved_until IS NULL OR k.reserved_until <= now())
    ) AS available,
    count(*) FILTER (WHERE k.is_last_resort) AS last_resort,
    count(*) FILTER (WHERE k.reserved_until > now()) AS reserved
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
