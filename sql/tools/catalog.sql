-- name: describe_types
-- Types by OID, for `catbird-db check` and `explain`: the name, and the base type of a
-- domain or the element type of an array (zero when there is none).
SELECT
    t.oid AS type_oid,
    t.typname AS type_name,
    t.typtype AS kind,
    t.typcategory AS category,
    t.typbasetype AS base_oid,
    t.typelem AS element_oid
FROM pg_type AS t
WHERE t.oid = any(%(type_oids)s::oid[])
ORDER BY t.oid;

-- name: describe_origin_columns
-- The table columns that described result fields come from (libpq's ftable and
-- ftablecol), and whether each is NOT NULL: `catbird-db check` decides nullability by it.
SELECT
    a.attrelid AS table_oid,
    a.attnum AS column_number,
    c.relname AS table_name,
    a.attname AS column_name,
    a.attnotnull AS not_null
FROM pg_attribute AS a
INNER JOIN pg_class AS c ON a.attrelid = c.oid
WHERE (a.attrelid, a.attnum) IN (
    SELECT
        wanted.table_oid,
        wanted.column_number
    FROM unnest(%(table_oids)s::oid[], %(column_numbers)s::smallint[]) AS wanted (
        table_oid, column_number
    )
)
ORDER BY a.attrelid, a.attnum;
