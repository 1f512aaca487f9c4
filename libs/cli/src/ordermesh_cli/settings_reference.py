"""Every ``ORDERMESH_*`` setting of every service, from the services' own settings
models: ``ordermesh settings`` prints it, and docs/settings.md is its output (a unit
test fails when they differ), so the reference cannot drift from the code."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from ordermesh_cli.registry import load_service
from ordermesh_messaging.settings import ConsumerSettings, KafkaSettings, RelaySettings
from ordermesh_platform.service_names import SERVICE_NAMES
from ordermesh_platform.settings import ServiceSettings

HEADER = """\
# Settings reference

Every setting of every service, read from its environment: the variable, its default,
and what it does. Generated from the services' settings models by
`.venv/bin/ordermesh settings > docs/settings.md`; `make test` fails when this file and
the code differ. The other documents explain the settings in context: search them for
the variable's name. OpenTelemetry's own `OTEL_*` variables are in
[observability.md](observability.md), the chart's values in [deploy.md](deploy.md).

A setting shared by several services is listed once, under the first group that has it;
a service whose default differs lists it again in its own section.
"""


# The shared bases, in the order a service's model inherits them.
GROUPS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("Every service", ServiceSettings),
    ("Every service: Kafka", KafkaSettings),
    ("Services with an outbox (order, inventory, payment): the relay", RelaySettings),
    ("Services with a consumer (payment, notification)", ConsumerSettings),
)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        return "a development value (set it)"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != "" else "empty"


def _meaning(name: str, field: FieldInfo, bases: Sequence[type[BaseSettings]]) -> str:
    """The field's description; a service that only changes a default takes its base's."""
    if field.description:
        return field.description
    for base in bases:
        inherited = base.model_fields.get(name)
        if inherited is not None and inherited.description:
            return inherited.description
    return ""


def _rows(
    model: type[BaseSettings], names: Sequence[str], bases: Sequence[type[BaseSettings]]
) -> Iterator[str]:
    prefix = str(model.model_config.get("env_prefix", ""))
    yield "| variable | default | meaning |"
    yield "| --- | --- | --- |"
    for name in names:
        field = model.model_fields[name]
        meaning = " ".join(_meaning(name, field, bases).split()).replace("|", "\\|")
        yield f"| `{(prefix + name).upper()}` | {_default(field)} | {meaning} |"


def render() -> str:
    bases = [model for _, model in GROUPS]
    parts = [HEADER]
    listed: dict[str, FieldInfo] = {}
    for title, model in GROUPS:
        names = [n for n in model.model_fields if n not in listed]
        listed.update((n, model.model_fields[n]) for n in names)
        parts += [f"## {title}\n", *_rows(model, names, bases), ""]
    for service in SERVICE_NAMES:
        model = load_service(service).settings_type
        own = [
            name
            for name, field in model.model_fields.items()
            if name not in listed or _default(field) != _default(listed[name])
        ]
        parts += [f"## {service}\n", *_rows(model, own, bases), ""]
    return "\n".join(parts)
