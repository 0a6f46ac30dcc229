"""The REST gateway: the original gyoza router's routes as JSON over HTTP, each one translated
into a gRPC call on a gyoza-grpc server and back. It holds no business logic: every rule is the
server's, and the gateway only changes the spelling (JSON <-> protobuf, gRPC status <-> HTTP).

Needs the `rest` extra (aiohttp); only `app.py`, `sse.py` and `dashboard.py` import it.
"""
