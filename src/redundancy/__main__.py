"""``python -m redundancy`` is the ``crd`` command."""

from redundancy.cli import main

main()
