"""The second process of the policy-propagation figure (run by ``python -m bench``).

Opens the same vault, and for each line ``add`` or ``remove`` on stdin adds or
removes a deny rule (through the audited ``v.policy`` service), then prints
the wall-clock time at which the change was committed.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import structlog

from vault import Vault, VaultSettings

RULE = ("crm_service", "acme", "customers.support_notes", "read", "account_management", "deny")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = VaultSettings.build(**json.loads(sys.argv[1]))
    with Vault.open(settings=settings) as vault:
        print("ready", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "add":
                vault.policy.add_rule(*RULE)
            elif command == "remove":
                vault.policy.remove_rule(*RULE)
            else:
                break
            print(f"{time.time():.6f}", flush=True)


if __name__ == "__main__":
    main()
