"""Check a Kubernetes object, as parsed from YAML, against a schema, and name the path of every mistake.

The schema is the Kubernetes API's own: the model classes of the official `kubernetes` Python client (pinned in
constraints.txt). Each class, e.g. ``kubernetes.client.V1PodTemplateSpec``, declares

- ``attribute_map``: Python attribute → the key a manifest uses (camelCase, e.g. ``volume_mounts`` →
  ``volumeMounts``). A key that is not among these values is an unknown field, as the API server's strict field
  validation (kubectl's default) treats it.
- ``openapi_types``: Python attribute → the declared type, in the client's notation: ``str``, ``int``, ``bool``,
  ``float``, ``datetime``, ``object`` (anything: int-or-string ports, free-form JSON), ``list[T]``,
  ``dict[str, T]``, or the name of another model class.
- Required fields: the client encodes the OpenAPI ``required`` list in its setters, which raise ``ValueError``
  on ``None`` while client-side validation is on (``V1Container.name``, ``V1VolumeMount.mountPath``, …).

The walker is stricter than the API server in one place: resource quantities (``limits``, ``requests``) are
declared ``dict[str, str]``, so ``cpu: 4`` is refused where the server would accept it; write ``cpu: "4"``.

The client is held at 36.x: 37.x generates pydantic models, whose required fields are no longer in the setters,
and 37.0.2 needs python-dateutil ≥ 3, which botocore, aiobotocore and prefect refuse.

Schemas that are not Kubernetes models (KubeRay's custom resources, tests/kuberay_schema.py) are tables of
`Field`s in the same notation, passed as ``tables``; a name found there is looked up there first.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import kubernetes.client

LIST = re.compile(r"list\[(?P<item>.+)\]")
DICT = re.compile(r"dict\[str, (?P<value>.+)\]")
SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str, datetime.datetime),  # YAML reads an unquoted timestamp as a datetime
    "object": (object,),
}

Tables = Mapping[str, Mapping[str, "Field"]]
NO_TABLES: Tables = MappingProxyType({})


@dataclass(frozen=True)
class Field:
    """One key of an object: its declared type (client notation), whether it must be present, and, for a string
    that takes one of a few values, those values (empty: any)."""

    type: str
    required: bool = False
    allowed: tuple[str, ...] = ()


def problems(value: object, declared: str, path: str, tables: Tables = NO_TABLES) -> list[str]:
    """Every way `value` fails to be a `declared`, each as 'path: what is wrong'; empty when it is one."""
    if item := LIST.fullmatch(declared):
        return list_problems(value, item["item"], path, tables)
    if entry := DICT.fullmatch(declared):
        return dict_problems(value, entry["value"], path, tables)
    if declared in SCALARS:
        return scalar_problems(value, declared, path)
    fields = tables[declared] if declared in tables else kubernetes_fields(declared)
    return object_problems(value, declared, fields, path, tables)


def object_problems(value: object, name: str, fields: Mapping[str, Field], path: str, tables: Tables) -> list[str]:
    """Unknown keys, missing required keys, then each present key checked against its field."""
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping ({name}), got {type(value).__name__}"]
    found = [f"{join(path, key)}: unknown field of {name}" for key in value if key not in fields]
    found += [f"{join(path, key)}: required by {name}, missing" for key, field in fields.items()
              if field.required and key not in value]
    for key, item in value.items():
        if key in fields:
            found += field_problems(item, fields[key], join(path, key), tables)
    return found


def field_problems(value: object, field: Field, path: str, tables: Tables) -> list[str]:
    found = problems(value, field.type, path, tables)
    if not found and field.allowed and value not in field.allowed:
        found.append(f"{path}: {value!r} is not one of {', '.join(field.allowed)}")
    return found


def list_problems(value: object, item: str, path: str, tables: Tables) -> list[str]:
    if not isinstance(value, list):
        return [f"{path}: expected a list of {item}, got {type(value).__name__}"]
    return [problem for index, element in enumerate(value)
            for problem in problems(element, item, f"{path}[{index}]", tables)]


def dict_problems(value: object, entry: str, path: str, tables: Tables) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping of str to {entry}, got {type(value).__name__}"]
    found = [f"{join(path, str(key))}: keys must be strings" for key in value if not isinstance(key, str)]
    return found + [problem for key, element in value.items()
                    for problem in problems(element, entry, join(path, str(key)), tables)]


def scalar_problems(value: object, declared: str, path: str) -> list[str]:
    # bool is an int to Python, not to Kubernetes: `replicas: true` is a mistake
    wrong_bool = isinstance(value, bool) and declared in ("int", "float")
    if wrong_bool or not isinstance(value, SCALARS[declared]):
        return [f"{path}: expected {declared}, got {type(value).__name__} {value!r}"]
    return []


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@functools.cache
def kubernetes_fields(model_name: str) -> dict[str, Field]:
    """The fields of a `kubernetes.client` model class, keyed as a manifest spells them."""
    model = getattr(kubernetes.client, model_name)
    required = required_attributes(model)
    return {key: Field(model.openapi_types[attribute], required=attribute in required)
            for attribute, key in model.attribute_map.items()}


def required_attributes(model: type) -> set[str]:
    """The attributes whose setter refuses None under client-side validation: the model's required fields.

    The instance is built with validation off (its constructor sets every attribute to None), then validation is
    turned on and each attribute is set to None again.
    """
    unchecked = kubernetes.client.Configuration()
    unchecked.client_side_validation = False
    instance = model(local_vars_configuration=unchecked)
    instance.local_vars_configuration = kubernetes.client.Configuration()
    instance.local_vars_configuration.client_side_validation = True
    required = set()
    for attribute in model.openapi_types:
        try:
            setattr(instance, attribute, None)
        except ValueError:
            required.add(attribute)
    return required
