"""An independent client of the governor's gRPC API (Python grpcio).

Usage: grpc_client.py PROTO_DIR WORK_DIR HOST:PORT TOKEN

Generates the stubs from the repository's .proto with grpcio-tools into WORK_DIR (with the
documented example's load_stubs), then:
checks the standard health service and server reflection, reads, sets an override
(max_hunters 123 on h1, left in force for the caller to check over HTTP), and checks that
bad input and a missing token are refused with the documented codes. Prints
"python client: ok" at the end; any failure raises.
"""

import os
import sys

# The stub generation of the documented example (one copy).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "examples"))
from orchestrator_loop import load_stubs  # noqa: E402

import grpc
from grpc_tools import protoc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def expect_code(call, code, field=None):
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        if field is not None:
            assert e.details().startswith(field + ": "), e.details()
        return
    raise AssertionError(f"expected {code}")


def main():
    proto_dir, work, addr, token = sys.argv[1:5]
    pb, rpc = load_stubs(proto_dir, work)

    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING, health

    # Reflection: the v1 service is what the server registers; ask through v1 when the
    # installed grpcio-reflection has it, else v1alpha (the server may only speak v1).
    try:
        from grpc_reflection.v1 import reflection_pb2 as r1, reflection_pb2_grpc as r1_grpc
        stub = r1_grpc.ServerReflectionStub(channel)
        req = r1.ServerReflectionRequest(list_services="")
    except ImportError:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
    services = [s.name for r in stub.ServerReflectionInfo(iter([req]), timeout=5) for s in r.list_services_response.service]
    assert "huntgate.v1.Governor" in services, services

    gov = rpc.GovernorStub(channel)
    listed = gov.ListHunts(pb.ListHuntsRequest(), timeout=5)
    assert [h.hunt for h in listed.hunts] == ["h1"], listed
    assert listed.hunts[0].limit == 500, listed

    meta = [("authorization", f"Bearer {token}")]
    h1 = gov.SetOverride(pb.SetOverrideRequest(hunt="h1", max_hunters=123, reason="python orchestrator"), metadata=meta, timeout=5)
    assert h1.limit == 123 and h1.HasField("override") and h1.override.by == "orchestrator", h1
    assert h1.policy.max_hunters == 500, h1

    expect_code(lambda: gov.SetOverride(pb.SetOverrideRequest(hunt="h1", pin_ratio=-1.0, reason="x"), metadata=meta, timeout=5),
                grpc.StatusCode.INVALID_ARGUMENT, "pin_ratio")
    expect_code(lambda: gov.SetOverride(pb.SetOverrideRequest(hunt="../etc", max_hunters=1, reason="x"), metadata=meta, timeout=5),
                grpc.StatusCode.INVALID_ARGUMENT, "hunt")
    expect_code(lambda: gov.SetOverride(pb.SetOverrideRequest(hunt="h1", max_hunters=1, reason="x"), timeout=5),
                grpc.StatusCode.UNAUTHENTICATED)
    expect_code(lambda: gov.GetHunt(pb.GetHuntRequest(hunt="unknown"), timeout=5), grpc.StatusCode.NOT_FOUND)

    audit = gov.ListAudit(pb.ListAuditRequest(hunt="h1"), timeout=5)
    assert [e.reason for e in audit.entries] == ["python orchestrator"], audit
    print("python client: ok")


if __name__ == "__main__":
    main()
