#!/usr/bin/env python3
"""An orchestrator loop over the governor's gRPC API, at the field report's 5 s cadence.

Every --interval seconds, for each --hunt HUNT=MAX_HUNTERS: read the hunt (GetHunt); if its
override does not say MAX_HUNTERS, or lapses within two intervals, set it again
(SetOverride with ttl_s = 3 intervals). The short lifetime is the point: if the
orchestrator dies, its overrides lapse by themselves within 15 s and the policy files
apply again — nothing stays pinned by a process that is gone.

Needs Python with grpcio and grpcio-tools (the stubs are generated from the repository's
.proto at start):
    pip install grpcio-tools==1.85.1
    docs/examples/orchestrator_loop.py --addr 127.0.0.1:9912 \
        --token-file /etc/huntgate/tokens --hunt hunt-001=40000
Tested by governor/tests/grpc_api.rs (an_independent_python_grpcio_client_round_trips).
"""

import argparse
import os
import sys
import tempfile
import time

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "governor", "proto")


def load_stubs(proto_dir=PROTO_DIR, out_dir=None):
    """Generates the huntgate.v1 stubs with grpcio-tools; returns (messages, services)."""
    from grpc_tools import protoc

    out_dir = out_dir or tempfile.mkdtemp(prefix="huntgate-stubs-")
    rc = protoc.main([
        "protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_dir, "huntgate/v1/governor.proto"),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)
    from huntgate.v1 import governor_pb2, governor_pb2_grpc

    return governor_pb2, governor_pb2_grpc


def read_token(path):
    """The last word of the first line that is not a comment (the governor's own
    `NAME TOKEN` file works)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line.split()[-1]
    raise SystemExit(f"{path}: no token")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addr", default="127.0.0.1:9912", help="the governor's --grpc-listen")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--hunt", action="append", default=[], metavar="HUNT=MAX_HUNTERS")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--iterations", type=int, default=0, help="rounds to run (0: forever)")
    args = parser.parse_args()

    import grpc

    pb, rpc = load_stubs()
    wanted = {}
    for item in args.hunt:
        hunt, _, value = item.partition("=")
        wanted[hunt] = int(value)
    meta = [("authorization", "Bearer " + read_token(args.token_file))]
    ttl_s = max(1, int(3 * args.interval))
    gov = rpc.GovernorStub(grpc.insecure_channel(args.addr))

    done = 0
    while args.iterations == 0 or done < args.iterations:
        for hunt, max_hunters in wanted.items():
            now_ms = int(time.time() * 1000)
            try:
                current = gov.GetHunt(pb.GetHuntRequest(hunt=hunt), timeout=2)
                o = current.override if current.HasField("override") else None
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    print(f"{hunt}: cannot read: {e.code().name}: {e.details()}", flush=True)
                    continue
                o = None
            lapsing = o is None or not o.HasField("expires_at_ms") or o.expires_at_ms - now_ms < 2 * args.interval * 1000
            if o is None or o.max_hunters != max_hunters or lapsing:
                try:
                    current = gov.SetOverride(
                        pb.SetOverrideRequest(hunt=hunt, max_hunters=max_hunters, ttl_s=ttl_s,
                                              reason="orchestrator loop"),
                        metadata=meta, timeout=2)
                except grpc.RpcError as e:
                    print(f"{hunt}: refused: {e.code().name}: {e.details()}", flush=True)
                    continue
            print(f"{hunt}: limit {current.limit} = {current.max_hunters} x {current.ratio} ({current.reason})", flush=True)
        done += 1
        if args.iterations == 0 or done < args.iterations:
            time.sleep(args.interval)


if __name__ == "__main__":
    main()
