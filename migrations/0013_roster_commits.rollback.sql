-- Back to reads by active members only. The read rule of 0008 comes back; a member or
-- device removed by a commit then reads nothing more, as one removed without a commit.
-- A stored request to leave becomes an application message: the older schema knows no
-- proposals, and deleting it would leave a gap in the conversation's seqs (clients tell
-- MLS messages apart by their content, not by this column).
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

CREATE OR REPLACE FUNCTION unread_messages(convo_id uuid, member_did text, after_seq bigint)
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

DROP FUNCTION readable_messages(uuid, text, uuid);

DROP FUNCTION read_range(uuid, text, uuid);

DROP TABLE roster_commits;

ALTER TABLE member_devices DROP COLUMN left_seq;

DROP INDEX members_active_admins;

ALTER TABLE members DROP COLUMN left_seq, DROP COLUMN leave_requested_seq;

UPDATE messages SET message_type = 'app'
WHERE message_type = 'proposal';

ALTER TABLE messages DROP CONSTRAINT messages_message_type_check;

ALTER TABLE messages ADD CONSTRAINT messages_message_type_check
CHECK (message_type IN ('app', 'commit'));
