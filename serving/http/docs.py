"""/openapi.json, and /docs: Swagger UI from the installed flask-swagger-ui package, no CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, current_app, send_from_directory, url_for
from markupsafe import escape

from serving.http.context import registry

blueprint = Blueprint("docs", __name__)

# Swagger UI's own files (JavaScript, CSS, icons) as the package installs them.
ASSETS = Path(flask_swagger_ui.__file__).resolve().parent / "dist"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>sklearn-serving API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
</head>
<body>
  <div id="swagger-ui" data-spec="{spec}"></div>
  <script src="{bundle}"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: document.getElementById("swagger-ui").dataset.spec,
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
        // Otherwise Swagger UI sends the document to validator.swagger.io for a badge.
        validatorUrl: null
      }});
    }};
  </script>
</body>
</html>
"""


def document() -> dict[str, Any]:
    """The app's OpenAPI document, built once per state of the registry: again when a
    published version was added (a new endpoint gets its own paths and schemas)."""
    from serving import openapi  # imported at start-up: see serving.http

    extensions = current_app.extensions
    served = registry()
    built = extensions.get("openapi")
    if built is None or built[0] != served.generation:
        generation = served.generation
        built = extensions["openapi"] = (
            generation,
            openapi.build(
                served,
                current_app.config["SETTINGS"],
                current_app.url_map,
                current_app.view_functions,
            ),
        )
    return built[1]


@blueprint.get("/openapi.json")
def openapi_json() -> dict[str, Any]:
    """The OpenAPI 3.1 document: every route, each endpoint's real input schema."""
    return document()


@blueprint.get("/docs")
def docs() -> Response:
    """Swagger UI on /openapi.json; every asset comes from this server."""
    page = PAGE.format(
        css=_asset_url("swagger-ui.css"),
        icon=_asset_url("favicon-32x32.png"),
        bundle=_asset_url("swagger-ui-bundle.js"),
        spec=escape(url_for("docs.openapi_json")),
    )
    return Response(page, mimetype="text/html")


def _asset_url(name: str) -> str:
    # Paths on this server (behind a proxy prefix too): nothing is fetched from elsewhere.
    return escape(url_for("docs.asset", filename=name))


@blueprint.get("/docs/assets/<path:filename>")
def asset(filename: str) -> Response:
    """One of Swagger UI's files; anything else is 404."""
    return send_from_directory(ASSETS, filename, max_age=3600)
