"""What the whole test run (tests/ and chat/tests/) shares."""

import gc

import pytest

PYTHON_DEFAULT_THRESHOLDS = gc.get_threshold()  # read before any test module imports config.asgi


@pytest.fixture(scope="session", autouse=True)
def python_default_garbage_collection():
    """The tests collect garbage as Python does by default.

    Importing config/asgi.py tunes the collector for a server process: it collects rarely. In a
    test run, what one test leaves to the collector (the tasks of an event loop it closed) would
    then be collected, and reported as an error, during a later test that checks its logs.
    """
    gc.set_threshold(*PYTHON_DEFAULT_THRESHOLDS)
