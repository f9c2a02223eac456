"""A realistic 600-rule policy, and the raw pycasbin peer that decides with it.

The rules are Vault's default policy plus tenant-specific rules of a CRM with
many teams: twelve roles across five tenants, field by field, per action and
purpose, with some deny rules (deny overrides allow). The same rules are
loaded into raw pycasbin (``enforce`` per field, as a naive integration does)
and into Vault (compiled decisions).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import casbin

__all__ = ["BENCH_ROLES", "RAW_USER", "build_policies", "raw_enforcer", "rule_lines"]

POLICIES = Path(__file__).resolve().parents[1] / "policies"
RAW_USER = "crm"  # the actor whose decisions are measured (role crm_service in acme)

#: The shapes' readers (bench/shapes.py): a role that reads 3 fields of a customer, and
#: one that reads every field, the sensitive national_id included (for a legal
#: obligation, which needs no consent). No generated rule names them.
BENCH_ROLES = {
    "bench_contacts": ("account_management",
                       ("customers.full_name", "customers.email", "customers.phone")),
    "bench_full": ("legal_obligation", ("customers.*",)),
}
_ROLES = ("crm_service", "sales_rep", "support_agent", "marketing", "analyst", "dpo",
          "sales_manager", "billing", "fraud_analyst", "partner_portal", "field_service",
          "collections")
_TENANTS = ("*", "acme", "globex", "initech", "umbrella")
_FIELDS = ("full_name", "email", "phone", "postal_address", "birth_date", "national_id",
           "country", "preferred_language", "marketing_segment", "device_info", "support_notes")
_ACTIONS = ("read", "read_masked", "write", "search", "delete", "export")
_PURPOSES = ("account_management", "customer_support", "sales_outreach", "marketing",
             "analytics", "legal_obligation", "dsar_fulfilment")


def rule_lines(total: int = 600, *, seed: int = 11) -> list[str]:
    """Vault's default ``p`` rules, then generated ones up to ``total`` ``p`` rules."""
    default = [line.strip() for line in (POLICIES / "policy.csv").read_text().splitlines()
               if line.strip().startswith("p,")]
    default += [f"p, {role}, *, {obj}, read, {purpose}, allow"
                for role, (purpose, objs) in BENCH_ROLES.items() for obj in objs]
    seen = {tuple(t.strip() for t in line.split(",")) for line in default}
    rng = random.Random(seed)
    lines = list(default)
    while len(lines) < total:
        rule = ("p", rng.choice(_ROLES), rng.choice(_TENANTS), f"customers.{rng.choice(_FIELDS)}",
                rng.choice(_ACTIONS), rng.choice(_PURPOSES),
                "deny" if rng.random() < 0.05 else "allow")
        if rule[1] == "crm_service" and rule[6] == "deny":
            continue  # keep the measured actor's view as the default policy defines it
        if rule not in seen:
            seen.add(rule)
            lines.append(", ".join(rule))
    return lines


def build_policies(target: Path, total: int = 600) -> Path:
    """A copy of ``policies/`` whose policy.csv holds ``total`` rules."""
    shutil.copytree(POLICIES, target)
    (target / "policy.csv").write_text("\n".join(rule_lines(total)) + "\n")
    return target


def raw_enforcer(total: int = 600) -> casbin.Enforcer:
    """Raw pycasbin with the same model and rules, the actor holding crm_service in acme."""
    enforcer = casbin.Enforcer(str(POLICIES / "model.conf"), enable_log=False)
    rules = [[t.strip() for t in line.split(",")[1:]] for line in rule_lines(total)]
    enforcer.add_policies(rules)
    for user, role in (("crm", "crm_service"), ("sally", "sales_rep"), ("sam", "support_agent")):
        enforcer.add_grouping_policy(f"user:{user}", role, "acme")
    return enforcer
