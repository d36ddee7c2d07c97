"""describe_changes: one line per changed field, named the way a user reads it."""

from aimmat.plan.reasons import describe_changes


def test_changed_added_and_removed_fields():
    old = {"profile": {"fmax_ev_per_a": 0.05, "kind": "emt"}, "structure_sha256": "a" * 64, "gone": 1}
    new = {"profile": {"fmax_ev_per_a": 0.02, "kind": "emt"}, "structure_sha256": "b" * 64, "new": None}
    assert describe_changes(old, new) == [
        "gone 1 -> (absent)",  # sorted by field
        "new (absent) -> null",
        "profile.fmax_ev_per_a 0.05 -> 0.02",
        "input structure sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb",  # hashes shortened, label from LABELS
    ]


def test_pseudopotential_files_are_named():
    lines = describe_changes({"pseudos": {"Si.UPF": "1" * 32}}, {"pseudos": {"Si.UPF": "2" * 32}})
    assert lines == [f"pseudopotential Si.UPF md5 {'1' * 32} -> {'2' * 32}"]


def test_equal_inputs_say_nothing():
    d = {"a": {"b": [1, 2]}, "c": "x"}
    assert describe_changes(d, dict(d)) == []
