DROP FUNCTION readable_blob(text, text);
DROP FUNCTION unread_messages(uuid, text, bigint);
DROP FUNCTION readable_messages(uuid, text);
