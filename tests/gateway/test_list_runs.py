"""GET /runs as the original documents it: the list envelope, every filter, state/status
alias, created[...] in UNIX seconds, and Stripe-style paging with has_more."""

from __future__ import annotations

from datetime import timedelta

from tests.gateway.conftest import T0, Gateway

S0 = int(T0.timestamp())


async def ids(gateway: Gateway, query: str, status: int = 200) -> list[str]:
    body = await gateway.call("GET", f"/runs{query}", status)
    return [r["id"] for r in body["data"]]


async def test_envelope_newest_first(gateway: Gateway) -> None:
    made = [(await gateway.create(image=f"img{i}"))["id"] for i in range(3)]
    body = await gateway.call("GET", "/runs", 200)
    assert set(body) == {"object", "data", "has_more", "url"}
    assert (body["object"], body["has_more"], body["url"]) == ("list", False, "/runs")
    assert [r["id"] for r in body["data"]] == made[::-1]
    assert body["data"][0]["events"] == []  # runs listed as the original shows them
    empty = await gateway.call("GET", "/runs?image=nothing", 200)
    assert (empty["data"], empty["has_more"]) == ([], False)


async def test_paging_forward_and_back(gateway: Gateway) -> None:
    made = [(await gateway.create())["id"] for _ in range(5)]
    newest_first = made[::-1]
    page1 = await gateway.call("GET", "/runs?limit=2", 200)
    assert [r["id"] for r in page1["data"]] == newest_first[:2]
    assert page1["has_more"] is True
    page2 = await gateway.call("GET", f"/runs?limit=2&starting_after={newest_first[1]}", 200)
    assert [r["id"] for r in page2["data"]] == newest_first[2:4]
    assert page2["has_more"] is True
    page3 = await gateway.call("GET", f"/runs?limit=2&starting_after={newest_first[3]}", 200)
    assert [r["id"] for r in page3["data"]] == newest_first[4:]
    assert page3["has_more"] is False
    # ending_before: the previous (newer) page, still newest first; has_more looks that way.
    back = await gateway.call("GET", f"/runs?limit=2&ending_before={newest_first[4]}", 200)
    assert [r["id"] for r in back["data"]] == newest_first[2:4]
    assert back["has_more"] is True
    top = await gateway.call("GET", f"/runs?limit=2&ending_before={newest_first[2]}", 200)
    assert [r["id"] for r in top["data"]] == newest_first[:2]
    assert top["has_more"] is False


async def test_paging_refusals(gateway: Gateway) -> None:
    a = (await gateway.create())["id"]
    body = await gateway.call("GET", "/runs?starting_after=nope", 400)
    assert "starting_after" in body["detail"]
    await gateway.call("GET", f"/runs?starting_after={a}&ending_before={a}", 400)
    # limit keeps the original's declared bounds: FastAPI's 422 outside 1..100.
    for bad in ("0", "101", "ten"):
        body = await gateway.call("GET", f"/runs?limit={bad}", 422)
        assert body["detail"][0]["loc"] == ["query", "limit"]
    assert len(await ids(gateway, "?limit=100")) == 1


async def test_filters(gateway: Gateway) -> None:
    a = (await gateway.create(image="alpha", event_delivery={"topic": "t1"}))["id"]
    b = (await gateway.create(image="beta"))["id"]
    c = (await gateway.create(image="alpha"))["id"]
    await gateway.call("POST", f"/runs/{c}/cancel", 200)
    assert await ids(gateway, "?image=alpha") == [c, a]
    assert await ids(gateway, "?image=beta") == [b]
    assert await ids(gateway, "?state=CANCELLED") == [c]
    assert await ids(gateway, "?state=PENDING") == [b, a]
    assert await ids(gateway, "?state=PENDING&image=alpha") == [a]
    assert await ids(gateway, "?topic=t1") == [a]
    assert await ids(gateway, "?op_definition=double") == []


async def test_state_and_status_alias(gateway: Gateway) -> None:
    a = (await gateway.create())["id"]
    b = (await gateway.create())["id"]
    await gateway.call("POST", f"/runs/{b}/cancel", 200)
    assert await ids(gateway, "?status=PENDING") == [a]
    assert await ids(gateway, "?state=CANCELLED&status=CANCELLED") == [b]
    body = await gateway.call("GET", "/runs?state=PENDING&status=CANCELLED", 400)
    assert body["detail"] == "state and status must match when both are provided"
    body = await gateway.call("GET", "/runs?state=DONE", 400)
    assert body["detail"] == "Invalid state 'DONE'"
    body = await gateway.call("GET", "/runs?status=pending", 400)
    assert body["detail"] == "Invalid state 'pending'"


async def test_created_filters_in_unix_seconds(gateway: Gateway) -> None:
    # Runs created at S0+10.001, S0+20.001, S0+30.001 (the clock steps 1 ms per reading).
    made = []
    for offset in (10, 20, 30):
        gateway.clock.set(T0 + timedelta(seconds=offset))
        made.append((await gateway.create())["id"])
    r10, r20, r30 = made
    assert await ids(gateway, f"?created[gte]={S0 + 20}") == [r30, r20]
    assert await ids(gateway, f"?created[gt]={S0 + 21}") == [r30]
    assert await ids(gateway, f"?created[lte]={S0 + 21}") == [r20, r10]
    assert await ids(gateway, f"?created[lt]={S0 + 20}") == [r10]
    # S0+10.001 is after S0+10
    assert await ids(gateway, f"?created[gt]={S0 + 10}&created[lt]={S0 + 30}") == [r20, r10]
    assert await ids(gateway, f"?created[gt]={S0 + 11}&created[lt]={S0 + 30}") == [r20]
    assert await ids(gateway, f"?created[gte]={S0 + 31}") == []
    # Not an integer: 422; a time no datetime can hold: the original's 400.
    await gateway.call("GET", "/runs?created[gte]=yesterday", 422)
    for bad in ("99999999999999999999", "999999999999", "-99999999999"):
        body = await gateway.call("GET", f"/runs?created[lt]={bad}", 400)
        assert body == {"detail": "Invalid created timestamp"}
