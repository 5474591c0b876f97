"""The JSON Schema of a task spec file, from the same models that validate it.

Editors use it to complete and check specs as they are typed: the YAML language server reads
``# yaml-language-server: $schema=<file>`` at the top of a spec.  Each source is a choice on its
``kind`` (that kind's options plus ``target``), each target a choice on its ``type``, so a new kind
or target type appears here by being registered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model
from pydantic.json_schema import SkipJsonSchema

from metabackup.service import ServiceControl
from metabackup.sources import KINDS, source_kind
from metabackup.spec import SOURCE_NAMES, QueueName, TaskSpec
from metabackup.targets import TYPES, target_config

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _one_of(models: list[type], tag: str) -> Any:
    return Annotated[Union[tuple(models)], Field(discriminator=tag)] if len(models) > 1 else models[0]  # noqa: UP007


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a task spec file (``include/backup_tasks/<name>.yaml``)."""
    target = _one_of([target_config(name) for name in TYPES.names()], "type")
    sources = []
    for name in KINDS.names():
        options = source_kind(name).Options
        sources.append(create_model(
            f"{name.capitalize()}Source", __base__=options, __doc__=options.__doc__,
            kind=(Literal[name], Field(description=f"the source kind: {name}")),
            target=(target, Field(description="where this source's backups are kept")),
            copies=(list[target], Field([], description="off-site copies: further targets each committed set is "
                                                         "replicated to, each with its own max_backups")),
            service=(ServiceControl | None, Field(None, description="how to stop, start and check the source's "
                                                                    "service, its live directories and their owner "
                                                                    "(for an in-place restore)")),
            queue=(QueueName | None, Field(None, description="the Celery queue of this source's tasks (a worker "
                                                             "on the host that holds its data); default: the "
                                                             "spec's queue")),
        ))
    spec_file = create_model(
        "TaskSpecFile", __base__=TaskSpec, __doc__=TaskSpec.__doc__,
        path=(SkipJsonSchema[str], ""),
        sources=(dict[Literal[SOURCE_NAMES], _one_of(sources, "kind")],
                 Field(description="each source to back up, by name, with its kind's options and its target")),
    )
    schema = spec_file.model_json_schema()
    names = schema["$defs"]["Policy"]["properties"]["type"]["enum"]  # a policy may be its name alone
    schema["properties"]["policy"] = {"anyOf": [{"type": "string", "enum": names}, {"$ref": "#/$defs/Policy"}],
                                      "description": "full or incremental: a policy name, or its type and n"}
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "metabackup backup task spec"}
