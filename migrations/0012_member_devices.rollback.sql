-- Back to welcomes and members keyed by DID alone. The member devices go; welcomes lose
-- their device, expiry and end states: a rejected welcome stays ended (as consumed, the
-- one end the older schema knows), a withdrawn one is pending again unless another
-- welcome for the same package (pending, or withdrawn and newer) would then clash with
-- it. The legacy devices this migration registered stay (devices are never deleted, and
-- 0010's rollback removes them all).
DROP VIEW pending_welcomes;

DROP TABLE member_devices;

-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_pending_unique;

-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_pending_by_recipient;

-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_ended;

-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_expired;

UPDATE welcomes AS w
SET consumed_at = coalesce(w.rejected_at, w.withdrawn_at)
WHERE
    w.rejected_at IS NOT NULL
    OR (
        w.withdrawn_at IS NOT NULL
        AND EXISTS (
            SELECT 1
            FROM welcomes AS n
            WHERE
                n.convo_id = w.convo_id
                AND n.recipient_did = w.recipient_did
                AND n.key_package_ref = w.key_package_ref
                AND n.id <> w.id
                AND (
                    n.ended_at IS NULL
                    OR (n.withdrawn_at IS NOT NULL AND (n.created_at, n.id) > (w.created_at, w.id))
                )
        )
    );

ALTER TABLE welcomes
DROP COLUMN ended_at,
DROP COLUMN recipient_device_id,
DROP COLUMN expires_at,
DROP COLUMN rejected_at,
DROP COLUMN rejection_reason,
DROP COLUMN withdrawn_at;

-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX welcomes_pending_unique
ON welcomes (convo_id, recipient_did, key_package_ref)
WHERE consumed_at IS NULL;

-- squawk-ignore require-concurrent-index-creation
CREATE INDEX welcomes_pending_by_recipient
ON welcomes (recipient_did, created_at, convo_id, id)
WHERE consumed_at IS NULL;

-- squawk-ignore require-concurrent-index-creation
CREATE INDEX welcomes_consumed ON welcomes (consumed_at)
WHERE consumed_at IS NOT NULL;
