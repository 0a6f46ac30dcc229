"""`gyoza-grpc definitions upsert|get|list`: the handlers, and the table of commands
(`DEFINITIONS`) at the end."""

from __future__ import annotations

import argparse
import json

from google.protobuf import json_format

from gyoza.v1 import definitions_pb2
from gyoza_grpc.client import Client
from gyoza_grpc.client_cli.commands import Command, Group, flag
from gyoza_grpc.client_cli.failures import EXIT_OK, UsageError
from gyoza_grpc.client_cli.inputs import int32, read_json_object
from gyoza_grpc.client_cli.output import Output, enum_name, plain, when

D = definitions_pb2


def read_definition(path: str) -> definitions_pb2.Definition:
    doc = read_json_object(path, "FILE")
    request = D.UpsertDefinitionRequest()
    try:
        if set(doc) == {"definition"}:
            json_format.ParseDict(doc, request)
        else:
            json_format.ParseDict(doc, request.definition)
    except json_format.ParseError as err:
        raise UsageError(f"FILE: {path} is not a gyoza.v1.Definition: {err}") from None
    return request.definition


def upsert_definition(args: argparse.Namespace, client: Client, out: Output) -> int:
    resp = client.upsert_definition(read_definition(args.file))
    if out.as_json:
        out.json_document(resp)
        return EXIT_OK
    show_definition(out, resp.definition)
    d = resp.definition
    out.note(f"{d.name}@{d.version}: {'added' if resp.created else 'unchanged (already stored)'}")
    return EXIT_OK


def get_definition(args: argparse.Namespace, client: Client, out: Output) -> int:
    definition = client.get_definition(args.name, version=args.version)
    if out.as_json:
        out.json_document(definition)
    else:
        show_definition(out, definition)
    return EXIT_OK


def list_definitions(args: argparse.Namespace, client: Client, out: Output) -> int:
    pager = client.list_definitions(page_size=args.limit, starting_after=args.starting_after)
    page = pager.first_page()
    if out.as_json:
        out.json_document(D.ListDefinitionsResponse(definitions=page.items, has_more=page.has_more))
        return EXIT_OK
    out.table(
        ("NAME", "VERSION", "IMAGE", "INPUTS", "TOPIC", "CREATED"),
        (
            (
                d.name,
                d.version,
                d.image,
                ", ".join(sorted(d.input_specs)) or "-",
                d.event_delivery.topic or "-",
                when(d.created_at),
            )
            for d in page.items
        ),
    )
    if page.has_more and page.items:
        out.note(f"more: --starting-after {page.items[-1].name}")
    return EXIT_OK


def _spec(spec: definitions_pb2.InputSpec) -> str:
    text = enum_name(D.InputType, spec.type, "INPUT_TYPE_").lower()
    if spec.required:
        text += ", required"
    if spec.HasField("default"):
        text += f", default {json.dumps(plain(json_format.MessageToDict(spec.default)))}"
    return text


def show_definition(out: Output, d: definitions_pb2.Definition) -> None:
    pairs: list[tuple[str, str]] = [
        ("name", d.name),
        ("version", d.version),
        ("image", d.image),
    ]
    if d.description:
        pairs.append(("description", d.description))
    for name in sorted(d.input_specs):
        pairs.append((f"input {name}", _spec(d.input_specs[name])))
    for name in sorted(d.output_specs):
        pairs.append((f"output {name}", _spec(d.output_specs[name])))
    c = d.constraints
    needs = [
        f"{f} {getattr(c, f)}" for f in ("cpu", "ram_mb", "vram_mb", "gpu_id") if c.HasField(f)
    ]
    pairs += [
        ("needs", ", ".join(needs) or "-"),
        ("max attempts", str(max(d.retry_policy.max_attempts, 1))),
        ("topic", d.event_delivery.topic or "-"),
        ("created", when(d.created_at)),
    ]
    out.fields(pairs)


DEFINITIONS = Group(
    "definitions",
    "publish and read op definitions",
    (
        Command(
            "upsert",
            "add a definition version from a JSON file",
            upsert_definition,
            (flag("file", metavar="FILE"),),
            "Add a version of an op definition. FILE ('-' for stdin) holds a "
            'gyoza.v1.Definition as proto3 JSON ({"name": ..., "version": ..., "image": ..., '
            '"input_specs": {...}, ...}) or an UpsertDefinitionRequest ({"definition": {...}}). '
            "Re-sending a stored version with the same body changes nothing.",
        ),
        Command(
            "get",
            "show one definition version",
            get_definition,
            (flag("name"), flag("--version", default="", help="default: the latest")),
        ),
        Command(
            "list",
            "list the latest version of each definition, by name",
            list_definitions,
            (
                flag("--limit", type=int32, default=0, help="1..100 (server default 10)"),
                flag("--starting-after", default="", metavar="NAME"),
            ),
        ),
    ),
)
