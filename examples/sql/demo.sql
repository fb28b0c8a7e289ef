-- name: database_exists
-- Whether the server has a database of that name (the demo creates its own).
SELECT (
    EXISTS (
        SELECT 1
        FROM pg_database
        WHERE datname = %(name)s
    )
) AS database_exists;
