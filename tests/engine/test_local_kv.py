"""The local decoder's store of finished rows' keys and values (no model: tensors stand in)."""
import pytest

torch = pytest.importorskip("torch")

from culturepark.engine.backends.local.kv import PrefixStore  # noqa: E402


def _kv(ids: list[int]) -> list[tuple]:
    """Two layers whose 'keys' are the token ids themselves, so a slice shows what it kept."""
    t = torch.tensor(ids, dtype=torch.float32).view(1, 1, -1, 1)
    return [(t, -t), (t * 2, -t * 2)]


def test_the_longest_stored_beginning_is_found_and_cut_to_what_matches():
    store = PrefixStore(max_tokens=100)
    store.put([1, 2, 3, 4, 5], _kv([1, 2, 3, 4, 5]))
    store.put([1, 2, 9, 9], _kv([1, 2, 9, 9]))
    n, kv, _ = store.longest_prefix([1, 2, 3, 4, 7, 8])
    assert n == 4 and kv[0][0].flatten().tolist() == [1, 2, 3, 4] and kv[1][1].flatten().tolist() == [-2, -4, -6, -8]
    n, _, _ = store.longest_prefix([1, 2, 3, 4, 5])  # the whole entry: its last token must still be read
    assert n == 4
    assert store.longest_prefix([7, 1, 2])[:2] == (0, None)


@pytest.mark.parametrize("entries,limit,kept", [
    ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 6, 2),   # the least recently used goes first
    ([[1] * 7], 6, 0),                             # longer than the whole store: not kept
])
def test_the_store_stays_within_its_token_budget(entries, limit, kept):
    store = PrefixStore(max_tokens=limit)
    for ids in entries:
        store.put(ids, _kv(ids))
    assert len(store.entries) == kept and store.tokens <= limit
    assert store.tokens == sum(len(e.ids) for e in store.entries.values())


def test_a_turn_replaces_the_entry_it_continued_so_a_conversation_holds_one():
    store = PrefixStore(max_tokens=100)
    store.put([1, 2, 3], _kv([1, 2, 3]))
    _, _, source = store.longest_prefix([1, 2, 3, 4])
    store.put([1, 2, 3, 4, 5, 6], _kv([1, 2, 3, 4, 5, 6]), replaces=source)
    assert len(store.entries) == 1 and store.tokens == 6
    assert store.longest_prefix([1, 2, 3, 4, 5, 6, 7])[0] == 6


def test_an_entry_shared_only_in_its_beginning_is_kept_for_the_agent_it_belongs_to():
    """Two agents' views of one conversation share their opening: the main contact's turn may
    begin from the delegate's entry, but must not drop it (the delegate still needs it)."""
    store = PrefixStore(max_tokens=1000)
    delegate = list(range(100))
    store.put(delegate, _kv(delegate))
    contact = list(range(40)) + [500 + i for i in range(50)]
    n, _, source = store.longest_prefix(contact)
    assert n == 40
    store.put(contact, _kv(contact), replaces=source)
    assert len(store.entries) == 2 and store.longest_prefix([*delegate, 7])[0] == 100
