"""The container a docker attempt asks for: labels, init, limits, GPU, environment, network."""

from __future__ import annotations

import re

from gyoza_grpc.worker.container_spec import container_config, container_name
from tests.worker.helpers import make_claim


def test_a_plain_run_gets_labels_init_no_network_and_its_variables() -> None:
    claim = make_claim("r1", 3)
    config = container_config(claim, "w1", labels={"team": "vision"}, env={"MODE": "fast"})
    assert config["Image"] == "img"
    assert config["Labels"] == {
        "team": "vision",
        "gyoza.run_id": "r1",
        "gyoza.attempt": "3",
        "gyoza.worker_id": "w1",
    }
    assert sorted(config["Env"]) == [
        "GYOZA_ATTEMPT=3",
        "GYOZA_RUN_ID=r1",
        "GYOZA_WORKER_ID=w1",
        "MODE=fast",
    ]
    assert config["HostConfig"] == {"Init": True, "NetworkMode": "none"}
    assert (config["OpenStdin"], config["StdinOnce"], config["Tty"]) == (True, True, False)
    assert "Cmd" not in config and "Entrypoint" not in config  # the image's own run


def test_constraints_become_limits_and_the_gpu_a_device_request() -> None:
    claim = make_claim(cpu=2, ram_mb=512, vram_mb=4000, gpu_id=1)
    config = container_config(claim, "w", network="bridge")
    host = config["HostConfig"]
    assert host["NanoCpus"] == 2_000_000_000
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
    assert host["NetworkMode"] == "bridge"
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["gpu"]]}
    ]
    assert {"GYOZA_GPU_ID=1", "NVIDIA_VISIBLE_DEVICES=1"} <= set(config["Env"])


def test_the_gyoza_variables_and_labels_win_over_the_operators() -> None:
    config = container_config(
        make_claim("r1"),
        "w1",
        labels={"gyoza.run_id": "forged"},
        env={"GYOZA_RUN_ID": "forged", "GYOZA_GPU_ID": "7"},
    )
    assert config["Labels"]["gyoza.run_id"] == "r1"
    assert "GYOZA_RUN_ID=r1" in config["Env"] and "GYOZA_RUN_ID=forged" not in config["Env"]
    assert not [e for e in config["Env"] if e.startswith("GYOZA_GPU_ID")]  # no GPU given


def test_names_are_valid_and_unique() -> None:
    claim = make_claim("01a2-x/y z", 2)
    names = {container_name(claim) for _ in range(20)}
    assert len(names) == 20
    for name in names:
        assert re.fullmatch(r"gyoza-01a2-x-y-z-2-[0-9a-f]{6}", name)
