"""Start-up (issue 16): ``vault --help``, ``--version`` and a group's help import no
database, policy, crypto or web code (SQLAlchemy, Casbin, cryptography, FastAPI,
structlog), so they answer in a few hundred milliseconds (figures: bench/startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "casbin", "cryptography", "fastapi", "alembic", "structlog",
         "vault.facade", "vault._kernel")

_PROBE = """
import json, sys
sys.argv = ["vault", *json.loads(sys.argv[1])]
from vault.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = {heavy}
print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}),
      file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], ["keys", "--help"],
                                  ["audit", "report", "--help"], ["retention", "--help"]])
def test_light_commands_import_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    """The command succeeds and none of the heavy modules was imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(PYTHONPATH=str(REPO), VAULT_HOME=str(tmp_path / "none"))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=repr(list(HEAVY))), json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}, done.stderr
    assert done.stdout.strip()


def test_import_vault_is_light_and_names_load_on_use() -> None:
    """``import vault`` loads no heavy module; ``vault.Vault`` loads the library."""
    code = (f"import sys, vault; before = [m for m in {HEAVY!r} if m in sys.modules]; "
            "vault.Vault; from vault import Actor, errors; "
            "print(before, 'vault.facade' in sys.modules, sorted(vault.__all__) == "
            "sorted(n for n in vault.__all__ if hasattr(vault, n)))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    assert done.stdout.strip() == "[] True True"
