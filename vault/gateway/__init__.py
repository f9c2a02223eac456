"""The HTTP gateway: Vault as a service for CRM services in any language.

    >>> from vault import Vault
    >>> from vault.gateway import GatewaySettings, create_app
    >>> app = create_app(Vault.open(".vault"), GatewaySettings.from_env())  # doctest: +SKIP

Build the app with :func:`create_app` (no module-level app, engine or settings);
``vault serve`` runs it under uvicorn (:func:`serve`). The routes use only the
public ``Vault`` API; the long reference is ``docs/gateway.md``.
"""

from vault.gateway._app import create_app
from vault.gateway._auth import Principal
from vault.gateway._problems import Problem, status_of
from vault.gateway._serve import app_from_env, serve
from vault.gateway._settings import GatewaySettings

__all__ = ["GatewaySettings", "Principal", "Problem", "app_from_env", "create_app", "serve",
           "status_of"]
