-- Devices: in MLS each device of a user is its own client (its own leaf, key packages
-- and welcome). A device's id is a UUID its client chooses, so it can put the id in its
-- MLS credential before it first talks to the server.
-- depends: 0001_conversations

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE devices (
    -- User-scoped: the owner leads the key, so a user's devices are one range.
    owner_did did NOT NULL,
    id uuid NOT NULL,
    -- The device's MLS signature public key, when its client gives it: up to 4 KiB
    -- (post-quantum signature keys run to 2.6 KB).
    signature_key bytea CHECK (octet_length(signature_key) BETWEEN 1 AND 4096),
    registered_at timestamptz NOT NULL DEFAULT now(),
    -- Set once by revoke_device, never cleared: a revoked device stays revoked.
    revoked_at timestamptz,
    -- list_devices and the cap of register_device: a user's devices; revoke_device.
    PRIMARY KEY (owner_did, id),
    -- A device id belongs to one user: register_device names another user's id
    -- AlreadyExists.
    CONSTRAINT devices_id_key UNIQUE (id)
);
