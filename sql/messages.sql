-- name: create_message
-- Sends an application message, or replays an earlier send of the same id. A message
-- with this id decides first: then nothing is written, and the stored message comes
-- back only to its sender and only for the same epoch and ciphertext (no row
-- otherwise). Else the sender must be an active member and the epoch within
-- epoch_window of the current one: the sender's own members row is locked first (so a
-- concurrent removal either precedes the send and refuses it, or waits for it), then
-- last_seq is bumped under the conversation's row lock (which orders concurrent
-- senders), the message takes the new seq, the sender's
-- read marker moves to it and a notification is queued, all in this one statement.
-- sent_at is left to its default, the clock at insert: after the lock, so in seq order.
-- No other member's row is touched. No row back: refused (create_message says why).
-- not null: convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at
WITH sender AS (
    -- Locked, so that membership is judged on the newest row version even after a
    -- wait on the conversation row: a removal is either before this send (refused) or
    -- waits for it. The actor's row is locked first, then the conversation's.
    SELECT a.member_did
    FROM members AS a
    WHERE
        a.convo_id = %(convo_id)s
        AND a.member_did = %(actor_did)s
        AND a.left_at IS NULL
    FOR NO KEY UPDATE
),

earlier AS (
    SELECT
        e.convo_id,
        e.seq,
        e.id,
        e.sender_did,
        e.message_type,
        e.epoch,
        e.ciphertext,
        e.sent_at,
        e.expires_at
    FROM messages AS e
    WHERE e.convo_id = %(convo_id)s AND e.id = %(id)s
),

bump AS (
    UPDATE conversations AS c
    SET last_seq = c.last_seq + 1, updated_at = now()
    WHERE
        c.id = %(convo_id)s
        AND c.epoch - %(epoch)s BETWEEN 0 AND %(epoch_window)s
        AND EXISTS (SELECT 1 FROM sender)
        AND NOT EXISTS (SELECT 1 FROM earlier)
    RETURNING c.id, c.last_seq
),

sent AS (
    INSERT INTO messages (
        convo_id, seq, id, sender_did, message_type, epoch, ciphertext, expires_at
    )
    SELECT
        bump.id AS convo_id,
        bump.last_seq AS seq,
        %(id)s::uuid AS id,
        %(actor_did)s::text AS sender_did,
        'app' AS message_type,
        %(epoch)s::bigint AS epoch,
        %(ciphertext)s::bytea AS ciphertext,
        %(expires_at)s::timestamptz AS expires_at
    FROM bump
    -- The notification is queued by the insert itself, once per stored row; it is
    -- delivered only if this transaction commits.
    RETURNING
        convo_id,
        seq,
        id,
        sender_did,
        message_type,
        epoch,
        ciphertext,
        sent_at,
        expires_at,
        pg_notify('catbird_messages', convo_id::text || ':' || seq || ':' || message_type)
            AS notified
),

marked AS (
    UPDATE members AS r
    SET last_read_seq = greatest(r.last_read_seq, sent.seq)
    FROM sent
    WHERE
        r.convo_id = sent.convo_id
        AND r.member_did = sent.sender_did
        AND r.left_at IS NULL
)

SELECT
    sent.convo_id,
    sent.seq,
    sent.id,
    sent.sender_did,
    sent.message_type,
    sent.epoch,
    sent.ciphertext,
    sent.sent_at,
    sent.expires_at
FROM sent
UNION ALL
SELECT
    earlier.convo_id,
    earlier.seq,
    earlier.id,
    earlier.sender_did,
    earlier.message_type,
    earlier.epoch,
    earlier.ciphertext,
    earlier.sent_at,
    earlier.expires_at
FROM earlier
WHERE
    earlier.sender_did = %(actor_did)s
    AND earlier.message_type = 'app'
    AND earlier.epoch = %(epoch)s
    AND earlier.ciphertext = %(ciphertext)s
    AND EXISTS (SELECT 1 FROM sender);

-- name: submit_commit
-- Stores an MLS commit and advances the epoch, atomically: the compare-and-swap
-- (epoch = the commit's epoch) and the seq bump are one UPDATE of the conversation
-- row, so of concurrent commits for one epoch exactly one matches. The commit is
-- stored at its own (old) epoch; the conversation moves to epoch + 1. Idempotent by
-- id exactly like create_message, and like it locks the sender's members row before
-- the conversation row; the sender's read marker moves to the commit and a
-- notification is queued. A commit that also adds members follows this same shape
-- with its member and welcome inserts hung off `sent`.
-- not null: convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at
WITH sender AS (
    -- Locked, so that membership is judged on the newest row version even after a
    -- wait on the conversation row: a removal is either before this send (refused) or
    -- waits for it. The actor's row is locked first, then the conversation's.
    SELECT a.member_did
    FROM members AS a
    WHERE
        a.convo_id = %(convo_id)s
        AND a.member_did = %(actor_did)s
        AND a.left_at IS NULL
    FOR NO KEY UPDATE
),

earlier AS (
    SELECT
        e.convo_id,
        e.seq,
        e.id,
        e.sender_did,
        e.message_type,
        e.epoch,
        e.ciphertext,
        e.sent_at,
        e.expires_at
    FROM messages AS e
    WHERE e.convo_id = %(convo_id)s AND e.id = %(id)s
),

bump AS (
    UPDATE conversations AS c
    SET epoch = c.epoch + 1, last_seq = c.last_seq + 1, updated_at = now()
    WHERE
        c.id = %(convo_id)s
        AND c.epoch = %(epoch)s
        AND EXISTS (SELECT 1 FROM sender)
        AND NOT EXISTS (SELECT 1 FROM earlier)
    RETURNING c.id, c.last_seq
),

sent AS (
    INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)
    SELECT
        bump.id AS convo_id,
        bump.last_seq AS seq,
        %(id)s::uuid AS id,
        %(actor_did)s::text AS sender_did,
        'commit' AS message_type,
        %(epoch)s::bigint AS epoch,
        %(ciphertext)s::bytea AS ciphertext
    FROM bump
    -- The notification is queued by the insert itself, once per stored row; it is
    -- delivered only if this transaction commits.
    RETURNING
        convo_id,
        seq,
        id,
        sender_did,
        message_type,
        epoch,
        ciphertext,
        sent_at,
        expires_at,
        pg_notify('catbird_messages', convo_id::text || ':' || seq || ':' || message_type)
            AS notified
),

marked AS (
    UPDATE members AS r
    SET last_read_seq = greatest(r.last_read_seq, sent.seq)
    FROM sent
    WHERE
        r.convo_id = sent.convo_id
        AND r.member_did = sent.sender_did
        AND r.left_at IS NULL
)

SELECT
    sent.convo_id,
    sent.seq,
    sent.id,
    sent.sender_did,
    sent.message_type,
    sent.epoch,
    sent.ciphertext,
    sent.sent_at,
    sent.expires_at
FROM sent
UNION ALL
SELECT
    earlier.convo_id,
    earlier.seq,
    earlier.id,
    earlier.sender_did,
    earlier.message_type,
    earlier.epoch,
    earlier.ciphertext,
    earlier.sent_at,
    earlier.expires_at
FROM earlier
WHERE
    earlier.sender_did = %(actor_did)s
    AND earlier.message_type = 'commit'
    AND earlier.epoch = %(epoch)s
    AND earlier.ciphertext = %(ciphertext)s
    AND EXISTS (SELECT 1 FROM sender);

-- name: message_id_taken
-- Whether the conversation holds a message with this id, read only to explain a
-- refused send; says nothing else about it.
SELECT (
    EXISTS (
        SELECT 1
        FROM messages AS m
        WHERE m.convo_id = %(convo_id)s AND m.id = %(id)s
    )
) AS taken;

-- name: get_message
-- One message by its id, for an active member who joined before it was sent; an
-- expired message is gone even before maintenance deletes it.
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM messages AS m
INNER JOIN members AS a
    ON
        m.convo_id = a.convo_id
        AND a.member_did = %(actor_did)s
        AND a.left_at IS NULL
        AND m.seq > a.joined_seq
WHERE
    m.convo_id = %(convo_id)s
    AND m.id = %(id)s
    AND (m.expires_at IS NULL OR m.expires_at > now());

-- name: list_messages_forward
-- The messages an active member may read (seq > joined_seq, unexpired) after a seq,
-- oldest first: a keyset range on the primary key. A non-member's bound is NULL, so
-- no row.
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM messages AS m
WHERE
    m.convo_id = %(convo_id)s
    AND m.seq > %(after_seq)s
    AND m.seq > (
        SELECT a.joined_seq
        FROM members AS a
        WHERE
            a.convo_id = %(convo_id)s
            AND a.member_did = %(actor_did)s
            AND a.left_at IS NULL
    )
    AND (m.expires_at IS NULL OR m.expires_at > now())
ORDER BY m.seq
LIMIT %(limit)s;

-- name: list_messages_backward
-- The messages an active member may read before a seq, newest first.
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM messages AS m
WHERE
    m.convo_id = %(convo_id)s
    AND m.seq < %(before_seq)s
    AND m.seq > (
        SELECT a.joined_seq
        FROM members AS a
        WHERE
            a.convo_id = %(convo_id)s
            AND a.member_did = %(actor_did)s
            AND a.left_at IS NULL
    )
    AND (m.expires_at IS NULL OR m.expires_at > now())
ORDER BY m.seq DESC
LIMIT %(limit)s;

-- name: list_messages_since
-- The messages an active member may read from the first one sent at or after a
-- timestamp, oldest first, paged by seq (after_seq) so messages with equal sent_at
-- are neither lost nor repeated. sent_at never decreases as seq grows, so the first
-- seq at or after the timestamp starts the range: found on messages_by_sent_at.
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM messages AS m
WHERE
    m.convo_id = %(convo_id)s
    AND m.seq > %(after_seq)s
    AND m.seq >= (
        SELECT s.seq
        FROM messages AS s
        WHERE s.convo_id = %(convo_id)s AND s.sent_at >= %(since)s
        ORDER BY s.sent_at, s.seq
        LIMIT 1
    )
    AND m.seq > (
        SELECT a.joined_seq
        FROM members AS a
        WHERE
            a.convo_id = %(convo_id)s
            AND a.member_did = %(actor_did)s
            AND a.left_at IS NULL
    )
    AND (m.expires_at IS NULL OR m.expires_at > now())
ORDER BY m.seq
LIMIT %(limit)s;

-- name: get_message_count
-- How many messages an active member may read; no row for anyone else.
SELECT (
    SELECT count(*)
    FROM messages AS m
    WHERE
        m.convo_id = a.convo_id
        AND m.seq > a.joined_seq
        AND (m.expires_at IS NULL OR m.expires_at > now())
) AS message_count
FROM members AS a
WHERE
    a.convo_id = %(convo_id)s
    AND a.member_did = %(actor_did)s
    AND a.left_at IS NULL;

-- name: delete_message
-- Deletes an application message, by its sender only, while an active member who can
-- still read it. The actor's members row is locked first, as by every guarded write:
-- a removal either precedes the delete (refused) or waits for it. Commits stay: they
-- are the group's history.
WITH actor AS (
    SELECT a.joined_seq
    FROM members AS a
    WHERE
        a.convo_id = %(convo_id)s
        AND a.member_did = %(actor_did)s
        AND a.left_at IS NULL
    FOR NO KEY UPDATE
)

DELETE FROM messages AS m
WHERE
    m.convo_id = %(convo_id)s
    AND m.id = %(id)s
    AND m.sender_did = %(actor_did)s
    AND m.message_type = 'app'
    AND m.seq > (SELECT actor.joined_seq FROM actor);

-- name: delete_expired_messages
-- One batch of messages past their expiry (found on messages_expiring). Rows another
-- transaction holds are skipped, not waited for, and each batch is its own short
-- statement, so maintenance never holds many locks for long.
WITH doomed AS (
    SELECT
        x.convo_id,
        x.seq
    FROM messages AS x
    WHERE x.expires_at <= now()
    ORDER BY x.expires_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)

DELETE FROM messages AS m
USING doomed
WHERE m.convo_id = doomed.convo_id AND m.seq = doomed.seq;

-- name: listen_messages
-- Subscribes a dedicated connection to the notifications every sequenced write
-- queues: payload 'convo_id:seq:message_type'. LISTEN takes no bind parameters, so the
-- channel is fixed here.
LISTEN catbird_messages;
