"""Site policy: what a site changes in the bundled rules, as data (``CDS_HOOKS_POLICY``).

Why: sites differ in what they want to be told (an info card one clinic finds useful is
noise to another), but some findings must reach every clinician whatever a site prefers.
A policy may turn rules off, set a rule's severity per order modality, override rule
parameters and choose the card grouping, for everyone or per tenant (JWT ``tenant`` claim)
or issuer (``iss``); the never-list in the rules folder (``never.yaml``) cannot be turned
off or demoted, and a policy that tries is refused before the service starts.

The policy's revision (a hash of its normalised form) is stamped on every decision beside
the rules revision, so the log says which customisation produced each card.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from . import yamlfile
from .cards import GROUPINGS
from .rulebook import MODALITIES, SEVERITIES, SEVERITY_RANK, Rulebook, RuleError, load_rulebook

NEVER_FILE = "never.yaml"
_SECTION_KEYS = {"rules", "parameters", "card_grouping", "repeat_critical_cards"}
_TOP_KEYS = _SECTION_KEYS | {"tenants", "issuers"}
_RULE_KEYS = {"enabled", "severity"}


class PolicyError(ValueError):
    """A policy file is wrong or asks for something not allowed; one line, naming the file."""


@dataclass(frozen=True)
class RulePolicy:
    """What a policy says about one rule: off, and/or a severity per modality."""

    enabled: bool | None = None  # None: this layer does not say (a lower layer decides)
    severity: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySection:
    """One layer of a policy (the whole site, one tenant or one issuer)."""

    rules: Mapping[str, RulePolicy] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    card_grouping: str | None = None
    repeat_critical_cards: bool | None = None

    def merged(self, over: PolicySection) -> PolicySection:
        """This layer with ``over`` laid on top (a tenant over the site)."""
        rules = dict(self.rules)
        for rule_id, item in over.rules.items():
            base = rules.get(rule_id, RulePolicy())
            rules[rule_id] = RulePolicy(
                enabled=item.enabled if item.enabled is not None else base.enabled,
                severity={**base.severity, **item.severity},
            )
        return PolicySection(
            rules=rules,
            parameters={**self.parameters, **over.parameters},
            card_grouping=over.card_grouping or self.card_grouping,
            repeat_critical_cards=(
                over.repeat_critical_cards if over.repeat_critical_cards is not None else self.repeat_critical_cards
            ),
        )


@dataclass(frozen=True)
class Policy:
    """A whole policy file: the site section and the per-tenant and per-issuer sections."""

    site: PolicySection = field(default_factory=PolicySection)
    tenants: Mapping[str, PolicySection] = field(default_factory=dict)
    issuers: Mapping[str, PolicySection] = field(default_factory=dict)
    source: str = "(no policy)"

    @property
    def revision(self) -> str:
        """Hash of the normalised policy: the same rules in another layout or order hash alike."""
        text = json.dumps(normalise(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def section_for(self, tenant: str | None = None, issuer: str | None = None) -> PolicySection:
        """The effective section of one call: site, then its issuer's, then its tenant's."""
        section = self.site
        if issuer is not None and issuer in self.issuers:
            section = section.merged(self.issuers[issuer])
        if tenant is not None and tenant in self.tenants:
            section = section.merged(self.tenants[tenant])
        return section

    def sections(self) -> dict[tuple[str | None, str | None], PolicySection]:
        """Every distinct effective section, keyed by (tenant, issuer); (None, None) is the site's."""
        keys: list[tuple[str | None, str | None]] = [(None, None)]
        keys += [(None, iss) for iss in self.issuers]
        keys += [(tenant, None) for tenant in self.tenants]
        keys += [(tenant, iss) for tenant in self.tenants for iss in self.issuers]
        return {key: self.section_for(*key) for key in keys}


NO_POLICY = Policy()


# -- reading ---------------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    """Read and shape-check a policy file (not yet checked against a rulebook: see ``check_policy``)."""
    where = str(path)
    try:
        raw = yamlfile.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{where}: cannot be read ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        # Position and problem only: the parser's own message quotes the offending line.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise PolicyError(f"{where}: not valid YAML{at} ({getattr(exc, 'problem', None) or 'unreadable'})") from None
    return parse_policy(raw if raw is not None else {}, where)


def parse_policy(raw: Any, where: str = "policy") -> Policy:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: a policy is a map (rules, parameters, card_grouping, tenants, issuers)")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_TOP_KEYS)})")
    site = _section({k: v for k, v in raw.items() if k in _SECTION_KEYS}, where)
    layers: dict[str, dict[str, PolicySection]] = {}
    for kind in ("tenants", "issuers"):
        entries = raw.get(kind) or {}
        if not isinstance(entries, dict):
            raise PolicyError(f"{where}: '{kind}' maps each {kind[:-1]} to a policy section")
        layers[kind] = {}
        for name, body in entries.items():
            if not isinstance(body, dict) or set(body) - _SECTION_KEYS:
                raise PolicyError(f"{where}: {kind[:-1]} '{name}' may set only {sorted(_SECTION_KEYS)}")
            layers[kind][str(name)] = _section(body, f"{where} {kind[:-1]} '{name}'")
    return Policy(site, layers["tenants"], layers["issuers"], where)


def _section(raw: Mapping[str, Any], where: str) -> PolicySection:
    rules: dict[str, RulePolicy] = {}
    entries = raw.get("rules") or {}
    if not isinstance(entries, dict):
        raise PolicyError(f"{where}: 'rules' maps rule ids to {{enabled, severity}}")
    for rule_id, body in entries.items():
        if body is False:  # `CI-ELDERLY: false` (YAML also reads `off` as false)
            body = {"enabled": False}
        if not isinstance(body, dict) or set(body) - _RULE_KEYS:
            raise PolicyError(f"{where}: rule {rule_id} may set only 'enabled' and 'severity'")
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise PolicyError(f"{where}: rule {rule_id}: 'enabled' must be true or false")
        severity = body.get("severity") or {}
        if not isinstance(severity, dict):
            raise PolicyError(f"{where}: rule {rule_id}: 'severity' maps modalities to severities")
        for modality, level in severity.items():
            if modality not in MODALITIES or level not in SEVERITIES:
                raise PolicyError(
                    f"{where}: rule {rule_id}: severity must map {list(MODALITIES)} to {list(SEVERITIES)}, "
                    f"got {modality}: {level}"
                )
        rules[str(rule_id)] = RulePolicy(enabled, dict(severity))
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PolicyError(f"{where}: 'parameters' maps parameter names to numbers")
    grouping = raw.get("card_grouping")
    if grouping is not None and grouping not in GROUPINGS:
        raise PolicyError(f"{where}: card_grouping must be one of {list(GROUPINGS)}, got {grouping!r}")
    repeat = raw.get("repeat_critical_cards")
    if repeat is not None and not isinstance(repeat, bool):
        raise PolicyError(f"{where}: repeat_critical_cards must be true or false")
    return PolicySection(rules, dict(parameters), grouping, repeat)


def normalise(policy: Policy) -> dict[str, Any]:
    """The policy as plain sorted data: what its revision hashes and ``policy check`` compares."""

    def section(s: PolicySection) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rules = {
            rule_id: {
                **({"enabled": item.enabled} if item.enabled is not None else {}),
                **({"severity": dict(sorted(item.severity.items()))} if item.severity else {}),
            }
            for rule_id, item in sorted(s.rules.items())
        }
        if rules := {k: v for k, v in rules.items() if v}:
            out["rules"] = rules
        if s.parameters:
            out["parameters"] = dict(sorted(s.parameters.items()))
        if s.card_grouping is not None:
            out["card_grouping"] = s.card_grouping
        if s.repeat_critical_cards is not None:
            out["repeat_critical_cards"] = s.repeat_critical_cards
        return out

    data = section(policy.site)
    for kind, layer in (("tenants", policy.tenants), ("issuers", policy.issuers)):
        if layer:
            data[kind] = {name: section(s) for name, s in sorted(layer.items())}
    return data


# -- the never-list --------------------------------------------------------------------------


@dataclass(frozen=True)
class NeverEntry:
    rule_id: str
    modalities: tuple[str, ...]  # where it may not be demoted; every modality when not narrowed
    source: str


def load_never_list(rules_dir: Path) -> dict[str, NeverEntry]:
    """The rules folder's never-list; the bundled one when a folder has none (a copied
    rules folder must not lose the protection by leaving the file out)."""
    from .config import bundled_rules_dir

    path = rules_dir / NEVER_FILE
    if not path.is_file():
        path = bundled_rules_dir() / NEVER_FILE
    raw = yamlfile.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = {}
    for item in raw.get("never") or ():
        modalities = tuple(item.get("modalities") or MODALITIES)
        if not set(modalities) <= set(MODALITIES):
            raise RuleError(f"{path}: {item.get('rule')}: unknown modality in {list(modalities)}")
        entries[str(item["rule"])] = NeverEntry(str(item["rule"]), modalities, str(item.get("source", "")))
    return entries


# -- checking and applying -------------------------------------------------------------------


def check_policy(policy: Policy, rules_dir: Path, base_parameters: Mapping[str, Any] | None = None) -> None:
    """Refuse (PolicyError, naming the rule) what the rulebook or the never-list does not allow."""
    bundled = load_rulebook(rules_dir, base_parameters)
    never = load_never_list(rules_dir)
    specs = parameter_specs(rules_dir)
    layers = [("", policy.site)]
    layers += [(f" tenant '{n}'", s) for n, s in policy.tenants.items()]
    layers += [(f" issuer '{n}'", s) for n, s in policy.issuers.items()]
    for label, section in layers:
        where = f"{policy.source}{label}"
        for rule_id, item in section.rules.items():
            rule = bundled.by_id.get(rule_id)
            if rule is None:
                raise PolicyError(f"{where}: unknown rule {rule_id}")
            protected = never.get(rule_id)
            if protected is not None and item.enabled is False:
                raise PolicyError(f"{where}: rule {rule_id} is on the never-list and cannot be turned off")
            for modality, level in item.severity.items():
                current = [v.severity[modality] for v in rule.variants if modality in v.severity]
                if not current:
                    raise PolicyError(f"{where}: rule {rule_id} never fires on {modality} orders; nothing to re-grade")
                highest = max(current, key=SEVERITY_RANK.__getitem__)
                if protected and modality in protected.modalities and SEVERITY_RANK[level] < SEVERITY_RANK[highest]:
                    raise PolicyError(
                        f"{where}: rule {rule_id} is on the never-list and cannot be demoted "
                        f"on {modality} orders ({highest} -> {level})"
                    )
        for name, value in section.parameters.items():
            _check_parameter(where, name, value, specs)


def parameter_specs(rules_dir: Path) -> dict[str, Mapping[str, Any]]:
    path = rules_dir / "parameters.yaml"
    raw = yamlfile.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    return dict((raw or {}).get("parameters", {}))


def _check_parameter(where: str, name: str, value: Any, specs: Mapping[str, Mapping[str, Any]]) -> None:
    """Same names as rules/parameters.yaml, a number of the default's kind, within any bounds
    the file gives (``min``, ``max``, ``allowed``); never negative (they are windows and limits)."""
    spec = specs.get(name)
    if spec is None:
        raise PolicyError(f"{where}: unknown parameter '{name}' (see rules/parameters.yaml)")
    default = spec.get("default")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise PolicyError(f"{where}: parameter '{name}' must be a number, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
        raise PolicyError(f"{where}: parameter '{name}' must be a whole number, got {value!r}")
    if value < 0 and not (isinstance(default, (int, float)) and default < 0):
        raise PolicyError(f"{where}: parameter '{name}' must not be negative, got {value!r}")
    allowed = spec.get("allowed")
    if allowed is not None and value not in allowed:
        raise PolicyError(f"{where}: parameter '{name}' must be one of {allowed}, got {value!r}")
    if ("min" in spec and value < spec["min"]) or ("max" in spec and value > spec["max"]):
        raise PolicyError(
            f"{where}: parameter '{name}' must lie in {spec.get('min')}..{spec.get('max')}, got {value!r}"
        )


def apply_section(
    rules_dir: Path, section: PolicySection, base_parameters: Mapping[str, Any] | None = None
) -> Rulebook:
    """The rulebook as this policy section wants it: parameters overridden (rules recompiled),
    rules turned off left out (not evaluated, so not counted as evaluated either), and
    severities re-graded per modality on every variant of the rule."""
    rulebook = load_rulebook(rules_dir, {**(base_parameters or {}), **section.parameters})
    if not section.rules:
        return rulebook
    kept = []
    for rule in rulebook.rules:
        item = section.rules.get(rule.id)
        if item is not None and item.enabled is False:
            continue
        if item is not None and item.severity:
            regraded = tuple(
                replace(v, severity={m: item.severity.get(m, s) for m, s in v.severity.items()}) for v in rule.variants
            )
            rule = replace(rule, variants=regraded)
        kept.append(rule)
    variants = {v.key: v for r in kept for v in r.variants}
    return replace(rulebook, rules=tuple(kept), by_id={r.id: r for r in kept}, variants=variants)


def describe_changes(policy: Policy, rules_dir: Path, base_parameters: Mapping[str, Any] | None = None) -> list[str]:
    """One line per thing the policy changes against the bundled defaults (``policy check``)."""
    bundled = load_rulebook(rules_dir, base_parameters)
    layers = [("", policy.site)]
    layers += [(f"tenant {n}: ", s) for n, s in sorted(policy.tenants.items())]
    layers += [(f"issuer {n}: ", s) for n, s in sorted(policy.issuers.items())]
    lines = []
    for prefix, section in layers:
        for rule_id, item in sorted(section.rules.items()):
            if item.enabled is False:
                lines.append(f"{prefix}{rule_id}: turned off (no cards; not evaluated)")
                continue
            rule = bundled.by_id[rule_id]
            for modality, level in sorted(item.severity.items()):
                before = sorted(
                    {v.severity[modality] for v in rule.variants if modality in v.severity},
                    key=SEVERITY_RANK.__getitem__,
                )
                if before != [level]:
                    lower = SEVERITY_RANK[level] < max(SEVERITY_RANK[b] for b in before)
                    higher = SEVERITY_RANK[level] > min(SEVERITY_RANK[b] for b in before)
                    verb = "re-graded" if lower == higher else "demoted" if lower else "promoted"
                    lines.append(f"{prefix}{rule_id} on {modality} orders: {verb} {'/'.join(before)} -> {level}")
        for name, value in sorted(section.parameters.items()):
            default = bundled.parameters.get(name)
            if default != value:
                lines.append(f"{prefix}parameter {name}: {default} -> {value}")
        if section.card_grouping is not None:
            lines.append(f"{prefix}card grouping: {section.card_grouping}")
        if section.repeat_critical_cards is False:
            lines.append(f"{prefix}critical cards answered on order-select are not repeated at order-sign")
    return lines


__all__ = [
    "NO_POLICY",
    "NeverEntry",
    "Policy",
    "PolicyError",
    "PolicySection",
    "RulePolicy",
    "apply_section",
    "check_policy",
    "describe_changes",
    "load_never_list",
    "load_policy",
    "normalise",
    "parse_policy",
]
