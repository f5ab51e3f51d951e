"""What the whole test run (tests/ and chat/tests/) shares."""

import gc
import sys

import pytest

# Read before any test module imports config.asgi, which tunes them for a server process.
PYTHON_DEFAULT_THRESHOLDS = gc.get_threshold()
PYTHON_DEFAULT_SWITCH_INTERVAL = sys.getswitchinterval()


@pytest.fixture(scope="session", autouse=True)
def python_defaults():
    """The tests run with Python's own garbage collection and thread switching.

    Importing config/asgi.py tunes the interpreter for a server process (config/interpreter.py):
    it collects rarely. In a test run, what one test leaves to the collector (the tasks of an
    event loop it closed) would then be collected, and reported as an error, during a later
    test that checks its logs. And the tests' timings stay those of Python's own thread
    switching, which is what they were written against.
    """
    gc.set_threshold(*PYTHON_DEFAULT_THRESHOLDS)
    sys.setswitchinterval(PYTHON_DEFAULT_SWITCH_INTERVAL)
