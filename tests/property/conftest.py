"""Hypothesis profiles of the property suite.

``ci`` (the default): a bounded, derandomized run, the same examples on every machine.
``fuzz``: thousands of examples per property, signals up to 2**20 samples; selected by
``DIFFX_FUZZ=1`` (``scripts/fuzz.py`` sets it), which also widens the strategies;
``DIFFX_FUZZ_EXAMPLES`` sets its examples per property (default 2000).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.property.strategies import FUZZ

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
FUZZ_EXAMPLES = int(os.environ.get("DIFFX_FUZZ_EXAMPLES", 2000))
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, **_COMMON)
settings.load_profile("fuzz" if FUZZ else "ci")
