-- name: lock_devices_of
-- Serialises the registrations of one user's devices: a transaction-scoped advisory
-- lock on the owner's DID, taken before register_device, so that statement's snapshot
-- (taken after the lock is granted) sees every registration committed before it and
-- the cap cannot be passed by two registrations at once. Other users are not held up
-- (a different key), and the lock goes with the transaction.
-- Returns: one row, nothing in it the caller reads.
-- Locks: the advisory lock of the owner's devices, until the transaction ends.
-- Index: none (no table is read).
SELECT pg_advisory_xact_lock(hashtextextended('catbird_db.devices:' || %(owner_did)s, 0));

-- name: register_device
-- Registers a device for its owner, or returns it when this owner registered it before
-- with the same signature key (a retry), under the owner's lock (lock_devices_of).
-- Returns: one row: the outcome ('registered'; 'revoked': the owner revoked it;
-- 'taken': the id is another user's, or this owner's with another signature key;
-- 'over_cap': the owner has max_devices active devices; 'raced': another user
-- registered this id since the snapshot, and running again sees it) and, when
-- registered, the device.
-- Locks: the device row it inserts (a concurrent insert of the same id by another user
-- is waited for, then met by ON CONFLICT DO NOTHING).
-- Index: devices_id_key (the id), devices_pkey (the owner's active devices, counted).
-- not null: outcome (a CASE whose every branch is a literal)
WITH existing AS (
    -- The device of this id, whoever registered it.
    SELECT
        d.owner_did,
        d.id,
        d.signature_key,
        d.registered_at,
        d.revoked_at
    FROM devices AS d
    WHERE d.id = %(device_id)s
),

active AS (
    -- The owner's active devices: newest, as the owner's lock is held.
    SELECT count(*) AS n
    FROM devices AS d
    WHERE d.owner_did = %(owner_did)s AND d.revoked_at IS NULL
),

inserted AS (
    -- The new device, unless the id is known or the owner is at the cap.
    INSERT INTO devices (owner_did, id, signature_key)
    SELECT
        %(owner_did)s AS owner_did,
        %(device_id)s AS id,
        %(signature_key)s::bytea AS signature_key
    FROM active
    WHERE active.n < %(max_devices)s AND NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT DO NOTHING
    RETURNING owner_did, id, signature_key, registered_at, revoked_at
),

shown AS (
    -- The device as the call returns it: inserted, or this owner's active one with the
    -- same signature key.
    SELECT
        i.owner_did,
        i.id,
        i.signature_key,
        i.registered_at,
        i.revoked_at
    FROM inserted AS i
    UNION ALL
    SELECT
        e.owner_did,
        e.id,
        e.signature_key,
        e.registered_at,
        e.revoked_at
    FROM existing AS e
    WHERE
        e.owner_did = %(owner_did)s
        AND e.revoked_at IS NULL
        AND e.signature_key IS NOT DISTINCT FROM %(signature_key)s::bytea
)

SELECT
    CASE
        WHEN shown.id IS NOT NULL THEN 'registered'
        WHEN EXISTS (
            SELECT 1 FROM existing AS e
            WHERE e.owner_did = %(owner_did)s AND e.revoked_at IS NOT NULL
        ) THEN 'revoked'
        WHEN EXISTS (SELECT 1 FROM existing) THEN 'taken'
        WHEN active.n >= %(max_devices)s THEN 'over_cap'
        ELSE 'raced'
    END AS outcome,
    shown.owner_did,
    shown.id,
    shown.signature_key,
    shown.registered_at,
    shown.revoked_at
FROM active
LEFT JOIN shown ON TRUE;

-- name: list_devices
-- The actor's active devices, oldest registration first.
-- Returns: every active device of the actor (at most the cap); none when it has none.
-- Locks: none.
-- Index: devices_pkey (the owner's devices).
SELECT
    d.owner_did,
    d.id,
    d.signature_key,
    d.registered_at,
    d.revoked_at
FROM devices AS d
WHERE d.owner_did = %(actor_did)s AND d.revoked_at IS NULL
ORDER BY d.registered_at, d.id;

-- name: revoke_device
-- Revokes one of the actor's devices; a device revoked before keeps its first
-- revocation time.
-- Returns: the device, revoked; no row when the actor owns no device of that id.
-- Locks: the device row, until the transaction ends (a publish of the device holds it
-- FOR NO KEY UPDATE, lock_publishing_device, and an add by commit that uses one of its
-- packages FOR SHARE, lock_added_devices: this waits for either; clear_revoked_device
-- then runs in the same transaction).
-- Index: devices_id_key or devices_pkey (either finds the one row).
UPDATE devices AS d
SET revoked_at = coalesce(d.revoked_at, now())
WHERE d.owner_did = %(actor_did)s AND d.id = %(device_id)s
RETURNING d.owner_did, d.id, d.signature_key, d.registered_at, d.revoked_at;

-- name: clear_revoked_device
-- What a revoked device leaves behind, after revoke_device in the same transaction:
-- its unconsumed packages (last-resort ones included) are deleted, and its pending
-- welcomes (expired ones too) withdrawn. That statement waited for any publish or add
-- of the device in flight, so this one's snapshot sees what they stored.
-- Returns: no rows: the row count is how many packages went.
-- Locks: the packages it deletes (reserved ones too: an add that would use one is then
-- refused; a package an add or consume_key_package is taking is waited for, and left if
-- it was consumed), and the welcomes it withdraws, in (convo_id, id) order (the order a
-- removal's withdrawal and a conversation's cascade take them in; a consume or reject
-- in flight is waited for, and a welcome it ended is left as it is); no operation
-- locks a welcome before a key package, so the two cannot wait on each other in a
-- cycle.
-- Index: key_packages_available, welcomes_pending_by_recipient.
WITH withdrawn AS (
    -- The device's pending welcomes: it joins no group more.
    UPDATE welcomes AS w
    SET withdrawn_at = now()
    WHERE (w.convo_id, w.id) IN (
        SELECT
            p.convo_id,
            p.id
        FROM welcomes AS p
        WHERE
            p.recipient_did = %(owner_did)s
            AND p.recipient_device_id = %(device_id)s
            AND p.ended_at IS NULL
        ORDER BY p.convo_id, p.id
        FOR UPDATE
    )
)

DELETE FROM key_packages AS k
WHERE
    k.owner_did = %(owner_did)s
    AND k.device_id = %(device_id)s
    AND k.consumed_at IS NULL;
