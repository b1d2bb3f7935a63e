"""gunicorn settings; the numbers come from serving.config like every other setting."""

from serving.config import Settings

_settings = Settings.from_env()

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
# Threads let one worker hold many requests in flight while others wait on the database.
worker_class = "gthread"
threads = _settings.threads
# Models load once in the master and are shared copy-on-write by the workers.
preload_app = True
timeout = 60
# Railway's drain time (RAILWAY_DEPLOYMENT_DRAINING_SECONDS) must exceed this.
graceful_timeout = 30
keepalive = 5
# One structured line per request comes from the app; gunicorn's own access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
