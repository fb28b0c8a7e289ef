"""`make demo` (examples/demo.py), end to end: on a database that does not exist yet it
creates it, migrates it and walks through a chat of real mls-rs clients, one per
device, saying what each step did; run again on the same database it walks through a
chat of its own. And the demo stops with an error when a device cannot decrypt."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import mls_rs_uniffi as mls_rs
import psycopg
import pytest
from psycopg import sql

from catbird_db import Message

# The demo creates and migrates databases: each test gets one of its own to start from
# (tests/conftest.py).
pytestmark = pytest.mark.fresh_database

_ROOT = Path(__file__).resolve().parent.parent
_DEMO = _ROOT / "examples" / "demo.py"


@pytest.fixture
def demo_url(raw: psycopg.Connection[Any], database_url: str) -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards."""
    name = f"catbird_demo_{os.getpid()}_{uuid4().hex[:8]}"
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        raw.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_demo(*command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(_ROOT)
    return subprocess.run(
        [sys.executable, *command],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def seq_of(pattern: str, out: str) -> int:
    """The seq the demo printed where `pattern` (with one `(\\d+)`) matches."""
    found = re.search(pattern, out)
    assert found, pattern
    return int(found.group(1))


def test_the_demo_creates_migrates_and_walks_through_an_mls_chat(demo_url: str) -> None:
    name = urlsplit(demo_url).path.lstrip("/")
    result = run_demo("examples/demo.py", "--database-url", demo_url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"created database {name}" in out
    assert "applied migration 0001_" in out
    assert "connected: PostgreSQL" in out
    steps = [f"== {n}." for n in range(1, 10)]
    assert [out.index(step) for step in steps] == sorted(out.index(step) for step in steps)
    # Each device joined from its own welcome and decrypted what the others sent.
    for device in ("alice's phone", "bob's phone", "bob's laptop", "carol's tablet"):
        assert f"{device} decrypted seq " in out, device
    for device in ("bob's phone", "bob's laptop", "carol's tablet"):
        assert f"{device} joined from its own welcome" in out, device
    assert "carol's tablet fetched seq " in out  # by its id
    assert "a listener heard app seq " in out
    # The race: the loser was refused, followed the winner's commit, retried at its epoch.
    won = seq_of(r"carol's commit is seq (\d+): epoch (\d+)", out)
    assert "bob's laptop lost the race: EpochConflict" in out
    assert f"bob's laptop seq {won}: a commit" in out
    assert re.search(r"bob's laptop retried at epoch \d+: seq \d+", out)
    # The removed device read up to and including its removal, mls-rs told it so, and
    # its send was refused.
    removal = seq_of(r"her removal commit is seq (\d+)", out)
    assert f"bob's laptop seq {removal}: the commit that removed it (mls-rs: REMOVED)" in out
    assert f"bob's laptop saw its removal: it read up to seq {removal}" in out
    assert "refused, NotAMember" in out
    # The leave: carol's proposal, fulfilled by bob's commit.
    asked = seq_of(r"carol proposed her own removal at epoch \d+: seq (\d+)", out)
    assert f"alice's phone seq {asked}: a proposal" in out
    fulfilled = seq_of(r"bob's commit \(seq (\d+), epoch \d+ -> \d+\) fulfilled carol's leave", out)
    assert f"carol's tablet seq {fulfilled}: the commit that removed it (mls-rs: REMOVED)" in out
    assert "by its CID and decrypted the photo" in out
    assert "bob read up to seq " in out
    assert "unread left" in out
    assert "== 9. a new device joins by an external commit" in out
    assert "refused, the policy is 'none'" in out
    assert "refused, strangers never join this way" in out
    assert re.search(r"bob's desktop joins from the GroupInfo of epoch 1: its external commit", out)
    assert out.rstrip().endswith("demo finished")
    assert result.stderr == ""


def test_the_demo_runs_again_on_its_own_database(demo_url: str) -> None:
    first = run_demo("examples/demo.py", "--database-url", demo_url)
    assert first.returncode == 0, first.stdout + first.stderr
    again = run_demo("-m", "examples.demo", "--database-url", demo_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created database" not in again.stdout
    assert "applied migration" not in again.stdout
    # A chat of its own: new users, a new conversation from seq 1, and bob lists only it
    # (the demo checks that, and would exit 1).
    runs = [re.findall(r"run (\w+): its users", r.stdout) for r in (first, again)]
    assert len(runs[0]) == len(runs[1]) == 1
    assert runs[0] != runs[1]
    assert "her add commit is seq 1: epoch 0 -> 1" in again.stdout
    assert "bob's conversations: 'Catbird launch'" in again.stdout
    assert "demo finished" in again.stdout


def load_demo() -> ModuleType:
    """examples/demo.py as a module, as the subprocess runs it."""
    spec = importlib.util.spec_from_file_location("catbird_demo", _DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_device_that_cannot_decrypt_stops_the_demo() -> None:
    """No database: two mls-rs clients, and stored messages as the layer returns them,
    one with a byte changed and one stored at another epoch than its MLS epoch."""
    demo = load_demo()
    alice = demo.Device("alice", "did:plc:alice-test", "phone")
    bob = demo.Device("bob", "did:plc:bob-test", "phone")
    convo = uuid4()
    alice.group = alice.client.create_group(convo.bytes)
    output = alice.group.add_members([mls_rs.Message.from_bytes(bob.key_package())])
    alice.group.process_incoming_message(output.commit_message)
    bob.group = bob.client.join_group(None, output.welcome_message).group
    chat = demo.Chat(convo, [alice, bob], (alice, bob))

    def stored(seq: int, text: bytes, epoch_shift: int = 0, tamper: bool = False) -> Message:
        out = chat.seal(alice, text)
        chat.sent[out.message_id] = text
        data = out.ciphertext[:-1] + bytes([out.ciphertext[-1] ^ tamper])
        now = datetime.now(UTC)
        return Message(
            convo, seq, out.message_id, alice.did, "app", 1 + epoch_shift, data, now, None
        )

    assert chat.process(bob, stored(2, b"hello")) == "decrypted seq 2: 'hello'"
    with pytest.raises(demo.DemoFailure, match="bob's phone could not process seq 3"):
        chat.process(bob, stored(3, b"hello again", tamper=True))
    with pytest.raises(demo.DemoFailure, match="seq 4 is stored at its MLS epoch 1"):
        chat.process(bob, stored(4, b"from another epoch", epoch_shift=1))
