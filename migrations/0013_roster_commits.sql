-- Commits own the roster. A removal by commit records the commit's seq on what it ended
-- (left_seq, on members and member devices), so the removed reader can still read up to
-- and including the commit that removed it (that is how its MLS client learns it is
-- out) and nothing after. A member asks to leave with a proposal stored in the
-- conversation's order (message type 'proposal'); its seq is kept on the members row
-- (leave_requested_seq) until a removal commit fulfils it. What each roster commit
-- changed is kept (roster_commits), so a commit retried after a lost acknowledgement
-- gets the stored result. The read rule is remade on the new columns, still written
-- once: read_range says which seqs a reader may read, readable_messages reads them.
-- depends: 0008_read_rules 0012_member_devices

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A proposal (a member's request to leave) is stored in order like any message. The
-- check is replaced by a wider one: every stored row passed the stricter check, so the
-- new one is added NOT VALID (new rows are checked; no scan of the table is needed,
-- nor run under this migration's lock).
-- squawk-ignore ban-drop-constraint
ALTER TABLE messages DROP CONSTRAINT messages_message_type_check;

ALTER TABLE messages ADD CONSTRAINT messages_message_type_check
CHECK (message_type IN ('app', 'commit', 'proposal')) NOT VALID;

-- The seq of the commit that removed the member (NULL while active, and for a member
-- removed without a commit: they read nothing more), and of the member's request to
-- leave (NULL unless they asked, cleared when they rejoin). The columns are new and
-- empty, so the checks hold on every row without a scan worth deferring.
ALTER TABLE members
ADD COLUMN left_seq bigint,
ADD COLUMN leave_requested_seq bigint,
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT members_left_seq_when_left
CHECK (left_seq IS NULL OR (left_at IS NOT NULL AND left_seq > joined_seq)),
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT members_leave_requested_after_join
CHECK (leave_requested_seq IS NULL OR leave_requested_seq > joined_seq);

-- A conversation's active admins: the rule that the group keeps an admin is decided on
-- them, locked (sequence_message with lock_admins, change_member) and counted
-- (remove_members, request_leave). Few rows per conversation, however many members.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX members_active_admins ON members (convo_id, member_did)
WHERE role = 'admin' AND left_at IS NULL;

-- The seq of the commit that removed the device from the group (NULL while in it, and
-- when it left with a member removed without a commit).
ALTER TABLE member_devices
ADD COLUMN left_seq bigint,
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT member_devices_left_seq_when_left
CHECK (left_seq IS NULL OR (left_at IS NOT NULL AND left_seq > joined_seq));

-- What a roster commit changed, one row per commit that added or removed devices: a
-- retry of the same commit returns it. Goes with its commit (and so with its
-- conversation).
CREATE TABLE roster_commits (
    convo_id uuid NOT NULL,
    seq bigint NOT NULL,
    members_joined bigint NOT NULL CHECK (members_joined >= 0),
    devices_joined bigint NOT NULL CHECK (devices_joined >= 0),
    members_left bigint NOT NULL CHECK (members_left >= 0),
    devices_left bigint NOT NULL CHECK (devices_left >= 0),
    -- A retried commit reads its row by it.
    PRIMARY KEY (convo_id, seq),
    FOREIGN KEY (convo_id, seq) REFERENCES messages (convo_id, seq) ON DELETE CASCADE
);

-- Which seqs reader_did (and, when given, its device reader_device_id) may read:
-- after_seq < seq <= through_seq (NULL through_seq: no upper bound). A member reads
-- after its join; a member removed by a commit reads up to and including that commit.
-- A device reads within its member's range and its own: after the commit that added it
-- (or its member's join), up to the commit that removed it. No row for anyone else: a
-- DID that never was a member, a member removed without a commit, a device never in
-- the group or that left with such a member. One probe of members_pkey and one of
-- member_devices_pkey.
CREATE FUNCTION read_range(convo_id uuid, reader_did text, reader_device_id uuid)
RETURNS TABLE (after_seq bigint, through_seq bigint)
LANGUAGE sql
STABLE
AS $$
    SELECT
        greatest(a.joined_seq, d.joined_seq) AS after_seq,
        least(a.left_seq, d.left_seq) AS through_seq
    FROM members AS a
    LEFT JOIN member_devices AS d
        ON
            a.convo_id = d.convo_id
            AND a.member_did = d.member_did
            AND d.device_id = read_range.reader_device_id
    WHERE
        a.convo_id = read_range.convo_id
        AND a.member_did = read_range.reader_did
        AND (a.left_at IS NULL OR a.left_seq IS NOT NULL)
        AND (
            read_range.reader_device_id IS NULL
            OR (d.device_id IS NOT NULL AND d.left_at IS NULL)
            OR d.left_seq IS NOT NULL
        )
$$;

-- A conversation's messages that reader_did (its device reader_device_id, when given)
-- may read: within read_range, unexpired (an expired message is gone even before
-- maintenance deletes it). The range is two scalar subqueries, each run once, so a
-- caller's seq range stays a range on messages_pkey.
CREATE FUNCTION readable_messages(convo_id uuid, reader_did text, reader_device_id uuid)
RETURNS SETOF messages
LANGUAGE sql
STABLE
AS $$
    SELECT m.*
    FROM messages AS m
    WHERE
        m.convo_id = readable_messages.convo_id
        AND m.seq > (
            SELECT r.after_seq
            FROM read_range(
                readable_messages.convo_id,
                readable_messages.reader_did,
                readable_messages.reader_device_id
            ) AS r
        )
        AND m.seq <= coalesce(
            (
                SELECT r.through_seq
                FROM read_range(
                    readable_messages.convo_id,
                    readable_messages.reader_did,
                    readable_messages.reader_device_id
                ) AS r
            ),
            9223372036854775807
        )
        AND (m.expires_at IS NULL OR m.expires_at > now())
$$;

-- Unread counts read through the new rule; a member removed by a commit keeps the count
-- of what it had not read up to its removal.
CREATE OR REPLACE FUNCTION unread_messages(convo_id uuid, member_did text, after_seq bigint)
RETURNS TABLE (unread_count bigint)
LANGUAGE sql
STABLE
AS $$
    SELECT count(*)
    FROM readable_messages(unread_messages.convo_id, unread_messages.member_did, NULL) AS m
    WHERE
        m.seq > unread_messages.after_seq
        AND m.message_type = 'app'
        AND m.sender_did <> unread_messages.member_did
$$;

-- The two-argument rule it replaces: only the layer's statements called it.
-- squawk-ignore ban-drop-function
DROP FUNCTION readable_messages(uuid, text);
