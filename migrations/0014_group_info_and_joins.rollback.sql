-- Back to 0013: no GroupInfo, no external-join policy, no creation digest.

DROP TABLE group_infos;

ALTER TABLE conversations
DROP COLUMN external_joins,
DROP COLUMN creation_digest;
