"""``cryo-cds serve``: the service on werkzeug's threaded development server."""

from __future__ import annotations

import argparse
import errno
from collections.abc import Callable, Iterable
from typing import Any

from ..config import from_env
from .common import CliError, Parser, port_number, warn

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bind(host: str, port: int, app: WsgiApp) -> Any:
    """A threaded werkzeug server already bound to host:port (so a port in use is reported
    before anything claims to listen); CliError when the address cannot be taken."""
    from werkzeug.serving import make_server

    try:
        return make_server(host, port, app, threaded=True)
    except OSError as exc:
        reason = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise CliError(f"cannot listen on {host}:{port}: {reason}") from None
    except SystemExit:  # werkzeug exits (after printing) when the port is taken on some systems
        raise CliError(f"cannot listen on {host}:{port}: already in use") from None


class _Late:
    """The WSGI app handed to the server before the service is built."""

    app: WsgiApp | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        assert self.app is not None
        return self.app(environ, start_response)


def run(args: argparse.Namespace) -> int:
    from ..app import create_app

    config = from_env()
    if args.no_auth:
        config = config.with_overrides(auth_required=False)
    config = config.with_overrides(host=args.host or config.host, port=args.port or config.port)
    if args.public_base_url is not None:
        config = config.with_overrides(public_base_url=args.public_base_url.rstrip("/"))
    elif config.public_base_url == "http://127.0.0.1:8080":
        config = config.with_overrides(public_base_url=f"http://{config.host}:{config.port}")
    late = _Late()
    server = bind(config.host, config.port, late)
    try:
        late.app = create_app(config)  # logs the data dir, the log and the key it uses
        warn(f"cryo-cds listening on http://{config.host}:{server.server_port}/cds-services")
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    serve = sub.add_parser("serve", help="run the CDS Hooks service (development server)")
    serve.add_argument("--host", help="address to listen on (default CDS_HOOKS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=port_number, help="port (default CDS_HOOKS_PORT or 8080)")
    serve.add_argument("--public-base-url", help="the URL clients use (JWT audience); default http://HOST:PORT")
    serve.add_argument("--no-auth", action="store_true", help="accept calls without a JWT (development only)")
    serve.set_defaults(func=run)


__all__ = ["bind", "register", "run"]
