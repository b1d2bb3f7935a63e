"""Entry point: `gunicorn app:app`, or `python app.py` to serve on $PORT."""

from serving import create_app
from serving.config import SettingsError

try:
    app = create_app()
except SettingsError as exc:
    # A setting the service cannot run with: one sentence, not a traceback.
    raise SystemExit(f"configuration error: {exc}") from None

if __name__ == "__main__":
    from serving.model.hot_loading import start_watching
    from serving.reports.rollups import start_folding

    start_watching(app)
    start_folding(app)
    app.run(host="0.0.0.0", port=app.config["SETTINGS"].port, threaded=True)
