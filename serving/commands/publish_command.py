"""`flask models push`: publish a version folder to a running deployment, straight into the
database DATABASE_URL names, or through a server's admin route (`--url`)."""

from __future__ import annotations

import getpass
import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from serving.config import Settings
from serving.errors import ServiceError
from serving.model.digests import MODEL_FILES
from serving.model.folders import METADATA_FILE
from serving.store import database, migrations


@click.command("push")
@with_appcontext
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--endpoint", help="endpoint to publish to (default: model.json's `endpoint`)")
@click.option(
    "--version", "version", help="version to publish as (default: model.json's, else FOLDER's name)"
)
@click.option("--by", default=lambda: f"cli:{getpass.getuser()}", help="who publishes")
@click.option("--url", help="publish through this server's admin route instead of DATABASE_URL")
@click.option("--token", help="the server's ADMIN_TOKEN, with --url (default: $ADMIN_TOKEN)")
def push_command(
    folder: Path,
    endpoint: str | None,
    version: str | None,
    by: str,
    url: str | None,
    token: str | None,
) -> None:
    """Publish the version in FOLDER (pipeline.skops or pipeline.pickle, dtypes.pickle,
    columns.json, model.json pinning every file's sha256) to every worker and replica on the
    database, without a restart: they serve it within STATUS_REFRESH_SECONDS, with
    model.json's initial_status (default testing). Checked and loaded here first, as the
    server would: nothing that cannot load is stored, and a version is never overwritten."""
    settings: Settings = current_app.config["SETTINGS"]
    files = {
        name: (folder / name).read_bytes() for name in MODEL_FILES if (folder / name).is_file()
    }
    metadata = _metadata(files)
    endpoint = endpoint or _text(metadata.get("endpoint"))
    if not endpoint:
        raise click.UsageError(f"{folder / METADATA_FILE} names no endpoint: give --endpoint")
    version = version or _text(metadata.get("version")) or folder.resolve().name
    if url:
        answer = _push_over_http(url, token or settings.admin_token, endpoint, version, files, by)
    else:
        from serving.model import (
            publishing,  # loads the version: see serving.commands.model_commands
        )

        try:
            if settings.migrate_on_start:
                migrations.migrate()
            answer = publishing.publish(endpoint, version, files, by, settings)
        except ServiceError as exc:
            raise click.ClickException(_sentence(exc.message, exc.details)) from exc
        finally:
            database.close_all()
    size = sum(f["size"] for f in answer["files"].values())
    click.echo(
        f"published {answer['endpoint']} version {answer['version']} ({answer['status']}, "
        f"{len(answer['files'])} files, {size} bytes); every worker serves it within "
        "STATUS_REFRESH_SECONDS"
    )


def _metadata(files: dict[str, bytes]) -> dict[str, Any]:
    # Only to find the endpoint and version; the upload's own checks judge the file.
    try:
        metadata = json.loads(files.get(METADATA_FILE, b"{}"))
    except ValueError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _text(value: Any) -> str | None:
    return str(value) if value is not None and not isinstance(value, dict | list) else None


def _sentence(message: str, details: list[dict[str, str]]) -> str:
    named = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return f"{message} ({named})" if named and named not in message else message


def _push_over_http(
    url: str, token: str | None, endpoint: str, version: str, files: dict[str, bytes], by: str
) -> dict[str, Any]:
    """PUT the files to the server's admin route as multipart/form-data."""
    if not token:
        raise click.UsageError("--url needs the server's admin token: --token or ADMIN_TOKEN")
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    for name, data in sorted(files.items()):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="by"\r\n\r\n'.encode()
        + by.encode("utf-8")
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/v1/{endpoint}/versions/{version}",
        data=b"".join(parts),
        method="PUT",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
            message = _sentence(error["error"], error.get("details", []))
        except (ValueError, KeyError, TypeError):
            message = f"the server answered {exc.code} {exc.reason}"
        raise click.ClickException(f"{exc.code}: {message}") from exc
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from exc
