"""Run `phoenix serve` with every listener on 127.0.0.1 (run by the Phoenix venv's python).

PHOENIX_HOST binds the HTTP server; Phoenix 20.x has no setting for its gRPC receiver, which
binds [::]. This wrapper rewrites that address to loopback before the server starts.
"""

import runpy
import sys

import grpc.aio

_make_server = grpc.aio.server


def _loopback_server(*args, **kwargs):
    server = _make_server(*args, **kwargs)
    add_insecure_port = server.add_insecure_port
    server.add_insecure_port = lambda address: add_insecure_port(address.replace("[::]", "127.0.0.1"))
    return server


grpc.aio.server = _loopback_server
sys.argv = ["phoenix", "serve"]
runpy.run_module("phoenix.server.main", run_name="__main__")
