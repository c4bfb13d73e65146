"""The console: a browser front end for rule authors, testers and safety officers (rule
explorer, sandbox, audit dashboard), served by the service itself under ``/console/``."""

from __future__ import annotations

from flask import Flask
from werkzeug.wrappers.response import Response

from .access import ConsoleSettings, settings_from
from .views import bp

PATH_PREFIX = "/console"


def register_console(app: Flask, settings: ConsoleSettings | None = None) -> None:
    """Mount the console on ``app`` (after ``create_app`` put the service state in place) and
    give the service root ``/`` a link to it when nothing else answers there."""
    state = app.extensions["cryo_cds"]
    app.extensions["cryo_cds_console"] = settings or settings_from(state.config)
    app.register_blueprint(bp)
    if not any(rule.rule == "/" for rule in app.url_map.iter_rules()):
        app.add_url_rule("/", "console_index", _index)


def _index() -> Response:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>cryo-cds</title></head><body>"
        "<h1>cryo-cds</h1><p>CDS Hooks service for cryotherapy orders.</p><ul>"
        '<li><a href="/cds-services">/cds-services</a> (discovery)</li>'
        '<li><a href="/console/">Console</a>: rules, sandbox and audit dashboard</li>'
        "</ul></body></html>"
    )
    return Response(body, mimetype="text/html")


def is_console_path(path: str) -> bool:
    """Paths the console guards itself (its own session), not with CDS Hooks JWTs."""
    return path == "/" or path == PATH_PREFIX or path.startswith(PATH_PREFIX + "/")


__all__ = ["ConsoleSettings", "is_console_path", "register_console"]
