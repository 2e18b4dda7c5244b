"""The HTTP edge shared by every service: Matrix error handlers, CORS, strict
JSON bodies. Metrics, health and request ids are in libs/metrics."""
from libs.http.body import DEFAULT_MAX_BODY, json_body, read_body_limited, read_json_body
from libs.http.cors import CORSMiddleware
from libs.http.errors import CatchAllMiddleware, install_error_handlers, matrix_error_response

__all__ = [
    "CORSMiddleware",
    "CatchAllMiddleware",
    "DEFAULT_MAX_BODY",
    "install_error_handlers",
    "json_body",
    "matrix_error_response",
    "read_body_limited",
    "read_json_body",
]
