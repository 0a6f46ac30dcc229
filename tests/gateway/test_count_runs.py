"""GET /runs/count: GET /runs' filters, counted (RunService.CountRuns), per state when no
state is given; its refusals are GET /runs' own, plus a reversed created range."""

from __future__ import annotations

from datetime import timedelta

from tests.gateway.conftest import T0, Gateway

S0 = int(T0.timestamp())
NONE = {"PENDING": 0, "ASSIGNED": 0, "RUNNING": 0, "COMPLETED": 0, "FAILED": 0, "CANCELLED": 0}


async def count(gateway: Gateway, query: str = "", status: int = 200) -> dict[str, object]:
    return await gateway.call("GET", f"/runs/count{query}", status)  # type: ignore[no-any-return]


async def listed(gateway: Gateway, query: str) -> int:
    sep = "&" if query else "?"
    body = await gateway.call("GET", f"/runs{query}{sep}limit=100", 200)
    return len(body["data"])


async def test_counts_per_state_and_filters(gateway: Gateway) -> None:
    assert await count(gateway) == {"total": 0, "by_state": NONE}
    a = (await gateway.create(image="alpha", event_delivery={"topic": "t1"}))["id"]
    await gateway.create(image="beta")
    c = (await gateway.create(image="alpha"))["id"]
    await gateway.call("POST", f"/runs/{c}/cancel", 200)
    await gateway.event(a, "STARTED")
    assert await count(gateway) == {
        "total": 3,
        "by_state": NONE | {"PENDING": 1, "RUNNING": 1, "CANCELLED": 1},
    }
    for query in (
        "?image=alpha",
        "?topic=t1",
        "?state=CANCELLED",
        "?status=PENDING&image=beta",
        "?state=RUNNING&status=RUNNING",
        "?op_definition=double",
    ):
        body = await count(gateway, query)
        assert body["total"] == await listed(gateway, query), query
    assert await count(gateway, "?state=CANCELLED") == {"total": 1, "by_state": None}


async def test_created_bounds_in_unix_seconds(gateway: Gateway) -> None:
    for offset in (10, 20, 30):
        gateway.clock.set(T0 + timedelta(seconds=offset))
        await gateway.create()
    assert (await count(gateway, f"?created[gte]={S0 + 20}"))["total"] == 2
    assert (await count(gateway, f"?created[gt]={S0 + 10}&created[lt]={S0 + 30}"))["total"] == 2
    body = await count(gateway, f"?created[gte]={S0 + 30}&created[lte]={S0 + 10}", 400)
    assert "created_lte" in body["detail"]


async def test_refusals_are_get_runs_own(gateway: Gateway) -> None:
    body = await count(gateway, "?state=DONE", 400)
    assert body["detail"] == "Invalid state 'DONE'"
    body = await count(gateway, "?state=PENDING&status=CANCELLED", 400)
    assert body["detail"] == "state and status must match when both are provided"
    body = await count(gateway, "?created[gte]=yesterday", 422)
    assert body["detail"][0]["loc"] == ["query", "created[gte]"]
    body = await count(gateway, "?created[lt]=999999999999", 400)
    assert body == {"detail": "Invalid created timestamp"}
    # Not taken for a run id (GET /runs/{id}).
    await gateway.call("GET", "/runs/counts", 404)
