"""Each service's HTTP contract, declared once on its views: pydantic models validate what comes in, and the same
models describe every operation (and its answers) in the service's OpenAPI 3.1 document, built by apispec and
served at /openapi.json.

Answers are documented, not validated at run time (that would cost every request): schemathesis checks, in the
test suite, that the services answer as documented."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from apispec import APISpec
from flask import Flask, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema

from .errors import PROBLEM_CONTENT_TYPE, ValidationFailed
from .validation import json_body

P = ParamSpec("P")
R = TypeVar("R")

OPENAPI_VERSION = "3.1.0"
BEARER = "bearer"  # the security scheme every token-protected operation names


_HINTS: dict[str, str] = {}  # pattern → what it asks for, in words: the 400's message says that, not the regex


def matching(pattern: str, hint: str, default: Any = ..., **constraints: Any) -> Any:
    """A string field that must match `pattern` (anchored: ^...$), described to people as `hint`."""
    _HINTS[pattern] = hint
    return Field(default, pattern=pattern, description=hint, **constraints)


class Body(BaseModel):
    """A JSON request body: types are what JSON says (no "1" for 1, no true for 1), unknown fields are ignored."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class StrictBody(Body):
    """A body where an unknown field is a mistake worth naming (admin changes: a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class Query(BaseModel):
    """Query parameters: text by nature, so numbers are read from it."""

    model_config = ConfigDict(allow_inf_nan=False)


class Paging(Query):
    limit: int = Field(20, ge=1, le=100, description="at most this many items")
    offset: int = Field(0, ge=0, le=1_000_000, description="skip this many first")


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details: the shape of every error answer (errors: one entry per invalid field)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


@dataclass(frozen=True)
class Header:
    name: str
    description: str
    pattern: str
    required: bool = True


# A model, or where the app keeps it (a service's faults are its own): resolved in the app's context.
ModelSource = type[BaseModel] | Callable[[], type[BaseModel]]


def _model(source: ModelSource) -> type[BaseModel]:
    return source if isinstance(source, type) else source()


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, type[BaseModel] | None]
    body: ModelSource | None = None
    body_optional: bool = False  # no body at all reads as {}
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None  # described only: Flask's converters and the view read path parameters
    headers: tuple[Header, ...] = ()
    secured: bool = False


def operation(
    summary: str,
    *,
    responses: Mapping[int, type[BaseModel] | None],
    body: ModelSource | None = None,
    body_optional: bool = False,
    query: type[BaseModel] | None = None,
    path: type[BaseModel] | None = None,
    headers: tuple[Header, ...] = (),
    secured: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a view's contract. The view gets the validated `body` and `query` as keyword arguments; invalid
    input is a 400 problem naming every bad field. `responses`: status → model of the JSON answer (None: no
    model); every error answer is problem details, documented as the default response."""
    spec = Operation(summary, responses, body, body_optional, query, path, headers, secured)

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def validated(*args: P.args, **kwargs: P.kwargs) -> R:
            if spec.query is not None:
                kwargs["query"] = parse(spec.query, request.args.to_dict())
            if spec.body is not None:
                empty = (
                    spec.body_optional
                    and not request.content_length
                    and "chunked" not in request.headers.get("Transfer-Encoding", "")
                )
                kwargs["body"] = parse(_model(spec.body), {} if empty else json_body())
            return view(*args, **kwargs)

        validated.__openapi__ = spec  # type: ignore[attr-defined]  # functools.wraps carries it outward
        return validated

    return decorate


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """`data` as a `model`, or a 400 problem listing each invalid field as `items[0].quantity`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A validator of a whole list names the item at fault with ctx["at"] (e.g. "[1].product_id").
        errors = [
            {"field": field_name(error["loc"]) + error.get("ctx", {}).get("at", ""), "message": _message(error)}
            for error in exc.errors(include_url=False, include_input=False)  # the input may be a card number
        ]
        raise ValidationFailed(errors) from None


def _message(error: Any) -> str:
    hint = _HINTS.get(error.get("ctx", {}).get("pattern", "")) if error["type"] == "string_pattern_mismatch" else None
    return f"must be {hint}" if hint else str(error["msg"])


def field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


_RULE_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """Flask's `/products/<int:product_id>` as OpenAPI's `/products/{product_id}`."""
    return _RULE_PARAMETER.sub(r"{\1}", rule)


def document(app: Flask, title: str, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared operation of `app`."""
    declared = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        spec = getattr(app.view_functions[rule.endpoint], "__openapi__", None)
        if isinstance(spec, Operation):
            methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
            declared.append((rule.rule, methods, spec))
    refs, schemas = _schemas([spec for _, _, spec in declared])
    api = APISpec(title=title, version=version, openapi_version=OPENAPI_VERSION, info={"description": description})
    api.components.security_scheme(BEARER, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for name, schema in schemas.items():
        api.components.schema(name, schema)
    for path, methods, spec in declared:
        api.path(
            path=openapi_path(path),
            operations={method.lower(): _operation(spec, refs) for method in methods},
        )
    return api.to_dict()


def _schemas(specs: list[Operation]) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
    """pydantic's JSON Schemas of every model the operations name, as components, and each model's $ref."""
    wanted: list[tuple[type[BaseModel], Any]] = [(ProblemDetails, "serialization")]
    for spec in specs:
        sources = (spec.body, spec.query, spec.path)
        wanted += [(_model(source), "validation") for source in sources if source is not None]
        wanted += [(model, "serialization") for model in spec.responses.values() if model is not None]
    refs, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}")
    by_model: dict[tuple[type[BaseModel], str], dict[str, Any]] = {}
    for (model, mode), ref in refs.items():
        if isinstance(model, type) and issubclass(model, BaseModel):
            by_model[model, mode] = ref
    return by_model, definitions.get("$defs", {})


def _parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    parameters = []
    for name, property_schema in schema["properties"].items():
        described = {key: value for key, value in property_schema.items() if key not in ("title", "description")}
        parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": described}
        if "description" in property_schema:
            parameter["description"] = property_schema["description"]
        parameters.append(parameter)
    return parameters


def _operation(spec: Operation, refs: Mapping[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if spec.path is not None:
        parameters += _parameters(spec.path, "path")
    if spec.query is not None:
        parameters += _parameters(spec.query, "query")
    for header in spec.headers:
        parameters.append(
            {
                "name": header.name,
                "in": "header",
                "required": header.required,
                "description": header.description,
                "schema": {"type": "string", "pattern": header.pattern},
            }
        )
    problem = {"$ref": refs[(ProblemDetails, "serialization")]["$ref"]}
    responses: dict[str, Any] = {}
    for status, model in sorted(spec.responses.items()):
        answer: dict[str, Any] = {"description": _describe(status)}
        if model is not None:
            answer["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(status)] = answer
    responses["default"] = {
        "description": "An error, as problem details (RFC 9457)",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": problem}},
    }
    described: dict[str, Any] = {"summary": spec.summary, "responses": responses}
    if parameters:
        described["parameters"] = parameters
    if spec.body is not None:
        described["requestBody"] = {
            "required": not spec.body_optional,
            "content": {"application/json": {"schema": refs[(_model(spec.body), "validation")]}},
        }
    if spec.secured:
        described["security"] = [{BEARER: []}]
    return described


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 402: "Payment required"}


def _describe(status: int) -> str:
    return _REASONS.get(status, f"HTTP {status}")
