"""Keep TensorFlow's native log lines off the terminal.

TensorFlow and its CUDA probe write notes straight to file descriptor 2 from C++
("oneDNN custom operations are on", "Could not find cuda drivers", "E0000 ...
failed call to cuInit"). They look like crashes and tell a user nothing. Some are
written before TensorFlow reads TF_CPP_MIN_LOG_LEVEL, so the environment alone
cannot silence them: while TensorFlow loads, descriptor 2 goes to /dev/null and
Python's own sys.stderr keeps writing to the terminal.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

#: Set before TensorFlow is imported; a value the user set is kept.
TENSORFLOW_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}


def tensorflow_env() -> None:
    """Ask TensorFlow for errors only, and Keras and matplotlib to keep their config and caches in
    animeface's cache rather than ~/.keras and ~/.config, in the environment they read when imported."""
    from .models import cache_dir

    homes = {"KERAS_HOME": str(cache_dir() / "keras"), "MPLCONFIGDIR": str(cache_dir() / "matplotlib")}
    for name, value in {**TENSORFLOW_ENV, **homes}.items():
        os.environ.setdefault(name, value)


@contextmanager
def native_stderr_silenced():
    """Inside the block, what native code writes to descriptor 2 is dropped; sys.stderr still
    reaches the terminal (it is moved to a copy of the original descriptor for the while)."""
    tensorflow_env()
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a test harness or an IDE: leave it be
        python_on_fd2 = False
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    if python_on_fd2:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding,
                               errors=python_stderr.errors)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
