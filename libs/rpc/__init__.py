"""The internal API over HTTP: one generic server (`rpc_router`) and client (`RpcClient`)
for any service Protocol of async methods with dataclass arguments and results."""
from .client import RpcClient, ServiceUnavailable
from .codec import CodecError, decode, encode
from .protocol import MethodSpec, protocol_methods
from .server import PATH_PREFIX, SECRET_HEADER, rpc_router

__all__ = ["RpcClient", "ServiceUnavailable", "CodecError", "decode", "encode", "MethodSpec",
           "protocol_methods", "PATH_PREFIX", "SECRET_HEADER", "rpc_router"]
