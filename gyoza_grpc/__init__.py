"""gyoza-grpc: gyoza's run server as a gRPC service."""

__version__ = "0.1.0"
