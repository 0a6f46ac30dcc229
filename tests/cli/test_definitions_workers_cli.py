"""`gyoza-grpc definitions ...` and `workers list` as processes against a real server."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from gyoza.v1 import definitions_pb2, workers_pb2, workers_pb2_grpc
from tests.cli.conftest import CliServer, cli
from tests.service.helpers import as_dict, get

THUMBNAIL = {
    "name": "thumbnail",
    "version": "1.0.0",
    "image": "ghcr.io/acme/thumbnail:1.0",
    "input_specs": {
        "url": {"type": "INPUT_TYPE_STRING", "required": True},
        "width": {"type": "INPUT_TYPE_INT", "default": 256},
    },
    "retry_policy": {"max_attempts": 3},
    "event_delivery": {"topic": "thumbnails"},
}


async def test_definitions_upsert_get_list_and_a_run_from_one(
    srv: CliServer, tmp_path: Path
) -> None:
    path = tmp_path / "thumbnail.json"
    path.write_text(json.dumps(THUMBNAIL))
    added = await cli(srv.target, "definitions", "upsert", str(path))
    assert added.code == 0, added.err
    assert "thumbnail@1.0.0: added" in added.err
    rows = dict(line.split(None, 1) for line in added.out.splitlines() if " " in line.strip())
    assert rows["image"].strip() == "ghcr.io/acme/thumbnail:1.0"

    # The request shape works too ({"definition": ...}), from stdin; a repeat changes nothing.
    again = await cli(
        srv.target, "definitions", "upsert", "-", "--json",
        stdin=json.dumps({"definition": THUMBNAIL}).encode(),
    )  # fmt: skip
    assert again.code == 0, again.err
    assert json.loads(again.out)["created"] is False

    shown = await cli(srv.target, "definitions", "get", "thumbnail", "--json")
    assert shown.code == 0, shown.err
    definition = json_format.Parse(shown.out, definitions_pb2.Definition())
    assert definition.version == "1.0.0" and definition.input_specs["url"].required
    assert definition.input_specs["width"].default.number_value == 256

    listed = await cli(srv.target, "definitions", "list")
    assert listed.code == 0, listed.err
    table = [line.split() for line in listed.out.splitlines()]
    assert table[0][:3] == ["NAME", "VERSION", "IMAGE"]
    assert table[1][:5] == ["thumbnail", "1.0.0", "ghcr.io/acme/thumbnail:1.0", "url,", "width"]

    made = await cli(
        srv.target, "runs", "create", "--definition", "thumbnail", "--input", "url=s3://cat.jpg",
        "-q",
    )  # fmt: skip
    assert made.code == 0, made.err
    run = await get(srv.runs, made.out.strip())
    assert (run.op_definition, run.definition_version) == ("thumbnail", "1.0.0")
    assert as_dict(run.inputs) == {"url": "s3://cat.jpg", "width": 256}

    path.write_text(json.dumps(dict(THUMBNAIL, colour="red")))
    unknown_field = await cli(srv.target, "definitions", "upsert", str(path))
    assert unknown_field.code == 2
    assert "is not a gyoza.v1.Definition" in unknown_field.err and "colour" in unknown_field.err


async def test_workers_list_after_a_heartbeat(srv: CliServer) -> None:
    workers = workers_pb2_grpc.WorkerServiceStub(srv.channel)
    resources = workers_pb2.Resources(
        cpu=8, ram_mb=16000, gpus=[workers_pb2.Gpu(gpu_id=0, vram_mb=24000)]
    )
    await workers.Heartbeat(
        workers_pb2.HeartbeatRequest(worker_id="gpu-box-1", resources=resources, tags=["gpu"])
    )
    listed = await cli(srv.target, "workers", "list")
    assert listed.code == 0, listed.err
    header, row = (line.split() for line in listed.out.splitlines())
    assert header[:3] == ["WORKER", "STATE", "CPU"]
    assert row[:7] == ["gpu-box-1", "ALIVE", "8/8", "16000/16000", "0:24000", "gpu", "0"]
