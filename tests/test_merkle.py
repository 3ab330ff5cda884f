"""The tx_root Merkle tree: domain-separated leaves and nodes, and inclusion proofs."""
import hashlib

from hypothesis import given, strategies as st

from crmledger.ledger.merkle import EMPTY_ROOT, inclusion_proof, merkle_root, verify_inclusion

_ids = st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), min_size=1, max_size=70)


def _h(b):
    return hashlib.sha256(b).digest()


def test_small_trees_by_hand():
    a, b, c = "aa" * 32, "bb" * 32, "cc" * 32
    la, lb, lc = (_h(b"\x00" + bytes.fromhex(x)) for x in (a, b, c))
    assert merkle_root([a]) == la.hex()
    assert merkle_root([a, b]) == _h(b"\x01" + la + lb).hex()
    assert merkle_root([a, b, c]) == _h(b"\x01" + _h(b"\x01" + la + lb) + lc).hex()
    assert merkle_root([]) == EMPTY_ROOT


def test_a_leaf_is_not_a_node():
    # domain separation: the root of [x, y] is not a leaf of any tree
    a, b = "aa" * 32, "bb" * 32
    assert merkle_root([merkle_root([a, b])]) != merkle_root([a, b])


@given(_ids, st.data())
def test_every_leaf_has_a_proof_and_only_it(ids, data):
    root = merkle_root(ids)
    i = data.draw(st.integers(0, len(ids) - 1))
    proof = inclusion_proof(ids, i)
    assert verify_inclusion(ids[i], i, len(ids), proof, root)
    assert not verify_inclusion("ee" * 32, i, len(ids), proof, root)
    if len(ids) > 1:
        j = data.draw(st.integers(0, len(ids) - 1).filter(lambda j: ids[j] != ids[i]))
        assert not verify_inclusion(ids[i], j, len(ids), proof, root) or ids[j] == ids[i]
        assert not verify_inclusion(ids[i], i, len(ids), proof[:-1], root)


@given(_ids)
def test_order_matters(ids):
    if len(set(ids)) > 1:
        assert merkle_root(ids) != merkle_root(list(reversed(ids))) or ids == list(reversed(ids))
