-- Members: who belongs to which conversation, since which seq, and what they have read.
-- depends: 0001_conversations

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE members (
    convo_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    member_did did NOT NULL,
    role text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    joined_at timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: set when the member leaves or is removed, cleared when they rejoin.
    left_at timestamptz,
    -- The member sees only messages with seq > joined_seq.
    joined_seq bigint NOT NULL DEFAULT 0 CHECK (joined_seq >= 0),
    -- Read marker: unread counts are derived from it, never stored.
    last_read_seq bigint NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    -- get_membership, list_members, remove_member, access_of, and the ON CONFLICT of
    -- add_member and add_members_with_commit; delete_conversation's cascade finds a
    -- conversation's members by its leading convo_id.
    PRIMARY KEY (convo_id, member_did),
    CHECK (last_read_seq >= joined_seq)
);

-- list_conversations: a member's active conversations. The membership guards
-- (EXISTS ... m.member_did = actor AND m.left_at IS NULL) probe it or the primary key,
-- whichever the planner finds cheaper.
CREATE INDEX members_active_by_member ON members (member_did, convo_id)
WHERE left_at IS NULL;
