"""Helpers of the reliability suite: hook counts, log counts, a loopback OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import logging
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

PACKAGE_LOGGER = "opentelemetry_instrumentation_corevital"


def probe_count(model: torch.nn.Module) -> int:
    """Forward and forward-pre hooks on every submodule of the model, and submodules with a
    `forward` of their own (the layer probes)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + ("forward" in m.__dict__) for m in model.modules())


def our_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(PACKAGE_LOGGER) and r.levelno >= logging.WARNING]


def no_eos(model) -> dict:
    """generate kwargs that make every call produce exactly max_new_tokens tokens."""
    return {"eos_token_id": None, "pad_token_id": model.generation_config.pad_token_id}


class OTLPReceiver:
    """A real OTLP/HTTP endpoint on loopback that keeps every request body, by path.

    mode "ok": answers 200 with an empty protobuf body (what a collector does on success);
    "slow": reads the request and answers only after `release()` (a hung collector that recovers);
    "reset": accepts the connection and resets it (RST) without reading;
    "down": nothing listens on the port (connection refused).
    """

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.bodies: dict[str, list[bytes]] = {}
        self.connections = 0
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server = None
        self._listener = None
        self._thread = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OTLPReceiver":
        if self.mode == "down":
            with socket.socket() as probe:  # a port that was free a moment ago and that nobody listens on
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            return self
        if self.mode == "reset":
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.port = self._listener.getsockname()[1]
            self._thread = threading.Thread(target=self._reset_loop, daemon=True)
        else:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._listener is not None:
            self._listener.close()

    def release(self) -> None:
        self.released.set()

    def all_bytes(self) -> bytes:
        with self._lock:
            return b"".join(body for bodies in self.bodies.values() for body in bodies)

    def _count_connection(self):
        with self._lock:
            self.connections += 1

    def _reset_loop(self):
        while not self.released.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._count_connection()
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                receiver._count_connection()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver._lock:
                    receiver.bodies.setdefault(self.path, []).append(body)
                if receiver.mode == "slow":
                    receiver.released.wait()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler


def exported_spans(receiver: OTLPReceiver) -> list:
    """Every span the receiver got, decoded from the OTLP/HTTP protobuf bodies."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for body in receiver.bodies.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    return spans
