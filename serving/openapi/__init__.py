"""The service's OpenAPI 3.1 document, derived from the app's routes: method and path from its
URL map, summary and description from each view's docstring, and what a view cannot say (its
schemas, error statuses, who may call it) from one declaration per Flask endpoint
(`operations.py`); shared components (`components.py`) and each endpoint's input schema from
its models (`inputs.py`), put together by `document.build`."""

from serving.openapi.document import build

__all__ = ["build"]
