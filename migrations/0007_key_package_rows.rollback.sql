DROP VIEW key_package_rows;
