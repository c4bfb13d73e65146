"""``cryo-cds serve``: the service on werkzeug's threaded development server."""

from __future__ import annotations

import argparse
import errno
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MIN_TOKEN_CHARS, Config, from_env
from .common import CliError, Parser, add_listen_options, warn

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication as WsgiApp


def bind(host: str, port: int, app: WsgiApp) -> Any:
    """A threaded werkzeug server on a socket bound and listening here first, so that a port
    in use is one clear error before anything claims to listen (werkzeug would print three
    lines and exit)."""
    from werkzeug.serving import make_server

    try:
        family, _type, _proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        reason = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise CliError(f"cannot listen on {host}:{port}: {reason}") from None
    try:
        return make_server(host, port, app, threaded=True, fd=listener.fileno())
    finally:
        listener.close()  # the server holds its own duplicate of the socket


class _Late:
    """The WSGI app handed to the server before the service is built."""

    app: WsgiApp | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        assert self.app is not None
        return self.app(environ, start_response)


def console_options(args: argparse.Namespace) -> None:
    """Hand --console-token/--console-patients to the console as the environment variables it
    reads (CDS_HOOKS_CONSOLE_TOKEN/_PATIENTS), after checking them, before anything listens."""
    if args.console_token is not None:
        if len(args.console_token) < MIN_TOKEN_CHARS:
            raise CliError(f"--console-token must be at least {MIN_TOKEN_CHARS} characters")
        os.environ["CDS_HOOKS_CONSOLE_TOKEN"] = args.console_token
    if args.console_patients is not None:
        folder = Path(args.console_patients).expanduser()
        if not folder.is_dir():
            raise CliError(f"--console-patients: {args.console_patients}: no such folder")
        os.environ["CDS_HOOKS_CONSOLE_PATIENTS"] = str(folder.resolve())


def run(args: argparse.Namespace) -> int:
    from ..app import create_app

    console_options(args)
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
        warn(f"cryo-cds listening on http://{config.host}:{server.port}/cds-services")
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    serve = sub.add_parser("serve", help="run the CDS Hooks service (development server)")
    add_listen_options(serve, host=Config.host, port=Config.port, from_settings=True)
    serve.add_argument("--public-base-url", help="the URL clients use (JWT audience); default http://HOST:PORT")
    serve.add_argument("--no-auth", action="store_true", help="accept calls without a JWT (development only)")
    serve.add_argument(
        "--console-token",
        metavar="TOKEN",
        help=f"token for the console's login page, at least {MIN_TOKEN_CHARS} characters (default "
        "CDS_HOOKS_CONSOLE_TOKEN, else CDS_HOOKS_AUDIT_TOKEN); other users of the machine can read a "
        "command line, so on a shared machine prefer the variable",
    )
    serve.add_argument(
        "--console-patients",
        metavar="DIR",
        help="folder of FHIR Bundles the console's sandbox offers (default CDS_HOOKS_CONSOLE_PATIENTS)",
    )
    serve.set_defaults(func=run)


__all__ = ["bind", "console_options", "register", "run"]
