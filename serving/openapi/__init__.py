"""The service's OpenAPI 3.1 document: a table of operations (`operations.py`), shared
components (`components.py`) and each endpoint's input schema from its models (`inputs.py`),
put together by `document.build`."""

from serving.openapi.document import build

__all__ = ["build"]
