"""CORS for browser-based CDS clients (the CDS Hooks Sandbox) on allow-listed origins."""

from __future__ import annotations

from flask import Flask, Response, request


def cors_headers(allowed: tuple[str, ...]) -> dict[str, str]:
    """CORS answer to the current request for an allow-listed origin, and Chrome's Private
    Network Access consent so that a public web client (e.g. https://sandbox.cds-hooks.org)
    may call a service on a developer's loopback or LAN address."""
    origin = request.headers.get("Origin")
    if not origin or not allowed:
        return {}
    if "*" in allowed:
        allow = "*"
    elif origin in allowed:
        allow = origin
    else:
        return {}
    headers = {
        "Access-Control-Allow-Origin": allow,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
    }
    if request.headers.get("Access-Control-Request-Private-Network") == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"
    return headers


def install_cors(app: Flask, allowed: tuple[str, ...]) -> None:
    """Answer preflights (before authentication: browsers send them without credentials) and
    add the CORS headers to every answer."""

    @app.before_request
    def preflight() -> Response | None:
        if request.method == "OPTIONS":
            return Response(status=204, headers=cors_headers(allowed))
        return None

    @app.after_request
    def add_cors(response: Response) -> Response:
        response.headers.update(cors_headers(allowed))
        return response
