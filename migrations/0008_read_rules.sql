-- What a member may read, each rule written once: readable_messages (every statement
-- that hands messages to a member reads them through it), unread_messages (every unread
-- count) and readable_blob (a blob by its CID). All three are set-returning SQL
-- functions, STABLE, not STRICT and without SET clauses, so the planner
-- inlines them into the calling statement: EXPLAIN shows the tables and indexes they
-- read, and they cost no function call. They take the caller's privileges (not SECURITY
-- DEFINER).
-- depends: 0003_messages 0006_blobs

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A conversation's messages that reader_did may read: it is an active member, the
-- message was sent after it joined (seq > joined_seq), and the message has not expired
-- (an expired message is gone even before maintenance deletes it). No row for anyone
-- who is not an active member. The membership is one look-up on members_pkey (a scalar
-- subquery, run once), so a caller's seq range stays a range on messages_pkey.
CREATE FUNCTION readable_messages(convo_id uuid, reader_did text)
RETURNS SETOF messages
LANGUAGE sql
STABLE
AS $$
    SELECT m.*
    FROM messages AS m
    WHERE
        m.convo_id = readable_messages.convo_id
        AND m.seq > (
            SELECT a.joined_seq
            FROM members AS a
            WHERE
                a.convo_id = readable_messages.convo_id
                AND a.member_did = readable_messages.reader_did
                AND a.left_at IS NULL
        )
        AND (m.expires_at IS NULL OR m.expires_at > now())
$$;

-- How many of the messages member_did may read are unread: application messages from
-- others after its read marker (after_seq). Commits and the member's own messages never
-- count; a member who has left has none.
CREATE FUNCTION unread_messages(convo_id uuid, member_did text, after_seq bigint)
RETURNS TABLE (unread_count bigint)
LANGUAGE sql
STABLE
AS $$
    SELECT count(*)
    FROM readable_messages(unread_messages.convo_id, unread_messages.member_did) AS m
    WHERE
        m.seq > unread_messages.after_seq
        AND m.message_type = 'app'
        AND m.sender_did <> unread_messages.member_did
$$;

-- The copy of a blob that reader_did may read: its own upload, or one bound to a
-- conversation it is an active member of. Several uploaders may hold the same content:
-- the reader's own copy comes first, then the oldest, so the answer is stable. No row
-- when no copy is readable. One range on blobs_pkey (the CID's copies).
CREATE FUNCTION readable_blob(cid text, reader_did text)
RETURNS SETOF blobs
LANGUAGE sql
STABLE
AS $$
    SELECT b.*
    FROM blobs AS b
    WHERE
        b.cid = readable_blob.cid
        AND (
            b.uploader_did = readable_blob.reader_did
            OR EXISTS (
                SELECT 1
                FROM members AS m
                WHERE
                    m.convo_id = b.convo_id
                    AND m.member_did = readable_blob.reader_did
                    AND m.left_at IS NULL
            )
        )
    ORDER BY b.uploader_did = readable_blob.reader_did DESC, b.created_at, b.uploader_did
    LIMIT 1
$$;
