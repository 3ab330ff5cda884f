"""The state root's accumulator: updating it by a block's changes gives the sum of the
entries of the state after them, however the entries are summed."""
from hypothesis import given, settings, strategies as st

from crmledger.ledger import stateroot

_state = st.dictionaries(st.binary(min_size=1, max_size=6), st.binary(max_size=6), max_size=12)


def _root_of(state: dict) -> int:
    return sum(stateroot.entry_hash(k, v) for k, v in state.items()) & stateroot.MASK


@settings(max_examples=200, deadline=None)
@given(_state, _state, st.booleans())
def test_update_matches_the_sum_over_the_new_state(before, after, use_known):
    changes = [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after))]
    known = {k: stateroot.entry(k, v) for k, v in before.items()} if use_known else None
    added: dict = {}
    acc = stateroot.update(_root_of(before), changes, known, added)
    assert acc == _root_of(after)
    assert added == {k: stateroot.entry(k, v) for k, v in after.items() if before.get(k) != v}


def test_many_entries_carry_across_every_limb():
    entries = [b"\xff" * stateroot.NBYTES] * 1000
    assert stateroot._total(entries) == 1000 * ((1 << stateroot.BITS) - 1)
