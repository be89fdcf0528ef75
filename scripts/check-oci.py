#!/usr/bin/env python3
"""Pushes an OCI image layout to a real registry on loopback and checks what comes back.

    check-oci.py --layout DIR --archive FILE --ref TAG --repo NAME
                 --expect PATH=FILE ... [--annotation KEY=VALUE] ...
                 [--config-media-type TYPE] [--user UID:GID]

1. starts Debian's `docker-registry` (the CNCF distribution server) on a free
   127.0.0.1 port, with a config file and a storage directory of its own in
   a temporary directory;
2. `skopeo copy` the layout (`oci:DIR:TAG`) and the archive
   (`oci-archive:FILE:TAG`) into it, with --preserve-digests;
3. reads the manifest back by digest over the registry's HTTP API, checks its
   media type, the config's and the layer's media types, the annotations and
   that the registry stores it under the digest the layout names;
4. `skopeo copy` it back by digest into a fresh layout, unpacks that with
   `umoci raw unpack`, and checks each --expect file byte for byte, and the
   layer blob fetched over HTTP as well;
5. stops the registry (also on error and on Ctrl-C).

Prints one line per check; exits non-zero at the first failure.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
READY_TIMEOUT_S = 20


def ok(what):
    print(f"ok       {what}", flush=True)


def fail(what):
    print(f"FAILED   {what}", flush=True)
    sys.exit(1)


def check(condition, what):
    if condition:
        ok(what)
    else:
        fail(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return out.stdout


class Registry:
    """docker-registry on 127.0.0.1:<free port>, storage in `root`."""

    def __init__(self, root):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        storage = os.path.join(root, "storage")
        os.makedirs(storage)
        config = os.path.join(root, "config.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\n"
                "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
                "  delete:\n    enabled: true\n"
                f"http:\n  addr: {self.addr}\n"
            )
        self.log = open(os.path.join(root, "registry.log"), "w+")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", config],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            self.wait_ready()
        except BaseException:
            # Not ready (or interrupted): stop it before giving up.
            self.stop()
            raise
        ok(f"docker-registry ({self.version()}) serving on {self.addr}, pid {self.proc.pid}")

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                fail(f"docker-registry exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail(f"docker-registry not ready on {self.addr} in {READY_TIMEOUT_S}s:\n{self.tail()}")
            time.sleep(0.1)

    def version(self):
        out = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True)
        return out.stdout.strip().split()[-1] if out.stdout.strip() else "?"

    def tail(self):
        self.log.seek(0)
        return "".join(self.log.readlines()[-20:])

    def get(self, path, accept=None):
        req = urllib.request.Request(f"http://{self.addr}{path}")
        if accept:
            req.add_header("Accept", accept)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read(), r.headers

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        ok(f"docker-registry stopped (pid {self.proc.pid}, exit {self.proc.returncode})")
        self.log.close()


def layout_digest(layout, ref):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
            return m["digest"]
    fail(f"{layout}/index.json has no manifest tagged {ref}")


def layer_files(blob):
    """path -> bytes of every regular file in a tar+gzip layer."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile():
                files[member.name.lstrip("./")] = tar.extractfile(member).read()
    return files


def key_values(pairs):
    return dict(p.split("=", 1) for p in pairs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", required=True)
    p.add_argument("--archive", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--repo", required=True, help="repository name in the registry, e.g. veltrix/huntgate")
    p.add_argument("--expect", action="append", default=[], help="PATH=FILE: the layer's PATH equals FILE")
    p.add_argument("--annotation", action="append", default=[], help="KEY=VALUE the manifest must carry")
    p.add_argument("--user", help="the config's User")
    p.add_argument("--run", help="PATH ARGS...: run the unpacked image's PATH with ARGS; it must exit 0")
    args = p.parse_args()

    digest = layout_digest(args.layout, args.ref)
    expected = {path: open(src, "rb").read() for path, src in key_values(args.expect).items()}

    with tempfile.TemporaryDirectory(prefix="huntgate-oci-") as tmp:
        # Ctrl-C and SIGTERM stop the registry too (SystemExit/KeyboardInterrupt
        # reach Registry's own cleanup while it starts, the finally below after).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        registry = Registry(tmp)
        try:
            dest = f"docker://{registry.addr}/{args.repo}"
            run("skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                f"oci:{args.layout}:{args.ref}", f"{dest}:{args.ref}")
            ok(f"skopeo copy oci:{args.layout}:{args.ref} -> {args.repo}:{args.ref}")
            run("skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                f"oci-archive:{args.archive}:{args.ref}", f"{dest}:{args.ref}-archive")
            ok(f"skopeo copy oci-archive:{args.archive}:{args.ref} -> {args.repo}:{args.ref}-archive")

            # The registry's view, by digest, over its HTTP API.
            raw, headers = registry.get(f"/v2/{args.repo}/manifests/{digest}", accept=MANIFEST)
            check(headers.get("Docker-Content-Digest") == digest
                  and "sha256:" + hashlib.sha256(raw).hexdigest() == digest,
                  f"registry serves the manifest under the layout's digest {digest}")
            for tag in (args.ref, args.ref + "-archive"):
                _, tagged = registry.get(f"/v2/{args.repo}/manifests/{tag}", accept=MANIFEST)
                check(tagged.get("Docker-Content-Digest") == digest, f"tag {tag} resolves to {digest}")
            manifest = json.loads(raw)
            check(headers.get("Content-Type") == MANIFEST and manifest.get("mediaType") == MANIFEST,
                  f"manifest media type {MANIFEST}")
            check(manifest["config"]["mediaType"] == CONFIG, f"config media type {CONFIG}")
            layers = manifest["layers"]
            check(len(layers) == 1 and layers[0]["mediaType"] == LAYER, f"one layer, media type {LAYER}")
            for key, value in key_values(args.annotation).items():
                got = manifest.get("annotations", {}).get(key)
                check(got == value, f"annotation {key}={value} (got {got!r})")
            config, _ = registry.get(f"/v2/{args.repo}/blobs/{manifest['config']['digest']}")
            config = json.loads(config)
            blob, _ = registry.get(f"/v2/{args.repo}/blobs/{layers[0]['digest']}")
            check("sha256:" + hashlib.sha256(blob).hexdigest() == layers[0]["digest"],
                  f"layer blob matches its digest ({len(blob)} bytes compressed)")
            diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
            check(config["rootfs"]["diff_ids"] == [diff_id], "config diff_id is the uncompressed layer's digest")
            if args.user:
                check(config["config"].get("User") == args.user, f"config User {args.user}")
            files = layer_files(blob)
            for path, want in expected.items():
                check(files.get(path) == want,
                      f"layer (over HTTP) {path} equals the built file byte for byte ({len(want)} bytes)")

            # Pulled back by digest with skopeo, unpacked with umoci.
            pulled = os.path.join(tmp, "pulled")
            run("skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
                f"{dest}@{digest}", f"oci:{pulled}:pulled")
            check(layout_digest(pulled, "pulled") == digest, f"skopeo copy {args.repo}@{digest} keeps the digest")
            rootfs = os.path.join(tmp, "rootfs")
            run("umoci", "raw", "unpack", "--image", f"{pulled}:pulled", rootfs)
            for path, want in expected.items():
                with open(os.path.join(rootfs, path), "rb") as f:
                    check(f.read() == want, f"umoci-unpacked {path} equals the built file byte for byte")
            if args.run:
                # A static binary runs from the unpacked root as it would in the container.
                path, *rest = args.run.split()
                out = subprocess.run([os.path.join(rootfs, path.lstrip("/")), *rest],
                                     capture_output=True, text=True, timeout=30)
                check(out.returncode == 0,
                      f"unpacked /{path.lstrip('/')} {' '.join(rest)} runs: {(out.stdout or out.stderr).strip()}")
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
