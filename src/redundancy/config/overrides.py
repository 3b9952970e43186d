"""The ops override module: Celery settings in a Python module, loaded only when named.

``CELERY_CONFIG_MODULE`` names it, as a module on the import path (``myco.celeryconfig``)
or as a file (``./celeryconfig.py``, ``/etc/crd/celeryconfig.py``). Nothing else is
imported: no ``celeryconfig.py`` is picked up from the working directory, and a module
name is looked up with the working directory taken off ``sys.path`` (unless
``PYTHONPATH`` lists it), so running ``crd batch`` inside an untrusted folder runs no
code from it.

Every lowercase setting of the module wins over the package's; ``broker_url`` and
``result_backend`` also reach ``redundancy.config.Settings`` (as ``CELERY_BROKER_URL``
and ``CELERY_RESULT_BACKEND`` would), so the embedded decision, ``crd worker`` and the
job store see the broker the module names. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from redundancy.errors import ConfigurationError

OVERRIDE_ENV = "CELERY_CONFIG_MODULE"

SETTINGS_FROM_MODULE = {
    "broker_url": "celery_broker_url",
    "result_backend": "celery_result_backend",
}
"""Celery settings of the module that ``Settings`` takes in place of their variables."""

_lock = threading.RLock()
_loading = False
_loaded: dict[str, dict[str, Any]] = {}


def override_name() -> str | None:
    """The value of ``CELERY_CONFIG_MODULE``, or None when unset or blank."""
    return os.environ.get(OVERRIDE_ENV, "").strip() or None


def _is_path(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or "/" in name


def _explicit_paths() -> set[str]:
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return {str(Path(e).resolve()) for e in entries if e}


@contextlib.contextmanager
def _without_working_directory() -> Iterator[None]:
    """``sys.path`` minus the entries that mean "the working directory" (``''`` of
    ``python -c``, the folder ``python -m`` or ``celery -A`` put first), unless
    ``PYTHONPATH`` lists that folder explicitly."""
    cwd = str(Path.cwd().resolve())
    keep = cwd in _explicit_paths()
    saved = list(sys.path)
    sys.path[:] = [
        p for p in saved if keep or (p not in ("", ".") and str(Path(p).resolve()) != cwd)
    ]
    try:
        yield
    finally:
        sys.path[:] = saved


def _import(name: str) -> ModuleType:
    if _is_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"{OVERRIDE_ENV}={name}: no such file")
        spec = importlib.util.spec_from_file_location("celeryconfig_override", path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"{OVERRIDE_ENV}={name}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    with _without_working_directory():
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # the module exists but imports something missing
            raise ConfigurationError(
                f"{OVERRIDE_ENV}={name}: no module named {exc.name!r} on the import path "
                "(the working directory is not searched: give a file path such as "
                "./celeryconfig.py, or add the folder to PYTHONPATH)"
            ) from None


def _settings_of(module: ModuleType) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(module).items()
        if k.islower() and not k.startswith("_") and not callable(v)
        and not isinstance(v, ModuleType)
    }  # fmt: skip


def celery_overrides() -> dict[str, Any]:
    """The lowercase settings of the module named by ``CELERY_CONFIG_MODULE`` (``{}``
    when unset), imported once per process and name.

    While the module itself is being imported (it may build settings from the package),
    this returns ``{}`` instead of importing it again.
    """
    global _loading
    name = override_name()
    if name is None:
        return {}
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if _loading:
            return {}
        _loading = True
        try:
            module = _import(name)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(
                f"{OVERRIDE_ENV}={name}: the module failed to load: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            _loading = False
        _loaded[name] = settings = _settings_of(module)
        return settings


def settings_fields() -> dict[str, Any]:
    """``Settings`` fields the override module sets (``broker_url`` -> ``celery_broker_url``)."""
    overrides = celery_overrides()
    return {
        field: overrides[key] for key, field in SETTINGS_FROM_MODULE.items() if key in overrides
    }


def forget() -> None:
    """Drop the imported settings (tests change ``CELERY_CONFIG_MODULE`` between cases)."""
    with _lock:
        _loaded.clear()


__all__ = ["OVERRIDE_ENV", "celery_overrides", "forget", "override_name", "settings_fields"]
