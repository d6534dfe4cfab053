"""Class downsampling and holdout splits follow their documented, seeded rules."""
import pytest

from guie.data.records import Record
from guie.data.sampling import holdout_split, sample_classes
from guie.errors import GuieError


def make(counts: dict[str, int], domain: str = "d") -> list[Record]:
    return [Record(f"/img/{label}/{i}.png", label, domain) for label, n in counts.items() for i in range(n)]


def test_keeps_classes_with_most_images_first():
    recs = make({"a": 5, "b": 9, "c": 2, "d": 7})
    kept, report = sample_classes(recs, 2)
    assert {r.label for r in kept} == {"b", "d"}
    assert report.classes_kept == 2 and report.images_kept == 16


def test_smaller_class_sets_are_nested_in_larger_ones():
    recs = make({f"c{i}": 3 + (i % 4) for i in range(40)})
    sets = [{r.class_key for r in sample_classes(recs, n, seed=7)[0]} for n in (5, 10, 20)]
    assert sets[0] < sets[1] < sets[2]


def test_tie_break_is_seeded():
    recs = make({f"c{i}": 4 for i in range(30)})
    a = {r.label for r in sample_classes(recs, 5, seed=1)[0]}
    assert a == {r.label for r in sample_classes(recs, 5, seed=1)[0]}
    assert a != {r.label for r in sample_classes(recs, 5, seed=2)[0]}


def test_min_and_max_per_class():
    recs = make({"a": 1, "b": 3, "c": 10})
    kept, report = sample_classes(recs, None, min_per_class=2, max_per_class=4)
    counts = {label: sum(r.label == label for r in kept) for label in "abc"}
    assert counts == {"a": 0, "b": 3, "c": 4}
    assert report.images_capped == 6 and report.classes_eligible == 2


def test_same_label_in_two_domains_is_two_classes():
    recs = make({"x": 3}, "shop") + make({"x": 2}, "street")
    kept, report = sample_classes(recs, None)
    assert report.classes_kept == 2


def test_too_many_classes_says_what_the_data_has():
    with pytest.raises(GuieError, match=r"--classes 9 .* 3 classes"):
        sample_classes(make({"a": 3, "b": 3, "c": 3}), 9)


def test_holdout_keeps_every_class_in_training():
    recs = make({"a": 1, "b": 2, "c": 10})
    train, held = holdout_split(recs, 0.2, seed=0)
    assert sorted(train + held) == list(range(len(recs)))
    held_labels = [recs[i].label for i in held]
    assert held_labels.count("a") == 0 and held_labels.count("b") == 1 and held_labels.count("c") == 2
    train_labels = {recs[i].label for i in train}
    assert train_labels == {"a", "b", "c"}
