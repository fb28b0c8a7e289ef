-- Members have devices, and welcomes are addressed to a device. A conversation's MLS group
-- is made of devices (each its own client, its own leaf): member_devices says which of a
-- member's devices are in it, since which seq, and until when. A welcome names the device
-- it was made for, expires, and ends one of three ways: consumed (its device joined),
-- rejected (its device cannot process it) or withdrawn (its member was removed or its
-- device revoked). The data already stored is carried over: a welcome is assigned the
-- device of the key package it was made for (else its recipient's legacy device), each
-- members row gets the devices of its welcomes there since its join (else the legacy
-- device), and a pending welcome of a member who has left, or of a revoked device, is
-- withdrawn.
-- depends: 0002_members 0010_key_packages_of_devices 0011_key_package_reservations

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- DIDs seen since devices came (members added without a commit, welcomes of packages
-- deleted since) get their legacy device, as migration 0010 gave the DIDs seen before.
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
    WHERE
        NOT EXISTS (
            SELECT 1 FROM devices AS d
            WHERE d.owner_did = m.member_did
        )
    UNION ALL
    SELECT
        w.recipient_did,
        w.created_at
    FROM welcomes AS w
    WHERE NOT EXISTS (
        SELECT 1 FROM key_packages AS k
        WHERE k.key_package_ref = w.key_package_ref AND k.owner_did = w.recipient_did
    )
) AS seen
GROUP BY seen.did
ON CONFLICT DO NOTHING;

-- -- welcomes --------------------------------------------------------------------------

ALTER TABLE welcomes
ADD COLUMN recipient_device_id uuid,
-- Pending welcomes past it are neither listed nor consumable, and retention deletes
-- them. The add sets it from DbConfig.welcome_ttl_s.
ADD COLUMN expires_at timestamptz,
ADD COLUMN rejected_at timestamptz,
-- What the recipient's client said when it rejected the welcome (it is not parsed).
ADD COLUMN rejection_reason text CHECK (char_length(rejection_reason) BETWEEN 1 AND 1000),
ADD COLUMN withdrawn_at timestamptz;

UPDATE welcomes AS w
SET
    recipient_device_id = coalesce(
        (
            SELECT k.device_id
            FROM key_packages AS k
            WHERE k.key_package_ref = w.key_package_ref AND k.owner_did = w.recipient_did
        ),
        legacy_device_id(w.recipient_did)
    ),
    -- The default welcome_ttl_s from the upgrade on: no pending welcome expires by it.
    expires_at = now() + interval '30 days';

-- A member who left has no use for a pending welcome, and it would keep a re-add with
-- the same key package out.
UPDATE welcomes AS w
SET withdrawn_at = now()
FROM members AS m
WHERE
    w.consumed_at IS NULL
    AND m.convo_id = w.convo_id
    AND m.member_did = w.recipient_did
    AND m.left_at IS NOT NULL;

-- A device revoked before the upgrade joins no group from a welcome either.
UPDATE welcomes AS w
SET withdrawn_at = now()
FROM devices AS d
WHERE
    w.recipient_did = d.owner_did
    AND w.recipient_device_id = d.id
    AND d.revoked_at IS NOT NULL
    AND w.consumed_at IS NULL
    AND w.withdrawn_at IS NULL;

-- squawk-ignore adding-not-nullable-field
ALTER TABLE welcomes ALTER COLUMN recipient_device_id SET NOT NULL;

-- squawk-ignore adding-not-nullable-field
ALTER TABLE welcomes ALTER COLUMN expires_at SET NOT NULL;

-- A welcome ends once, one way; a rejection says why. Validated at once: the table is
-- locked for this transaction already.
ALTER TABLE welcomes
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT welcomes_ends_once
CHECK (num_nonnulls(consumed_at, rejected_at, withdrawn_at) <= 1),
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT welcomes_rejection_has_reason
CHECK ((rejected_at IS NULL) = (rejection_reason IS NULL));

-- When the welcome ended, whichever way: the one column that says it is pending (NULL),
-- so the partial indexes and the statements state that rule once. Stored, so the
-- indexes can hold it (adding it rewrites the table, locked for this migration anyway).
ALTER TABLE welcomes
ADD COLUMN ended_at timestamptz
-- squawk-ignore adding-field-with-default
GENERATED ALWAYS AS (coalesce(consumed_at, rejected_at, withdrawn_at)) STORED;

-- A welcome's device is its recipient's. Devices are never deleted, so no ON DELETE.
-- Validated at once: the table is locked for this transaction already, and every row
-- was assigned a device of its recipient just above.
-- squawk-ignore constraint-missing-not-valid, adding-foreign-key-constraint
ALTER TABLE welcomes ADD CONSTRAINT welcomes_device_fkey
FOREIGN KEY (recipient_did, recipient_device_id) REFERENCES devices (owner_did, id);

-- The pending indexes are made anew on ended_at; the table is locked by the rewrite
-- above, so neither the drops nor the builds need CONCURRENTLY (nor could they, inside
-- the migration's transaction).
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_pending_unique;

-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_pending_by_recipient;

-- squawk-ignore require-concurrent-index-deletion
DROP INDEX welcomes_consumed;

-- add_members_with_commit: at most one pending welcome per conversation, device and key
-- package (AlreadyExists). remove_member may find a member's pending welcomes in the
-- conversation by its leading (convo_id, recipient_did).
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX welcomes_pending_unique
ON welcomes (convo_id, recipient_did, recipient_device_id, key_package_ref)
WHERE ended_at IS NULL;

-- list_pending_welcomes: a recipient's pending welcomes, oldest first. consume_welcome,
-- reject_welcome, a removal's and a revocation's withdrawals find pending welcomes by
-- it too.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX welcomes_pending_by_recipient
ON welcomes (recipient_did, created_at, convo_id, id)
WHERE ended_at IS NULL;

-- delete_consumed_welcomes: welcomes ended past the retention period.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX welcomes_ended ON welcomes (ended_at)
WHERE ended_at IS NOT NULL;

-- delete_consumed_welcomes: pending welcomes expired past the retention period.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX welcomes_expired ON welcomes (expires_at)
WHERE ended_at IS NULL;

-- pending_welcomes: the welcomes their recipients may still list, consume or reject,
-- the rule written once: not ended, not expired. A simple view: the planner reads
-- welcomes and its partial indexes directly, and an UPDATE through it (consume_welcome,
-- reject_welcome) re-checks these conditions on the row's newest version.
CREATE VIEW pending_welcomes AS
SELECT
    w.convo_id,
    w.id,
    w.recipient_did,
    w.key_package_ref,
    w.welcome_data,
    w.created_at,
    w.consumed_at,
    w.recipient_device_id,
    w.expires_at,
    w.rejected_at,
    w.rejection_reason,
    w.withdrawn_at
FROM welcomes AS w
WHERE w.ended_at IS NULL AND w.expires_at > now();

-- -- member devices --------------------------------------------------------------------

CREATE TABLE member_devices (
    convo_id uuid NOT NULL,
    member_did did NOT NULL,
    device_id uuid NOT NULL,
    -- The seq of the commit that added the device (0: it was there from the start).
    joined_seq bigint NOT NULL CHECK (joined_seq >= 0),
    joined_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the device's member is removed; cleared when a commit adds it again.
    left_at timestamptz,
    -- list_member_devices and list_pending_removals (a conversation's devices, by member),
    -- the re-add of a device (ON CONFLICT), and remove_member (a member's devices).
    PRIMARY KEY (convo_id, member_did, device_id),
    -- A device of a member of the conversation: it goes with the member's row, which
    -- goes with the conversation.
    FOREIGN KEY (convo_id, member_did) REFERENCES members (convo_id, member_did)
    ON DELETE CASCADE,
    -- Devices are never deleted, so no ON DELETE.
    FOREIGN KEY (member_did, device_id) REFERENCES devices (owner_did, id)
);

-- Each members row gets the devices its welcomes since its (latest) join were made for:
-- an active member added again with another device's package had that device join
-- too. A row with no such welcome gets its legacy device where it has one (a member
-- added without a commit by a user who had registered devices of their own has none:
-- which of them is in the group, no row says; a commit adds it). Each with the member's
-- join and leave.
INSERT INTO member_devices (convo_id, member_did, device_id, joined_seq, joined_at, left_at)
SELECT
    m.convo_id,
    m.member_did,
    d.id AS device_id,
    m.joined_seq,
    m.joined_at,
    m.left_at
FROM members AS m
INNER JOIN devices AS d ON m.member_did = d.owner_did
WHERE
    d.id IN (
        SELECT w.recipient_device_id
        FROM welcomes AS w
        WHERE
            w.convo_id = m.convo_id
            AND w.recipient_did = m.member_did
            AND w.created_at >= m.joined_at
    )
    OR (
        d.id = legacy_device_id(m.member_did)
        AND NOT EXISTS (
            SELECT 1
            FROM welcomes AS w
            WHERE
                w.convo_id = m.convo_id
                AND w.recipient_did = m.member_did
                AND w.created_at >= m.joined_at
        )
    );
