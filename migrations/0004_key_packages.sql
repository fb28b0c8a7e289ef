-- Key packages: single-use MLS KeyPackages (and last-resort ones) published by their owners.

CREATE TABLE key_packages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_did did NOT NULL,
    -- An MLS cipher suite code held in range by its CHECK, not a counter.
    -- squawk-ignore prefer-bigint-over-smallint
    cipher_suite smallint NOT NULL CHECK (cipher_suite BETWEEN 1 AND 7),
    key_data bytea NOT NULL CHECK (octet_length(key_data) BETWEEN 1 AND 65536),
    -- The KeyPackageRef (RFC 9420 section 5.2): a hash, so it is indexed in place of the
    -- data, whose large values would overflow a btree row.
    key_package_ref bytea NOT NULL UNIQUE
    CHECK (octet_length(key_package_ref) BETWEEN 16 AND 64),
    is_last_resort boolean NOT NULL DEFAULT FALSE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz,
    consumed_by_did did,
    CHECK ((consumed_at IS NULL) = (consumed_by_did IS NULL)),
    CHECK (NOT (is_last_resort AND consumed_at IS NOT NULL)),
    CHECK (expires_at > created_at)
);
