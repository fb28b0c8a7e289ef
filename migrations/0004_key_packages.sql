-- Key packages: single-use MLS KeyPackages (and last-resort ones) published by their owners.

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE key_packages (
    -- claim_key_package and delete_expired_key_packages update or delete by it.
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_did did NOT NULL,
    -- An MLS cipher suite code held in range by its CHECK, not a counter.
    -- squawk-ignore prefer-bigint-over-smallint
    cipher_suite smallint NOT NULL CHECK (cipher_suite BETWEEN 1 AND 7),
    -- The KeyPackage as clients publish it: an MLSMessage (version mls10, wire format
    -- mls_key_package = 5) whose KeyPackage has this row's cipher suite.
    key_data bytea NOT NULL CHECK (
        octet_length(key_data) BETWEEN 9 AND 65536
        AND substring(key_data FROM 1 FOR 6) = '\x000100050001'::bytea
        AND get_byte(key_data, 6) * 256 + get_byte(key_data, 7) = cipher_suite
    ),
    -- The KeyPackageRef (RFC 9420 section 5.2): a hash, so it is indexed in place of the
    -- data, whose large values would overflow a btree row. Its size is the suite's hash.
    key_package_ref bytea NOT NULL UNIQUE CHECK (
        octet_length(key_package_ref)
        = CASE WHEN cipher_suite IN (1, 2, 3) THEN 32 WHEN cipher_suite = 7 THEN 48 ELSE 64 END
    ),
    -- A last-resort package is handed out when no other is left, and is never consumed.
    is_last_resort boolean NOT NULL DEFAULT FALSE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz,
    -- Who claimed it: the adder, not the owner.
    consumed_by_did did,
    -- When an add_members_with_commit of its claimer used it, and in which conversation.
    -- Last-resort packages, which serve many adds, are never marked.
    used_at timestamptz,
    used_in_convo uuid,
    -- How many adds used it, counted under the row lock by add_members_with_commit: this
    -- check judges the newest row version, so of concurrent adds with one regular package
    -- only one commits (the others fail whole, InvalidInput).
    -- squawk-ignore prefer-bigint-over-smallint
    use_count smallint NOT NULL DEFAULT 0,
    CONSTRAINT key_packages_used_once CHECK (use_count BETWEEN 0 AND 1),
    CHECK ((consumed_at IS NULL) = (consumed_by_did IS NULL)),
    CHECK ((use_count = 0) = (used_at IS NULL) AND (used_at IS NULL) = (used_in_convo IS NULL)),
    CHECK (used_at IS NULL OR (consumed_at IS NOT NULL AND NOT is_last_resort)),
    CHECK (NOT (is_last_resort AND consumed_at IS NOT NULL)),
    CHECK (expires_at > created_at)
);

-- claim_key_package, get_key_package, count_key_packages: an owner's unconsumed packages
-- of one suite, regular ones oldest first, last-resort ones newest first.
CREATE INDEX key_packages_available
ON key_packages (owner_did, cipher_suite, is_last_resort, created_at, id)
WHERE consumed_at IS NULL;

-- delete_expired_key_packages: unconsumed packages past their expiry.
CREATE INDEX key_packages_expiry ON key_packages (expires_at)
WHERE consumed_at IS NULL;

-- delete_expired_key_packages: consumed packages past the retention period.
CREATE INDEX key_packages_consumed ON key_packages (consumed_at)
WHERE consumed_at IS NOT NULL;
