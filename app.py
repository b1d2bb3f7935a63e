"""Entry point: `gunicorn app:app`, or `python app.py` to serve on $PORT."""

from serving import create_app

app = create_app()

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=app.config["SETTINGS"].port, threaded=True)
