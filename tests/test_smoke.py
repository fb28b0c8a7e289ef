from catbird_db import Database, conversations, members

from support import ALICE, BOB


async def test_smoke(db: Database) -> None:
    c = await conversations.create_conversation(db, creator_did=ALICE, cipher_suite=1, title="hi")
    m = await members.add_member(db, c.id, BOB, actor_did=ALICE)
    assert m.member_did == BOB
    page = await members.list_members(db, c.id, actor_did=BOB)
    assert [x.member_did for x in page.items] == sorted([ALICE, BOB])
    lst = await conversations.list_conversations(db, actor_did=BOB)
    assert lst.items[0].id == c.id
