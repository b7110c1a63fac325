"""Marks shared by the test files (``tests/`` is on ``sys.path`` under pytest's default import mode)."""

import pytest


def real_data(available: bool, reason: str):
    """Mark a test ``real_data`` and skip it, saying why, where that data is absent."""

    def mark(test):
        return pytest.mark.real_data(pytest.mark.skipif(not available, reason=reason)(test))

    return mark
