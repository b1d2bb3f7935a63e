# The service image. Railway (or any container host) builds it as it is; a local build with no
# registry access passes BASE_IMAGE and a wheel folder instead (see README, "Deploy").
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Empty: install from PyPI. A folder of wheels (relative to the build context): install from it.
ARG WHEELS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=5000

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /app \
    && chown app:app /app
WORKDIR /app

COPY requirements_prod.txt ./
COPY ${WHEELS:-requirements_prod.txt} /tmp/wheels/
RUN if [ -n "${WHEELS}" ]; then \
        pip install --no-cache-dir --no-index --find-links /tmp/wheels -r requirements_prod.txt; \
    else \
        pip install --no-cache-dir -r requirements_prod.txt; \
    fi \
    && rm -rf /tmp/wheels

COPY --chown=app:app . .
USER 10001

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '5000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
