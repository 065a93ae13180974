"""The curated public API of trustwire.detect."""

from __future__ import annotations

import trustwire.detect
from trustwire.detect import alerts, detectors, model


def test_detect_reexports_exactly_its_modules_public_names() -> None:
    exported = trustwire.detect.__all__
    assert len(exported) == len(set(exported))
    modules = (alerts, detectors, model)
    assert set(exported) == {name for module in modules for name in module.__all__}
    for module in modules:
        for name in module.__all__:
            assert getattr(trustwire.detect, name) is getattr(module, name)


def test_detect_all_lists_constants_then_classes_then_functions_each_sorted() -> None:
    exported = trustwire.detect.__all__
    constants = [n for n in exported if n.isupper()]
    classes = [n for n in exported if n[0].isupper() and not n.isupper()]
    functions = [n for n in exported if n[0].islower()]
    assert exported == sorted(constants) + sorted(classes) + sorted(functions)
