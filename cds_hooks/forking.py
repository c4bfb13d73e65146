"""Starting a per-process part afresh in a forked child (a gunicorn worker of a preloaded app).

``os.register_at_fork`` hooks cannot be removed, so the hook holds its object weakly: an object
that is dropped (tests build many) is not kept alive by its hook, which then does nothing.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from functools import partial
from typing import TypeVar

_T = TypeVar("_T")


def after_fork_in_child(owner: _T, restart: Callable[[_T], object]) -> None:
    """Call ``restart(owner)`` in every child forked from now on, while ``owner`` is alive."""
    os.register_at_fork(after_in_child=partial(_restart_if_alive, weakref.ref(owner), restart))


def _restart_if_alive(ref: weakref.ReferenceType[_T], restart: Callable[[_T], object]) -> None:
    owner = ref()
    if owner is not None:
        restart(owner)
