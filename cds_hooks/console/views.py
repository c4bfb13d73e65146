"""The console's pages: rules, one rule, the sandbox, the audit dashboard and decisions.

Server-rendered; the per-rule numbers come from ``audit.analytics`` (as ``cryo-cds audit``),
the rest from ``console.queries`` over the same period definition. Both (and with them
SQLAlchemy) are imported by the pages that read the log, not by a serving process that
never shows one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers.response import Response as BaseResponse

from ..rulebook import MODALITIES, SEVERITY_RANK, Rule
from ..service import SERVICES
from . import access
from .explain import merge_hits, raw_rule, rule_parameters, variant_patterns
from .render import markdown, safe_url

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fhir_fixtures" / "requests"
DEFAULT_DAYS = 30
MAX_TREND_DAYS = 92
MODALITY_SHORT = {"local-destructive": "Local destructive", "local-cold": "Local cold", "systemic": "Systemic"}


def _state() -> Any:
    return current_app.extensions["cryo_cds"]


def _settings() -> access.ConsoleSettings:
    settings: access.ConsoleSettings = current_app.extensions["cryo_cds_console"]
    return settings


# -- access --------------------------------------------------------------------------------


def _is_open() -> bool:
    return _settings().open_on_loopback and (request.remote_addr or "") in access.LOOPBACK


@bp.before_request
def guard() -> BaseResponse | None:
    """Every page and action needs a console session; every POST its CSRF token."""
    settings = _settings()
    session = access.read_session(settings, request.cookies.get(access.COOKIE))
    if session is None and (_is_open() or request.endpoint == "console.login"):
        cookie, session = access.new_session(settings, authenticated=_is_open())
        g.console_new_cookie = cookie
    g.console_session = session
    if request.endpoint == "console.static":
        return None
    if request.endpoint != "console.login" and not _is_open() and not (session and session.get("a")):
        if not settings.token and not settings.open_on_loopback:
            return _refuse(
                403,
                "The console is closed: set CDS_HOOKS_CONSOLE_TOKEN (or CDS_HOOKS_AUDIT_TOKEN), "
                "or run the service with --no-auth on loopback.",
            )
        if request.method == "GET" and "HX-Request" not in request.headers:
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        return _refuse(401, "Log in to the console first.")
    if request.method == "POST" and not access.csrf_ok(
        settings, session, request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
    ):
        return _refuse(403, "The form's CSRF token is missing or wrong; reload the page and try again.")
    return None


@bp.after_request
def set_cookie(response: Response) -> Response:
    cookie = g.get("console_new_cookie")
    if cookie:
        _store_cookie(response, cookie)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _store_cookie(response: BaseResponse, cookie: str) -> None:
    response.set_cookie(
        access.COOKIE,
        cookie,
        max_age=access.SESSION_MAX_AGE_S,
        path="/console",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )


def _refuse(status: int, message: str) -> Response:
    return Response(render_template("console/error.html", status=status, message=message), status=status)


@bp.app_template_global()
def csrf() -> str:
    session = g.get("console_session")
    return access.csrf_token(_settings(), session) if session else ""


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str:
    settings = _settings()
    target = request.values.get("next") or url_for("console.home")
    if not target.startswith("/console") or target.startswith("//"):
        target = url_for("console.home")
    if _is_open():
        return redirect(target)
    error = ""
    if request.method == "POST":
        if access.token_ok(settings, request.form.get("token", "")):
            cookie, _session = access.new_session(settings, authenticated=True)
            response = redirect(target)
            _store_cookie(response, cookie)
            g.console_new_cookie = None
            return response
        error = "That token is not valid." if settings.token else "No console token is configured."
    status = 401 if error else 200
    page = render_template("console/login.html", error=error, next=target, configured=bool(settings.token))
    return Response(page, status=status)


@bp.post("/logout")
def logout() -> BaseResponse:
    response = redirect(url_for("console.login"))
    response.delete_cookie(access.COOKIE, path="/console")
    return response


# -- period --------------------------------------------------------------------------------


class Period:
    """From/to dates (UTC, both inclusive) as the half-open instants analytics uses."""

    def __init__(self, args: Any, default_days: int = DEFAULT_DAYS) -> None:
        today = datetime.now(UTC).date()
        self.start = self._day(args.get("from"), today - timedelta(days=default_days - 1))
        self.end = self._day(args.get("to"), today)
        if self.end < self.start:
            abort(
                Response(
                    render_template("console/error.html", status=400, message="'to' must not be before 'from'"), 400
                )
            )
        service = args.get("service") or ""
        if service and service not in SERVICES:
            abort(
                Response(render_template("console/error.html", status=400, message=f"Unknown service {service!r}"), 400)
            )
        self.service = service or None
        self.since = datetime.combine(self.start, datetime.min.time(), tzinfo=UTC)
        self.until = datetime.combine(self.end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)

    @staticmethod
    def _day(raw: str | None, default: date) -> date:
        if not raw:
            return default
        try:
            return date.fromisoformat(raw)
        except ValueError:
            abort(
                Response(
                    render_template("console/error.html", status=400, message=f"Dates are YYYY-MM-DD, got {raw!r}"), 400
                )
            )

    def query(self, **extra: Any) -> str:
        params = {"from": self.start.isoformat(), "to": self.end.isoformat(), **extra}
        if self.service:
            params["service"] = self.service
        return urlencode({k: v for k, v in params.items() if v not in (None, "")})

    @property
    def cli(self) -> str:
        return f"cryo-cds audit summary --since {self.since.isoformat()} --until {self.until.isoformat()} --json"


def _csv(name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return Response(
        out.getvalue(), mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}.csv"'}
    )


# -- pages ---------------------------------------------------------------------------------


@bp.get("/")
def home() -> str:
    from ..audit import analytics
    from . import queries

    state = _state()
    period = Period(request.args, 7)
    rows = analytics.rule_summary(state.store, period.since, period.until)
    daily = queries.evaluations_per_day(state.store, period.since, period.until, None)
    return render_template(
        "console/home.html",
        rules=len(state.pipeline.rulebook.rules),
        revision=state.pipeline.rulebook.revision,
        evaluator=state.pipeline.evaluator.name,
        decisions=sum(n for _d, n in daily),
        fires=sum(r["fires"] for r in rows),
        overridden=sum(r["overridden"] for r in rows),
        period=period,
    )


def _severities(rule: Rule) -> dict[str, str]:
    """Per modality, the highest severity any variant gives (absent: the rule is silent)."""
    found: dict[str, str] = {}
    for variant in rule.variants:
        for modality, level in variant.severity.items():
            if SEVERITY_RANK[level] > SEVERITY_RANK.get(found.get(modality, ""), -1):
                found[modality] = level
    return found


def _rule_rows(period: Period) -> list[dict[str, Any]]:
    from ..audit import analytics

    state = _state()
    stats: dict[str, dict[str, Any]] = {}
    for row in analytics.rule_summary(state.store, period.since, period.until, period.service):
        agg = stats.setdefault(
            row["rule_id"], {"evaluations": 0, "fires": 0, "accepted": 0, "overridden": 0, "versions": []}
        )
        for key in ("evaluations", "fires", "accepted", "overridden"):
            agg[key] += row[key]
        agg["versions"].append(row["rule_version"])
    rows = []
    known = {rule.id: rule for rule in state.pipeline.rulebook.rules}
    for rule_id in sorted(set(known) | set(stats)):
        rule = known.get(rule_id)
        agg = stats.get(rule_id, {"evaluations": 0, "fires": 0, "accepted": 0, "overridden": 0, "versions": []})
        answered = agg["accepted"] + agg["overridden"]
        rows.append(
            {
                "id": rule_id,
                "title": rule.title if rule else "(not in the current rulebook)",
                "version": rule.version if rule else "",
                "severity": _severities(rule) if rule else {},
                "evaluations": agg["evaluations"],
                "fires": agg["fires"],
                "fire_rate": agg["fires"] / agg["evaluations"] if agg["evaluations"] else None,
                "overridden": agg["overridden"],
                "answered": answered,
                "override_rate": agg["overridden"] / answered if answered else None,
                "versions": agg["versions"],
                "current": rule is not None,
            }
        )
    return rows


@bp.get("/rules")
def rules() -> BaseResponse | str:
    period = Period(request.args)
    rows = _rule_rows(period)
    if request.args.get("format") == "csv":
        return _csv(
            "rules",
            [
                "rule_id",
                "title",
                "version",
                *MODALITIES,
                "evaluations",
                "fires",
                "fire_rate",
                "answered",
                "overridden",
                "override_rate",
            ],
            (
                [
                    r["id"],
                    r["title"],
                    r["version"],
                    *(r["severity"].get(m, "") for m in MODALITIES),
                    r["evaluations"],
                    r["fires"],
                    r["fire_rate"],
                    r["answered"],
                    r["overridden"],
                    r["override_rate"],
                ]
                for r in rows
            ),
        )
    return render_template(
        "console/rules.html", rows=rows, period=period, modalities=MODALITIES, services=sorted(SERVICES)
    )


def _cases(rule: Rule) -> list[dict[str, Any]]:
    from ..devtools.cases import load_case  # development module: loaded when a page needs it

    found = []
    for path in sorted(rule.cases_dir.glob("*.yaml")) if rule.cases_dir.is_dir() else []:
        try:
            case = load_case(path)
        except (ValueError, OSError):
            continue
        expect = [e for e in case.get("expect") or [] if isinstance(e, dict)]
        own = [e for e in expect if e.get("rule") == rule.id]
        found.append(
            {
                "name": path.name,
                "description": str(case.get("description") or path.stem),
                "fires": bool(own) or path.name.startswith("fires"),
                "expect": ", ".join(f"{e.get('rule')} {e.get('indicator', '')}".strip() for e in expect),
            }
        )
    return found


def _trend(rule_id: str, period: Period) -> dict[str, list[Any]]:
    """Per day: fires and overrides of one rule (analytics.rule_summary for each day)."""
    from ..audit import analytics

    state = _state()
    start = max(period.start, period.end - timedelta(days=MAX_TREND_DAYS - 1))
    labels, fires, overridden, evaluations = [], [], [], []
    for ordinal in range(start.toordinal(), period.end.toordinal() + 1):
        day = date.fromordinal(ordinal)
        since = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        rows = [
            r
            for r in analytics.rule_summary(state.store, since, since + timedelta(days=1), period.service)
            if r["rule_id"] == rule_id
        ]
        labels.append(day.isoformat())
        fires.append(sum(r["fires"] for r in rows))
        overridden.append(sum(r["overridden"] for r in rows))
        evaluations.append(sum(r["evaluations"] for r in rows))
    return {"labels": labels, "fires": fires, "overridden": overridden, "evaluations": evaluations}


@bp.get("/rules/<rule_id>")
def rule_page(rule_id: str) -> str:
    state = _state()
    rule = state.pipeline.rulebook.by_id.get(rule_id)
    if rule is None:
        abort(Response(render_template("console/error.html", status=404, message=f"There is no rule {rule_id!r}"), 404))
    period = Period(request.args)
    params = state.pipeline.rulebook.parameters
    overrides = state.config.rule_params
    defaults = _parameter_defaults(state.config.rules_dir)
    parameters = [
        {
            "name": name,
            "value": params.get(name),
            "default": defaults.get(name, {}).get("default"),
            "source": defaults.get(name, {}).get("source", ""),
            "override": name in overrides,
        }
        for name in rule_parameters(rule)
    ]
    variants = []
    for index, variant in enumerate(rule.variants):
        when, unless = variant_patterns(rule, index, params)
        variants.append(
            {
                "name": variant.name,
                "severity": dict(variant.severity),
                "summary": variant.summary,
                "when": when,
                "unless": unless,
            }
        )
    stats = next((r for r in _rule_rows(period) if r["id"] == rule_id), None)
    return render_template(
        "console/rule.html",
        rule=rule,
        notes=str(raw_rule(rule.path).get("notes") or ""),
        variants=variants,
        parameters=parameters,
        sources=[_source(s) for s in rule.sources],
        cases=_cases(rule),
        trend=_trend(rule_id, period),
        stats=stats,
        period=period,
        modalities=MODALITIES,
        severity=_severities(rule),
    )


def _parameter_defaults(rules_dir: Path) -> dict[str, dict[str, Any]]:
    import yaml

    path = rules_dir / "parameters.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    return dict((raw or {}).get("parameters") or {})


def _source(text: str) -> dict[str, Any]:
    """A source line, with the first http(s) URL in it as its link."""
    url = next((word.strip("()<>\"',;") for word in text.split() if word.startswith(("http://", "https://"))), None)
    return {"text": text, "url": safe_url(url)}


# -- sandbox -------------------------------------------------------------------------------


def _sandbox_choices() -> dict[str, Any]:
    from ..devtools.cases import ORDER_PRESETS
    from . import sandbox

    state = _state()
    settings = _settings()
    cases = []
    for rule in state.pipeline.rulebook.rules:
        for path in sorted(rule.cases_dir.glob("*.yaml")) if rule.cases_dir.is_dir() else []:
            cases.append(f"{rule.id}/{path.name}")
    return {
        "fixtures": sandbox.fixture_names(FIXTURES),
        "cases": cases,
        "patients": sandbox.patient_files(settings.patients_dir),
        "presets": sorted(ORDER_PRESETS),
        "sites": sandbox.body_sites(state.config.rules_dir),
        "hooks": sorted(sandbox.HOOK_SERVICES),
    }


@bp.get("/sandbox")
def sandbox_page() -> str:
    from . import sandbox  # the sandbox reads the rule-case format (devtools): loaded on first use

    form = {
        "source": request.args.get("source") or f"fixture:{(sandbox.fixture_names(FIXTURES) or [''])[0]}",
        "hook": request.args.get("hook") or "",
        "date": request.args.get("date") or "",
    }
    return render_template("console/sandbox.html", choices=_sandbox_choices(), form=form, result=None)


@bp.post("/sandbox")
def sandbox_run() -> tuple[str, int] | str:
    from . import sandbox

    state = _state()
    settings = _settings()
    form = request.form.to_dict()
    upload = request.files.get("upload")
    status = 200
    try:
        edits = sandbox.parse_edits(form)
        hook = form.get("hook") or ""
        source = form.get("source") or ""
        if hook and hook not in sandbox.HOOK_SERVICES:
            raise sandbox.SandboxError(f"Unknown hook {hook!r}")
        body, fixed_day = sandbox.base_request(
            source,
            hook or "order-select",
            fixtures=FIXTURES,
            rules_dir=state.config.rules_dir,
            patients=settings.patients_dir,
            upload=upload.read() if upload else None,
            preset=edits.preset,
        )
        if not isinstance(body, dict):
            raise sandbox.SandboxError("The request must be a JSON object")
        hook = hook or str(body.get("hook") or "order-select")
        built_from_bundle = source.startswith(("patient:", "upload:")) and "hook" not in body
        body = sandbox.apply_edits(body, hook, edits, replace_order=not built_from_bundle)
        day = sandbox.parse_day(form.get("date"), fixed_day or datetime.now(UTC).date())
        result = sandbox.run(state.pipeline, body, sandbox.evaluation_instant(day))
        if result.error:
            status = 400
    except sandbox.SandboxError as exc:
        result, status = None, 400
        form["error"] = str(exc)
    template = "console/_sandbox_result.html" if "HX-Request" in request.headers else "console/sandbox.html"
    page = render_template(
        template,
        choices=_sandbox_choices(),
        form=form,
        result=result,
        request_json=json.dumps(result.request, indent=2, ensure_ascii=False) if result else "",
    )
    # htmx swaps only 2xx answers by default; the partial carries the error itself
    return page, 200 if "HX-Request" in request.headers else status


# -- dashboard and decisions ---------------------------------------------------------------


DASHBOARD_TABLES = ("rules", "reasons", "never-fired", "feedback", "per-day", "cards-per-order")


def _dashboard_data(period: Period) -> dict[str, Any]:
    from ..audit import analytics
    from . import queries

    state = _state()
    store = state.store
    summary = analytics.rule_summary(store, period.since, period.until, period.service)
    silent = analytics.silent_rules(
        store, [r.id for r in state.pipeline.rulebook.rules], period.since, period.until, period.service
    )
    reasons = [(r["rule_id"], r["rule_version"], reason) for r in summary for reason in r["top_override_reasons"]]
    return {
        "summary": summary,
        "silent": silent,
        "reasons": reasons,
        "daily": queries.evaluations_per_day(store, period.since, period.until, period.service),
        "cards_per_order": queries.cards_per_order(store, period.since, period.until, period.service),
        "feedback": queries.feedback_received(store, period.since, period.until, period.service),
    }


@bp.get("/dashboard")
def dashboard() -> str:
    period = Period(request.args)
    data = _dashboard_data(period)
    totals = {key: sum(r[key] for r in data["summary"]) for key in ("evaluations", "fires", "accepted", "overridden")}
    totals["decisions"] = sum(n for _d, n in data["daily"])
    by_rule: dict[str, dict[str, int]] = {}
    for row in data["summary"]:
        agg = by_rule.setdefault(row["rule_id"], {"fires": 0, "overridden": 0})
        agg["fires"] += row["fires"]
        agg["overridden"] += row["overridden"]
    fired_rules = sorted((k for k, v in by_rule.items() if v["fires"]), key=lambda k: -by_rule[k]["fires"])
    charts = {
        "daily": {"labels": [d.isoformat() for d, _n in data["daily"]], "counts": [n for _d, n in data["daily"]]},
        "cards": {
            "labels": [label for label, _n in data["cards_per_order"]],
            "counts": [n for _l, n in data["cards_per_order"]],
        },
        "rules": {
            "labels": fired_rules,
            "fires": [by_rule[k]["fires"] for k in fired_rules],
            "overridden": [by_rule[k]["overridden"] for k in fired_rules],
        },
    }
    return render_template(
        "console/dashboard.html",
        period=period,
        data=data,
        totals=totals,
        charts=charts,
        services=sorted(SERVICES),
        tables=DASHBOARD_TABLES,
    )


@bp.get("/dashboard/<table>.csv")
def dashboard_csv(table: str) -> Response:
    from ..audit import analytics

    if table not in DASHBOARD_TABLES:
        abort(Response(render_template("console/error.html", status=404, message=f"No table {table!r}"), 404))
    period = Period(request.args)
    data = _dashboard_data(period)
    if table == "rules":
        # the reasons are a list each: the "reasons" table has them one to a row
        keys = [k for k in analytics.RULE_SUMMARY_COLUMNS if k != "top_override_reasons"]
        return _csv(f"rules-{period.start}-{period.end}", keys, ([r[k] for k in keys] for r in data["summary"]))
    if table == "reasons":
        return _csv(
            "override-reasons",
            ["rule_id", "rule_version", "system", "code", "display", "count"],
            ([rid, ver, r["system"], r["code"], r["display"], r["count"]] for rid, ver, r in data["reasons"]),
        )
    if table == "never-fired":
        return _csv(
            "silent-rules",
            ["rule_id", "status"],
            [
                *([r, "never_evaluated"] for r in data["silent"]["never_evaluated"]),
                *([r, "never_fired"] for r in data["silent"]["never_fired"]),
            ],
        )
    if table == "feedback":
        keys = [
            "received_at",
            "service_id",
            "rule_id",
            "outcome",
            "override_code",
            "override_display",
            "user_comment",
            "decision_id",
        ]
        return _csv("feedback", keys, ([f[k] for k in keys] for f in data["feedback"]))
    if table == "per-day":
        return _csv("evaluations-per-day", ["date", "decisions"], ([d.isoformat(), n] for d, n in data["daily"]))
    return _csv("cards-per-order", ["cards", "orders"], data["cards_per_order"])


@bp.get("/decisions")
def decisions() -> BaseResponse | str:
    from . import queries

    period = Period(request.args)
    query = request.args.get("q", "")[:128]
    try:
        page = max(0, int(request.args.get("page", "0")))
    except ValueError:
        page = 0
    if request.args.get("format") == "csv":
        rows: list[dict[str, Any]] = []
        for n in range(200):
            chunk, total = queries.decisions(_state().store, period.since, period.until, period.service, query, n)
            rows += chunk
            if len(rows) >= total or not chunk:
                break
        keys = ["created_at", "decision_id", "service_id", "hook", "status", "latency_ms", "cards", "top_indicator"]
        return _csv(
            "decisions", [*keys, "rules_fired"], ([*(r[k] for k in keys), " ".join(r["rules_fired"])] for r in rows)
        )
    rows, total = queries.decisions(_state().store, period.since, period.until, period.service, query, page)
    template = "console/_decision_rows.html" if "HX-Request" in request.headers else "console/decisions.html"
    return render_template(
        template,
        rows=rows,
        total=total,
        page=page,
        query=query,
        period=period,
        services=sorted(SERVICES),
        page_size=queries.PAGE_SIZE,
    )


@bp.get("/decisions/<decision_id>")
def decision_page(decision_id: str) -> str:
    from ..audit import analytics

    state = _state()
    found = analytics.explain_decision(state.store, decision_id[:64])
    if found is None:
        abort(Response(render_template("console/error.html", status=404, message="There is no such decision"), 404))
    cards = {card["uuid"]: card for card in found["cards"]}
    titles = {rule.id: rule.title for rule in state.pipeline.rulebook.rules}
    return render_template(
        "console/decision.html", d=found, cards=cards, titles=titles, findings=merge_hits(found["fired"])
    )


@bp.app_template_filter("md")
def md_filter(text: Any) -> Any:
    return markdown(text)


@bp.app_template_filter("pct")
def pct_filter(value: Any) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


@bp.app_template_global()
def link_url(url: Any) -> str | None:
    return safe_url(url)


@bp.app_template_global()
def modality_name(modality: str) -> str:
    return MODALITY_SHORT.get(modality, modality)


# -- what-if replay (issue 14) ---------------------------------------------------------------


@bp.get("/replay")
def replay_page() -> tuple[str, int] | str:
    """The what-if diff of ``cryo-cds replay``: the period's logged decisions re-evaluated
    with another rules folder and/or site policy on this host."""
    from ..policy import NO_POLICY, PolicyError, apply_section, check_policy, load_policy
    from ..rulebook import RuleError
    from ..whatif import replay

    period = Period(request.args)
    rules_dir = request.args.get("rules", "").strip()[:1024]
    policy_path = request.args.get("policy", "").strip()[:1024]
    context: dict[str, Any] = {"period": period, "rules_dir": rules_dir, "policy_path": policy_path}
    if not rules_dir:
        return render_template("console/replay.html", **context, report=None, error=None)
    folder = Path(rules_dir)
    try:
        if not (folder / "parameters.yaml").is_file() and not any(folder.glob("*/rule.yaml")):
            raise RuleError(f"{folder}: not a rules folder (no parameters.yaml, no <RULE-ID>/rule.yaml)")
        policy = NO_POLICY
        if policy_path:
            if Path(policy_path).suffix not in (".yaml", ".yml"):
                raise PolicyError(f"{policy_path}: a site policy is a .yaml or .yml file")
            policy = load_policy(Path(policy_path))
            check_policy(policy, folder, _state().config.rule_params)
        rulebook = apply_section(folder, policy.site, _state().config.rule_params)
    except (RuleError, PolicyError, OSError) as exc:
        return render_template("console/replay.html", **context, report=None, error=" ".join(str(exc).split())), 400
    report = replay(_state().store, rulebook, policy_revision=policy.revision, since=period.since, until=period.until)
    return render_template("console/replay.html", **context, report=report.as_json(), lines=report.lines(), error=None)
