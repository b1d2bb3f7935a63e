"""/openapi.json and /docs: the document is valid OpenAPI 3.1, lists exactly the app's routes,
shows each endpoint's real input schema and the admin scheme, and matches what the service
answers; /docs works with no internet. Also the service bugs schemathesis found."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate
from sklearn.linear_model import LogisticRegression

from serving.model.schema import BOOLEAN, CATEGORY, INTEGER, NUMBER, STRING
from tests.conftest import REPO_ROOT, _tiny_frame, _tiny_pipeline, make_app, write_model

ADMIN_TOKEN = "docs-admin-token"
METHODS = {"get", "put", "post", "delete", "patch"}


def fit_category_model(folder: Path) -> Path:
    """The tiny model with `color` as a pandas category: an input with fixed categories."""
    frame = _tiny_frame()
    frame["color"] = frame["color"].astype("category")
    target = (frame["x"] > 0).astype(int)
    pipeline = _tiny_pipeline(LogisticRegression()).fit(frame, target)
    return write_model(folder, pipeline, frame, {"name": "shapes"})


@pytest.fixture
def docs_app(database_url: str, tmp_path: Path):
    """The bundled models (default, heights, income) plus one with a category input."""
    models = tmp_path / "models"
    for name in ("heights", "income"):
        (models / name).mkdir(parents=True)
        for version in (REPO_ROOT / "models" / name).iterdir():
            (models / name / version.name).symlink_to(version)
    fit_category_model(models / "shapes" / "1")
    application = make_app(database_url, models, admin_token=ADMIN_TOKEN)
    yield application
    from serving.store.database import close_all

    close_all()


@pytest.fixture
def docs_client(docs_app):
    """A test client of docs_app."""
    return docs_app.test_client()


@pytest.fixture
def spec(docs_client) -> dict[str, Any]:
    """The served document."""
    response = docs_client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def operations(spec: dict[str, Any]):
    """(path, method, operation) for every operation of the document."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(spec: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """Follow one local $ref."""
    while "$ref" in value:
        node: Any = spec
        for part in value["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        value = node
    return value


def validator(spec: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator of one component schema, its references resolved inside the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


# The document itself.


def test_the_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    # Requests go to the server that served the document, never anywhere else.
    assert "servers" not in spec


def test_every_route_is_in_the_document_and_nothing_else(docs_app, spec):
    """app.url_map against the document's paths, both ways, naming what differs."""
    served = {
        (rule.rule, method)
        for rule in docs_app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    adapter = docs_app.url_map.bind("localhost")
    described: set[tuple[str, str]] = set()
    unserved = []
    for path, method, _ in operations(spec):
        # A templated path matches its rule once its variables have values.
        sample = re.sub(r"\{test_id\}", "1", path)
        sample = re.sub(r"\{[^}]+\}", "x", sample)
        try:
            rule, _ = adapter.match(sample, method=method.upper(), return_rule=True)
        except Exception:
            unserved.append(f"{method.upper()} {path}")
            continue
        described.add((rule.rule, method.upper()))
    missing = sorted(f"{method} {rule}" for rule, method in served - described)
    assert not missing, f"routes missing from /openapi.json: {missing}"
    assert not unserved, f"/openapi.json lists routes the app does not serve: {unserved}"


def test_the_dashboard_and_docs_routes_are_described(spec):
    for path in ("/", "/dashboard/{name}", "/dashboard/static/{filename}"):
        assert "get" in spec["paths"][path], path
    for path in ("/openapi.json", "/docs", "/docs/assets/{filename}"):
        assert "get" in spec["paths"][path], path


def test_operation_ids_are_unique(spec):
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids))


# Each endpoint's real input schema.


def check_field(field, schema: dict[str, Any]) -> None:
    """The document's schema of one input agrees with the model's field."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if field.kind == CATEGORY:
        assert {v for v in schema["enum"] if v is not None} == set(field.categories)
    elif field.kind == BOOLEAN:
        assert "boolean" in types
    elif field.kind == INTEGER:
        assert "integer" in types
    elif field.kind == NUMBER:
        assert "number" in types
    elif field.kind == STRING:
        assert "string" in types or "enum" in schema
        if field.seen is not None:
            assert set(schema["x-training-categories"]) == set(field.seen)
    allows_null = "null" in types or None in schema.get("enum", [])
    assert allows_null == field.nullable, field.name
    if field.minimum is not None:
        assert schema["x-training-range"] == pytest.approx([field.minimum, field.maximum])


def test_each_endpoint_has_its_models_input_schema(docs_app, spec):
    registry = docs_app.extensions["registry"]
    schemas = spec["components"]["schemas"]
    assert set(registry.models) == {"default", "heights", "income", "shapes"}
    for endpoint, versions in registry.models.items():
        observation = schemas[f"{endpoint}.Observation"]
        variants = observation.get("anyOf", [observation])
        for model in versions.values():
            names = [f.name for f in model.schema.fields]
            [schema] = [v for v in variants if v["required"] == names]
            assert list(schema["properties"]) == names
            for field in model.schema.fields:
                check_field(field, schema["properties"][field.name])


def test_the_real_fields_and_categories_are_there(spec):
    """Spot checks a person would make on the bundled models."""
    schemas = spec["components"]["schemas"]
    titanic = schemas["default.Observation"]["properties"]
    assert set(titanic) == {"Age", "Cabin", "Embarked", "Fare", "Parch", "Pclass", "Sex", "SibSp"}
    assert titanic["Sex"]["x-training-categories"] == ["female", "male"]
    assert "integer" in titanic["Pclass"]["type"]
    income = schemas["income.Observation"]["properties"]
    assert {"Female", "Male"} == set(income["sex"]["x-training-categories"])
    assert "Private" in income["workclass"]["x-training-categories"]
    # heights rejects values outside its training range: the bounds are in the schema.
    height = schemas["heights.Observation"]["properties"]["height"]
    assert height["minimum"] == height["x-training-range"][0]
    assert schemas["shapes.Observation"]["properties"]["color"]["enum"][:3] == [
        "blue",
        "green",
        "red",
    ]
    # Labels, and a regression's number, for /update.
    assert set(schemas["income.UpdateRequest"]["properties"]["true_class"]["enum"]) == {
        "<=50K",
        ">50K",
    }
    assert schemas["heights.UpdateRequest"]["properties"]["true_class"]["type"] == "number"


def test_each_endpoints_paths_use_its_own_schemas(spec):
    def body_ref(path: str) -> str:
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        return content["application/json"]["schema"]["$ref"]

    assert body_ref("/predict").endswith("/default.PredictRequest")
    assert body_ref("/update").endswith("/default.UpdateRequest")
    assert body_ref("/predict/batch").endswith("/default.BatchRequest")
    for endpoint in ("default", "heights", "income", "shapes"):
        assert body_ref(f"/api/v1/{endpoint}/predict").endswith(f"/{endpoint}.PredictRequest")
        assert body_ref(f"/api/v1/{endpoint}/update").endswith(f"/{endpoint}.UpdateRequest")
        batch = spec["paths"][f"/api/v1/{endpoint}/predict/batch"]["post"]["requestBody"]
        assert set(batch["content"]) == {"application/json", "text/csv", "multipart/form-data"}
    assert body_ref("/api/v1/{endpoint}/predict").endswith("/PredictRequest")


# Errors and the admin scheme.


def test_errors_are_documented_with_the_one_error_shape(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "details"]
    assert resolve(spec, error["properties"]["details"]["items"])["required"] == [
        "field",
        "problem",
    ]
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            # Pages answer errors as pages; /ready's 503 is its own report.
            if int(status) < 400 or path.startswith("/dashboard") or path in ("/", "/ready"):
                continue
            schema = resolve(spec, response)["content"]["application/json"]["schema"]
            # The Open Inference Protocol's routes answer its own error shape, {"error": ...};
            # their readiness probes answer 503 with their report.
            if path.startswith("/v2"):
                if path.endswith("/ready") and status == "503":
                    continue
                assert schema == {"$ref": "#/components/schemas/InferenceError"}, (path, status)
                continue
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


ADMIN_OPERATIONS = {
    ("put", "/api/v1/{endpoint}/versions/{version}"),
    ("put", "/api/v1/{endpoint}/versions/{version}/status"),
    ("post", "/api/v1/{endpoint}/versions/{version}/status"),
    ("post", "/api/v1/{endpoint}/ab-tests"),
    ("post", "/api/v1/{endpoint}/ab-tests/{test_id}/stop"),
    ("put", "/api/v1/{endpoint}/shadows/{version}"),
    ("delete", "/api/v1/{endpoint}/shadows/{version}"),
    ("post", "/api/v1/{endpoint}/retrain"),
}


def test_admin_operations_need_the_bearer_token(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {"adminToken": schemes["adminToken"]}
    assert schemes["adminToken"]["type"] == "http"
    assert schemes["adminToken"]["scheme"] == "bearer"
    secured = {(m, p) for p, m, o in operations(spec) if o.get("security")}
    assert secured == ADMIN_OPERATIONS
    for method, path in ADMIN_OPERATIONS:
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"adminToken": []}]
        assert {"401", "403"} <= set(operation["responses"])


def test_an_admin_call_without_the_token_gets_the_documented_error(docs_client, spec):
    response = docs_client.put(
        "/api/v1/income/versions/2/status", json={"status": "staging", "by": "docs"}
    )
    assert response.status_code == 401
    validator(spec, "Error").validate(response.get_json())
    response = docs_client.put(
        "/api/v1/income/versions/2/status",
        json={"status": "staging", "by": "docs"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200


def test_an_invalid_request_gets_the_documented_error_naming_the_field(docs_client, spec):
    example = spec["components"]["schemas"]["income.Observation"]["examples"][0]
    path = "/api/v1/income/predict"
    ok = docs_client.post(path, json={"id": "docs-1", "observation": example})
    assert ok.status_code == 200
    validator(spec, "Prediction").validate(ok.get_json())

    bad = docs_client.post(path, json={"id": "docs-2", "observation": {**example, "age": "old"}})
    assert str(bad.status_code) in spec["paths"][path]["post"]["responses"]
    assert bad.status_code == 422
    body = bad.get_json()
    validator(spec, "Error").validate(body)
    assert [d["field"] for d in body["details"]] == ["observation.age"]


def test_a_batch_row_the_model_refuses_gets_its_own_error(docs_client, spec):
    example = spec["components"]["schemas"]["income.Observation"]["examples"][0]
    response = docs_client.post(
        "/api/v1/income/predict/batch",
        json=[
            {"id": "docs-b1", "observation": example},
            {"id": "docs-b2", "observation": {**example, "age": "old"}},
        ],
    )
    assert response.status_code == 200
    answer = response.get_json()
    validator(spec, "BatchAnswer").validate(answer)
    ok, bad = answer["results"]
    assert ok["status"] == 200
    assert bad["status"] == 422
    assert [d["field"] for d in bad["details"]] == ["observation.age"]


# /docs, with no internet.


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "data-spec") and v]


def test_docs_is_swagger_ui_from_local_assets(docs_client):
    response = docs_client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "SwaggerUIBundle" in page
    assert "validatorUrl: null" in page
    assert "http://" not in page
    assert "https://" not in page
    links = Links()
    links.feed(page)
    assert links.urls, page
    for url in links.urls:
        # Same server: a path, never another host (not even a scheme-relative //host).
        assert url.startswith("/") and not url.startswith("//"), url
        # Closed at once: a file response holds the file open until then.
        with docs_client.get(url) as asset:
            assert asset.status_code == 200, url
    assert "/openapi.json" in links.urls
    assert "/docs/assets/swagger-ui-bundle.js" in links.urls
    assert "/docs/assets/swagger-ui.css" in links.urls


def test_docs_assets_come_from_the_installed_package(docs_client):
    import flask_swagger_ui

    dist = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
    with docs_client.get("/docs/assets/swagger-ui-bundle.js") as response:
        assert response.status_code == 200
        assert response.get_data() == (dist / "swagger-ui-bundle.js").read_bytes()
    with docs_client.get("/docs/assets/swagger-ui.css") as response:
        assert response.mimetype == "text/css"
    for missing in ("/docs/assets/nothing.js", "/docs/assets/../__init__.py"):
        response = docs_client.get(missing)
        assert response.status_code == 404
        assert set(response.get_json()) == {"error", "details"}


# The service bugs schemathesis found, each now a 4xx naming the field.


def admin(client, method: str, path: str, body: dict[str, Any]):
    """An admin call with the token."""
    return client.open(
        path, method=method, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )


def field_of(response) -> list[str]:
    """The fields an error names."""
    return [d["field"] for d in response.get_json()["details"]]


def test_a_nul_character_is_refused_not_a_500(docs_client, spec):
    example = spec["components"]["schemas"]["heights.Observation"]["examples"][0]
    response = docs_client.post(
        "/api/v1/heights/predict", json={"id": "a\x00b", "observation": example}
    )
    assert response.status_code == 422
    assert field_of(response) == ["id"]
    response = docs_client.post("/api/v1/heights/update", json={"id": "a\x00b", "true_class": 1})
    assert response.status_code == 422
    assert field_of(response) == ["id"]
    for field in ("by", "reason"):
        response = admin(
            docs_client,
            "PUT",
            "/api/v1/income/versions/2/status",
            {"status": "staging", field: "x\x00"},
        )
        assert response.status_code == 422, field
        assert field_of(response) == [field]
        response = admin(docs_client, "PUT", "/api/v1/income/shadows/2", {field: "x\x00"})
        assert response.status_code == 422, field
        assert field_of(response) == [field]
    response = admin(
        docs_client,
        "POST",
        "/api/v1/income/ab-tests",
        {"version_a": "1", "version_b": "2", "name": "n\x00"},
    )
    assert response.status_code == 422
    assert field_of(response) == ["name"]


def test_a_long_status_author_is_refused_not_a_500(docs_client):
    response = admin(
        docs_client,
        "PUT",
        "/api/v1/income/versions/2/status",
        {"status": "staging", "by": "b" * 201},
    )
    assert response.status_code == 422
    assert field_of(response) == ["by"]


def test_a_test_id_beyond_64_bits_is_404_not_a_500(docs_client):
    huge = 2**80
    response = docs_client.get(f"/api/v1/income/ab-tests/{huge}")
    assert response.status_code == 404
    assert field_of(response) == ["test_id"]
    response = admin(docs_client, "POST", f"/api/v1/income/ab-tests/{huge}/stop", {})
    assert response.status_code == 404


@pytest.mark.parametrize("window", ["²", "1" * 5000])
def test_a_window_of_odd_digits_is_400_not_a_500(docs_client, window):
    response = docs_client.get(f"/api/v1/income/drift?window={window}")
    assert response.status_code == 400
    assert field_of(response) == ["window"]


def test_a_time_beyond_year_9999_in_utc_is_400_not_a_500(docs_client):
    for name, value in (
        ("since", "0001-01-01T00:00:00+05:00"),
        ("until", "9999-12-31T23:00-05:00"),
    ):
        response = docs_client.get("/api/v1/income/performance", query_string={name: value})
        assert response.status_code == 400, name
        assert field_of(response) == [name]


# The document is derived from the routes (issue 15) and says what clients meet (issue 16).


def test_every_route_has_one_declaration_and_every_declaration_a_route(docs_app):
    from serving.openapi.operations import OPERATIONS

    routes = {rule.endpoint for rule in docs_app.url_map.iter_rules()}
    assert sorted(routes - set(OPERATIONS)) == [], "routes with no entry in OPERATIONS"
    assert sorted(set(OPERATIONS) - routes) == [], "OPERATIONS entries with no route"


def test_summaries_are_the_views_docstrings(docs_app, spec):
    view = docs_app.view_functions["endpoints.status_history"]
    summary = spec["paths"]["/api/v1/{endpoint}/history"]["get"]["summary"]
    assert view.__doc__.startswith(summary)
    # An admin view's "Admin:" is said by its security requirement instead.
    summary = spec["paths"]["/api/v1/{endpoint}/ab-tests"]["post"]["summary"]
    assert summary.startswith("Start an A/B test")
    # Path variables are the rule's own names (the dashboard's is `name`).
    assert "/dashboard/{name}" in spec["paths"]


def test_the_observation_id_pattern_is_the_services_rule(docs_client, spec):
    """\\S in JSON Schema matches a NUL, and Python's strip() removes characters JSON Schema's
    \\s does not: the pattern spells out what the service refuses."""
    id_schema = validator(spec, "ObservationId")
    example = spec["components"]["schemas"]["heights.Observation"]["examples"][0]
    for value in ("\x00", " \x00 ", "\x1c", "\u3000\x85", "a\x00"):
        assert not id_schema.is_valid(value), repr(value)
        response = docs_client.post(
            "/api/v1/heights/predict", json={"id": value, "observation": example}
        )
        assert response.status_code == 422, repr(value)
    for value in ("a", " a ", "\ufeff", "é"):
        assert id_schema.is_valid(value), repr(value)
        response = docs_client.post(
            "/api/v1/heights/predict", json={"id": value, "observation": example}
        )
        assert response.status_code == 200, repr(value)


def test_an_empty_version_or_status_is_the_same_as_none(docs_client, spec):
    example = spec["components"]["schemas"]["income.Observation"]["examples"][0]
    for query in ("version=", "status=", "version=&status="):
        response = docs_client.post(
            f"/api/v1/income/predict?{query}", json={"id": f"empty-{query}", "observation": example}
        )
        assert response.status_code == 200, query
        assert response.get_json()["model_version"] == "1", query
        response = docs_client.post(
            f"/api/v1/income/predict/batch?{query}",
            json=[{"id": f"empty-batch-{query}", "observation": example}],
        )
        assert response.status_code == 200, query
    # With an A/B test running, an empty ?status= lets the test choose, as no ?status= does.
    started = admin(
        docs_client, "POST", "/api/v1/income/ab-tests", {"version_a": "1", "version_b": "2"}
    )
    assert started.status_code == 201, started.get_json()
    response = docs_client.post(
        "/api/v1/income/predict?status=", json={"id": "empty-ab", "observation": example}
    )
    assert response.get_json()["ab_test"] == started.get_json()["id"]
    assert docs_client.get("/api/v1/income/key/name?version=").status_code == 200
    assert docs_client.get("/api/v1/income/performance?version=").status_code == 200
    for name in ("VersionQuery", "StatusQuery"):
        assert "" in spec["components"]["parameters"][name]["schema"]["enum"]


def test_a_multipart_csv_sent_as_a_plain_field_is_read(docs_client, spec):
    example = spec["components"]["schemas"]["heights.Observation"]["examples"][0]
    csv = "id," + ",".join(example) + "\nplain-1," + ",".join(map(str, example.values())) + "\n"
    response = docs_client.post(
        "/api/v1/heights/predict/batch", data={"file": csv}, content_type="multipart/form-data"
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["counts"]["stored"] == 1


def test_the_batch_headers_and_request_ids_are_the_real_ones(docs_client, spec):
    example = spec["components"]["schemas"]["heights.Observation"]["examples"][0]
    response = docs_client.post(
        "/api/v1/heights/predict/batch",
        json=[{"id": "headers-1", "observation": example}],
        headers={"Accept": "text/csv"},
    )
    assert response.status_code == 200
    sent = {name for name, _ in response.headers if name.startswith("X-Batch-")}
    reply = spec["paths"]["/api/v1/heights/predict/batch"]["post"]["responses"]["200"]
    documented = {name for name in reply["headers"] if name.startswith("X-Batch-")}
    assert sent and sent <= documented
    assert documented - sent <= {"X-Batch-Warnings"}
    assert response.headers["X-Request-ID"]
    # Every response documents X-Request-ID; every 503 Retry-After.
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            headers = resolve(spec, response).get("headers", {})
            assert "X-Request-ID" in headers, (method, path, status)
            if status == "503":
                assert "Retry-After" in headers, (method, path, status)


def test_public_operations_say_they_need_no_credentials(spec):
    for path, method, operation in operations(spec):
        if (method, path) not in ADMIN_OPERATIONS:
            assert operation["security"] == [], (method, path)
