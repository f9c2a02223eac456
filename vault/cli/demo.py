"""``vault demo``: realistic customers across EU, US-CA and CN, every role's view.

The data is made by Faker with the customers' own locales; e-mail addresses
use reserved ``example.*`` domains and phone numbers are valid for their
country (checked by phonenumbers, as Vault itself checks them).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import phonenumbers
from faker import Faker
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from vault.config import VaultSettings
from vault.errors import AccessDenied, ConfigError
from vault.facade import Vault
from vault.types import Actor

__all__ = ["DEMO_ACTORS", "DEMO_MARKER", "make_customers", "run_demo"]

TENANT = "demo"
#: The file ``vault demo`` leaves in a vault it made (it adds data to no other).
DEMO_MARKER = "DEMO-VAULT"


@dataclass(frozen=True)
class DemoActor:
    id: str
    role: str
    purpose: str


DEMO_ACTORS = (
    DemoActor("crm-backend", "crm_service", "account_management"),
    DemoActor("sally", "sales_rep", "sales_outreach"),
    DemoActor("sam", "support_agent", "customer_support"),
    DemoActor("maya", "marketing", "marketing"),
    DemoActor("andy", "analyst", "analytics"),
    DemoActor("dana", "dpo", "dsar_fulfilment"),
    DemoActor("colin", "compliance_officer", "security"),
    DemoActor("ada", "admin", "security"),
)

# (jurisdiction, ISO country, Faker locale, e-mail domain, language)
_MARKETS = (
    ("EU", "DE", "de_DE", "example.de", "de"),
    ("EU", "FR", "fr_FR", "example.fr", "fr"),
    ("EU", "ES", "es_ES", "example.es", "es"),
    ("US-CA", "US", "en_US", "example.com", "en"),
    ("CN", "CN", "zh_CN", "example.cn", "zh"),
)
_SEGMENTS = ("prospect", "new", "regular", "vip", "churn_risk", "dormant")
_NOTES = (
    "Asked about invoice copies.", "Prefers contact by e-mail.", "Upgraded plan last month.",
    "Reported a login problem; resolved.", "Requested a callback about delivery.",
)


def _phone(rng: random.Random, region: str) -> str:
    example = phonenumbers.example_number_for_type(
        region, phonenumbers.PhoneNumberType.MOBILE
    )
    if example is None:
        raise ConfigError(f"no example mobile number for {region}")
    national = str(example.national_number)
    for _ in range(50):
        tail = "".join(rng.choice("0123456789") for _ in range(4))
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")
        if phonenumbers.is_valid_number(candidate):
            return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


def _national_id(fake: Faker, rng: random.Random, country: str) -> str:
    if country == "CN":
        return str(fake.ssn())
    if country == "US":
        return f"{rng.randint(100, 665)}{rng.randint(10, 99)}{rng.randint(1000, 9999)}"
    return "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(10))


def make_customers(count: int, *, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """``count`` realistic customers as (jurisdiction, record) pairs."""
    rng = random.Random(seed)
    fakers = {locale: Faker(locale) for _, _, locale, _, _ in _MARKETS}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed + i)
    people = []
    for n in range(count):
        jurisdiction, country, locale, domain, language = _MARKETS[n % len(_MARKETS)]
        fake = fakers[locale]
        name = fake.name()
        user = Faker("en_US").user_name() if locale == "zh_CN" else fake.user_name()
        people.append((jurisdiction, {
            "full_name": name,
            "email": f"{user}.{n}@{domain}",
            "phone": _phone(rng, country),
            "postal_address": fake.address(),
            "birth_date": fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat(),
            "national_id": _national_id(fake, rng, country),
            "country": country,
            "preferred_language": language,
            "marketing_segment": rng.choice(_SEGMENTS),
            "device_info": {"os": rng.choice(["iOS 18", "Android 15", "Windows 11", "macOS 15"]),
                            "app": f"crm-app/{rng.randint(1, 5)}.{rng.randint(0, 9)}"},
            "support_notes": rng.choice(_NOTES),
        }))
    return people


def run_demo(
    settings: VaultSettings,
    *,
    customers: int,
    seed: int,
    out: Console,
    progress_factory: Callable[[], Progress],
) -> bool:
    """Initialise (if needed), load, show every role's view, verify. Returns verify's ``ok``.

    Raises:
        ConfigError: the folder holds a vault that ``vault demo`` did not create (the
            demo never adds fake customers and consents to a real vault).
    """
    marker = settings.home / DEMO_MARKER
    if settings.resolved_key_file.exists():
        if not marker.exists():
            raise ConfigError(f"{settings.home} holds a vault that `vault demo` did not "
                              "create; the demo adds fake customers only to its own "
                              "(use another --home)")
        vault = Vault.open(settings=settings)
        out.print(f"using the demo vault in {settings.home}")
    else:
        vault = Vault.init(settings=settings)
        marker.write_text("made by `vault demo`: fake customers only\n")
        out.print(f"[green]initialised[/] a new vault in {settings.home}")
    with vault:
        for actor in DEMO_ACTORS:
            vault.roles.assign(actor.id, actor.role, tenant=TENANT)
        crm = Actor("crm-backend", TENANT)
        people = make_customers(customers, seed=seed)
        first_id = ""
        run_tag = uuid.uuid4().hex[:8]  # fresh subject ids when the demo runs again
        subjects: list[tuple[str, str]] = []  # (subject id, jurisdiction)
        with progress_factory() as bar:
            task = bar.add_task("encrypting and storing customers", total=len(people))
            batch = 200
            for start in range(0, len(people), batch):
                chunk = people[start : start + batch]
                by_jurisdiction: dict[str, list[tuple[str, dict[str, Any]]]] = {}
                for n, (jurisdiction, record) in enumerate(chunk, start):
                    by_jurisdiction.setdefault(jurisdiction, []).append(
                        (f"demo-{run_tag}-{n}", record))
                for jurisdiction, pairs in by_jurisdiction.items():
                    ids = vault.put_many(crm, "customers", [r for _, r in pairs],
                                         purpose="account_management",
                                         subject_ids=[sid for sid, _ in pairs],
                                         jurisdiction=jurisdiction)
                    subjects.extend((sid, jurisdiction) for sid, _ in pairs)
                    if not first_id and jurisdiction == "CN":
                        first_id = ids[0]
                        shown = (pairs[0][0], jurisdiction)  # it consents, below
                        subjects.remove(shown)
                        subjects.insert(0, shown)
                bar.update(task, advance=len(chunk))
        if not first_id:
            first_id = vault.put(crm, "customers", people[0][1], purpose="account_management",
                                 subject_id=f"demo-{run_tag}-0", jurisdiction=people[0][0])
            subjects.insert(0, (f"demo-{run_tag}-0", people[0][0]))
        _record_consents(vault, subjects, out, progress_factory)
        _show_views(vault, first_id, out)
        found = vault.find(Actor("sam", TENANT), "customers", purpose="customer_support",
                           email=people[4][1]["email"].upper())
        out.print(f"support found {len(found)} customer(s) by e-mail through the blind index "
                  "(search is case-insensitive; the store never decrypts to search)")
        report = vault.audit.verify()
        colour = "green" if report.ok else "red"
        out.print(f"[{colour}]audit log {'verified' if report.ok else 'DAMAGED'}[/]: "
                  f"{report.entries} entries in {report.chains} chains")
        return report.ok


def _record_consents(vault: Vault, subjects: list[tuple[str, str]], out: Console,
                     progress_factory: Callable[[], Progress]) -> None:
    """Every second customer consents to marketing through the sign-up form; every
    tenth Californian sends a Global Privacy Control signal."""
    crm = Actor("crm-backend", TENANT)
    consenting = subjects[::2]
    gpc = [sid for sid, j in subjects if j == "US-CA"][::10]
    with progress_factory() as bar:
        task = bar.add_task("recording consents", total=len(consenting) + len(gpc))
        for sid, _ in consenting:
            vault.consent.grant(sid, "marketing", tenant=TENANT, notice_id="marketing",
                                notice_version=1, method="web_form", source="demo-signup",
                                actor=crm)
            bar.update(task, advance=1)
        for sid in gpc:
            vault.consent.apply_gpc(sid, source="demo-gateway", tenant=TENANT, actor=crm)
            bar.update(task, advance=1)
    rows = {(r["regime"], r["purpose"]): r for r in
            vault.consent.summary(tenant=TENANT, actor=crm).rows}
    described = ", ".join(
        f"{regime} {rows[(regime, 'marketing')]['granted']}"
        for regime in ("gdpr", "ccpa", "pipl") if (regime, "marketing") in rows)
    out.print(f"marketing consents recorded ({described}): opt-in under GDPR and PIPL, so "
              f"the marketing role sees only those customers there; {len(gpc)} GPC "
              "opt-out(s) of sale and sharing from Californians")


def _show_views(vault: Vault, record_id: str, out: Console) -> None:
    schema = vault.schemas.get("customers")
    views: list[dict[str, str]] = []
    for actor in DEMO_ACTORS:
        try:
            record = vault.get(Actor(actor.id, TENANT), "customers", record_id,
                               purpose=actor.purpose)
            view = {name: _short(value) for name, value in record.data.items()}
        except AccessDenied:
            view = {}
        views.append(view)
    out.print("[bold]One customer, as each role sees it[/] (the purpose of each read below "
              "the role)")
    # Two tables of four roles each, so the output fits a normal terminal.
    for start in range(0, len(DEMO_ACTORS), 4):
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("field", style="bold", no_wrap=True)
        for actor in DEMO_ACTORS[start:start + 4]:
            table.add_column(f"{actor.role}\n[dim]{actor.purpose}[/]", no_wrap=True,
                             overflow="ellipsis", max_width=24)
        for name in schema.field_names:
            table.add_row(name, *[v.get(name, "[dim]—[/]") for v in views[start:start + 4]])
        out.print(table)
    out.print("[dim]— withheld: the field is absent from the result, never an empty string. "
              "Every read above, allowed or denied, is in the audit log.[/]")


def _short(value: Any) -> str:
    text = str(value).replace("\n", ", ")
    return text if len(text) <= 22 else text[:21] + "…"
