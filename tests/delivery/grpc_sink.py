"""An OTLP/gRPC receiver on loopback that keeps what it receives, for reading back in tests.

The last hop of the gRPC route (rotel → here). It serves the official OTLP service definitions
from `opentelemetry-proto` with grpcio, so requests are decoded exactly as a collector would.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class OtlpGrpcSink(
    trace_service_pb2_grpc.TraceServiceServicer,
    metrics_service_pb2_grpc.MetricsServiceServicer,
    logs_service_pb2_grpc.LogsServiceServicer,
):
    def __init__(self, host: str):
        self.spans: list = []
        self.metrics: list = []
        self.logs: list = []
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"{host}:0")

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self._lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.spans.extend(s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
                return trace_service_pb2.ExportTraceServiceResponse()
            if isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
                self.logs.extend(r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records)
                return logs_service_pb2.ExportLogsServiceResponse()
            self.metrics.extend(m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    def __enter__(self) -> "OtlpGrpcSink":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=1).wait(5)
