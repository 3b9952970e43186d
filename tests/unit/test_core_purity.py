"""``redundancy.core`` must import with Celery, Redis and Kombu unavailable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_imports_with_io_libraries_blocked():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"celery", "redis", "kombu", "confluent_kafka", "amqp"}:
                    raise ImportError(f"blocked: {name}")
                return None
        sys.meta_path.insert(0, Block())
        import redundancy.core as core
        print(core.analyze("Same. Same.").redundancy_score)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"celery", "redis", "kombu"})
        assert not loaded, loaded
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.5"


def test_blocking_really_blocks():
    # The guard above is only meaningful if the block works: importing celery must fail.
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] == 'celery': raise ImportError(n)\n"
        "sys.meta_path.insert(0, B())\n"
        "import redundancy.tasks\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "ImportError" in out.stderr
