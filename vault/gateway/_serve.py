"""``vault serve``: the gateway under uvicorn, configured from ``VAULT_*``.

Each worker process builds its own app with :func:`app_from_env` (uvicorn's
factory), so that no app, engine or settings exists at import time; every worker
opens the same vault (on PostgreSQL, replicas on many hosts share one database).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI

from vault.config import VaultSettings
from vault.errors import ConfigError
from vault.facade import Vault
from vault.gateway._app import create_app
from vault.gateway._settings import GatewaySettings
from vault.logging import RedactingProcessor

__all__ = ["app_from_env", "serve"]


def _configure_logging() -> None:
    """The server is an application: JSON lines on stderr, redacted, INFO and up."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            RedactingProcessor(),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def app_from_env() -> FastAPI:
    """Open the vault and build the app from ``VAULT_*`` and ``VAULT_GATEWAY_*``
    (uvicorn's factory); the vault is closed when the server stops."""
    _configure_logging()
    gateway_settings = GatewaySettings.from_env()
    vault = Vault.open(settings=VaultSettings.from_env())
    try:
        app = create_app(vault, gateway_settings)
    except BaseException:
        vault.close()
        raise

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            vault.close()

    app.router.lifespan_context = lifespan
    return app


def serve(*, host: str = "127.0.0.1", port: int = 8600, workers: int = 1,
          tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    """Run the gateway until interrupted.

    With ``tls_cert`` and ``tls_key`` it serves HTTPS itself and sends HSTS;
    without them, put it behind a TLS-terminating reverse proxy (see
    ``docs/gateway.md``) or keep it on loopback.

    Raises:
        ConfigError: only one of the TLS files given, or one cannot be read.
    """
    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file {path} cannot be read")
    # Checked here, in the parent, so a bad setting fails before workers start.
    GatewaySettings.from_env()
    VaultSettings.from_env()
    if tls_cert is not None:
        os.environ["VAULT_GATEWAY_HSTS"] = "true"
    uvicorn.run(
        "vault.gateway:app_from_env", factory=True, host=host, port=port, workers=workers,
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
        # The gateway writes its own access log (route template, no query string).
        access_log=False, server_header=False, log_level="warning",
        timeout_graceful_shutdown=10,
    )
