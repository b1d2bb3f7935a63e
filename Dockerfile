# The service image. Railway (or any container host) builds it as it is. scripts/container-check
# builds it with no registry access: BASE_IMAGE is then a local Debian bookworm image with Python
# 3.11 in a virtualenv first on PATH, and WHEELS a folder of wheels the builder mounts.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Empty: install from PyPI. A folder inside the build (`buildah build --volume DIR:/wheels:ro
# --build-arg WHEELS=/wheels`): install from it alone. A mount, not a COPY, so the wheels never
# reach a layer or the build context, where `COPY . .` would put them into /app.
ARG WHEELS=""

# PYTHONPATH: `dask worker` (a console script, so not run from /app's sys.path) imports the
# service from /app when this image runs a worker of `flask score --engine dask`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    PORT=5000

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /app \
    && chown app:app /app
WORKDIR /app

COPY requirements_prod.txt ./
RUN if [ -n "${WHEELS}" ]; then \
        pip install --no-cache-dir --no-index --find-links "${WHEELS}" -r requirements_prod.txt; \
    else \
        pip install --no-cache-dir -r requirements_prod.txt; \
    fi

COPY --chown=app:app . .
USER 10001

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
