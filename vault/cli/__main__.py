"""``python -m vault.cli``: the ``vault`` command (as the ``vault`` script)."""

from vault.cli import main

main()
