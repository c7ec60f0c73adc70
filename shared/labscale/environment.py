"""Process environment changes that last for one block (what a library reads from os.environ)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in os.environ for the block, the previous values restored after it."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
