-- name: list_indexes
-- Every index on the application's tables (yoyo's bookkeeping tables left out), and
-- whether it is unique: the plan tests hold each one to a statement whose plan uses it.
SELECT
    x.indexrelid::regclass::text AS index_name,
    x.indrelid::regclass::text AS table_name,
    x.indisunique AS is_unique
FROM pg_index AS x
INNER JOIN pg_class AS t ON x.indrelid = t.oid
WHERE
    t.relnamespace = current_schema()::regnamespace
    AND t.relname !~ 'yoyo'
ORDER BY index_name;
