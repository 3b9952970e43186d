"""Test-only faults for a batch saga, loaded into a real worker with ``--include
tests.integration.saga_faults`` (never imported by the package).

``CRD_TEST_SAGA_FAIL_STEP=n``: step n's corpus writes fail after its first shard was
written (an infrastructure error: redis ConnectionError), on every attempt, so the step
fails for good half-applied after the retry policy.
``CRD_TEST_SAGA_FAIL_COMPENSATION=1``: the compensation's writes fail the same way (after
its first), so the compensation fails for good half-done.
``CRD_TEST_SAGA_SLOW_STEP=n`` (+ ``CRD_TEST_SAGA_SIGNAL=path``): after step n's first
shard write, touch the file and sleep, so the test can kill the worker mid-step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.signals import task_prerun
from redis.exceptions import ConnectionError as RedisConnectionError

from redundancy import names
from redundancy.corpus.service import Corpus

_active = {"fail": False, "slow": False, "writes": 0}
_original = Corpus._write


def _step(env: str) -> int | None:
    value = os.environ.get(env)
    return int(value) if value else None


@task_prerun.connect(weak=False)
def _arm(sender: Any = None, args: Any = None, **_: Any) -> None:
    name = getattr(sender, "name", None)
    step = args[1] if name == names.BATCH_SAGA_STEP else None
    _active["fail"] = (step is not None and step == _step("CRD_TEST_SAGA_FAIL_STEP")) or (
        name == names.BATCH_SAGA_COMPENSATE
        and bool(os.environ.get("CRD_TEST_SAGA_FAIL_COMPENSATION"))
    )
    _active["slow"] = step is not None and step == _step("CRD_TEST_SAGA_SLOW_STEP")
    _active["writes"] = 0


def _faulty_write(self: Corpus, shard: int, entries: Any) -> Any:
    if _active["writes"] >= 1 and _active["fail"]:
        raise RedisConnectionError("injected fault: the corpus Redis is unreachable")
    result = _original(self, shard, entries)
    _active["writes"] += 1
    if _active["slow"] and _active["writes"] == 1:
        Path(os.environ["CRD_TEST_SAGA_SIGNAL"]).write_text(str(os.getpid()))
        time.sleep(120)
    return result


Corpus._write = _faulty_write  # type: ignore[method-assign]
