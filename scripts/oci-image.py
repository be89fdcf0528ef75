#!/usr/bin/env python3
"""Writes a one-layer OCI image, reproducibly, without a container engine.

    oci-image.py --layout DIR --archive FILE --ref TAG
                 --file SRC:PATH[:MODE] ... [--dir PATH[:MODE]] ...
                 [--manifest-annotation KEY=VALUE] ... [--os OS --arch ARCH]
                 [--user UID:GID] [--entrypoint JSON] [--cmd JSON] [--env K=V] ...

Output: an OCI image-layout directory (DIR: oci-layout, index.json,
blobs/sha256/...) holding one manifest with one tar+gzip layer, the same
layout as one tar file (FILE, for skopeo's `oci-archive:` transport), and on
stdout the manifest digest (`sha256:<hex>`), which is what a registry stores
the image under and what Istio compares `WasmPlugin.spec.sha256` with.

Same inputs, same bytes, same digest: every timestamp is the epoch, owners
are 0:0 with no user or group names, entries are sorted, the gzip header has
no name and mtime 0, JSON is written with sorted keys and no spaces. Only
the Python standard library is used.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical(value):
    """The JSON bytes every blob is written as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def tar_bytes(entries):
    """A tar of `entries` (path -> (bytes or None for a directory, mode)), sorted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(entries):
            data, mode = entries[path]
            info = tarfile.TarInfo(path + "/" if data is None else path)
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data):
    """gzip with no file name and mtime 0 (the header is then constant)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_mode(text, default):
    return int(text, 8) if text else default


def layer_entries(files, dirs):
    """The layer's entries, with every parent directory of every file."""
    entries = {}
    for spec in dirs:
        path, _, mode = spec.partition(":")
        entries[path.strip("/")] = (None, parse_mode(mode, 0o755))
    for spec in files:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            sys.exit(f"oci-image: --file wants SRC:PATH[:MODE], got {spec!r}")
        src, path = parts[0], parts[1].strip("/")
        with open(src, "rb") as f:
            entries[path] = (f.read(), parse_mode(parts[2] if len(parts) == 3 else "", 0o644))
        parent = os.path.dirname(path)
        while parent:
            entries.setdefault(parent, (None, 0o755))
            parent = os.path.dirname(parent)
    return entries


def key_values(pairs, what):
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            sys.exit(f"oci-image: {what} wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", required=True, help="OCI image-layout directory to (re)write")
    p.add_argument("--archive", required=True, help="the same layout as a tar file")
    p.add_argument("--ref", required=True, help="tag recorded in index.json (org.opencontainers.image.ref.name)")
    p.add_argument("--file", action="append", default=[], help="SRC:PATH[:MODE] into the layer")
    p.add_argument("--dir", action="append", default=[], help="PATH[:MODE], an empty directory in the layer")
    p.add_argument("--manifest-annotation", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--os", default="linux")
    p.add_argument("--arch", default="amd64")
    p.add_argument("--user", help="UID:GID the image runs as")
    p.add_argument("--entrypoint", help="JSON list")
    p.add_argument("--cmd", help="JSON list")
    p.add_argument("--env", action="append", default=[], help="K=V")
    p.add_argument("--label", action="append", default=[], help="K=V (config Labels)")
    args = p.parse_args()
    if not args.file:
        sys.exit("oci-image: at least one --file")

    layer_tar = tar_bytes(layer_entries(args.file, args.dir))
    layer = gzip_bytes(layer_tar)

    runtime = {}
    if args.user:
        runtime["User"] = args.user
    if args.entrypoint:
        runtime["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        runtime["Cmd"] = json.loads(args.cmd)
    if args.env:
        runtime["Env"] = args.env
    if args.label:
        runtime["Labels"] = key_values(args.label, "--label")
    config = canonical({
        "architecture": args.arch,
        "os": args.os,
        "created": CREATED,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": CREATED, "created_by": "scripts/oci-image.py"}],
    })
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": sha256(layer), "size": len(layer)}],
    }
    annotations = key_values(args.manifest_annotation, "--manifest-annotation")
    if annotations:
        manifest_doc["annotations"] = annotations
    manifest = canonical(manifest_doc)
    digest = sha256(manifest)
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": args.ref},
        }],
    })

    files = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
    }
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob

    # The directory: written afresh, so no blob of an earlier build stays.
    tmp = args.layout.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for path, data in files.items():
        target = os.path.join(tmp, path)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
    shutil.rmtree(args.layout, ignore_errors=True)
    os.rename(tmp, args.layout)

    # The archive: the same files, with their directories, in one sorted tar.
    entries = {path: (data, 0o644) for path, data in files.items()}
    entries["blobs"] = (None, 0o755)
    entries["blobs/sha256"] = (None, 0o755)
    os.makedirs(os.path.dirname(os.path.abspath(args.archive)), exist_ok=True)
    with open(args.archive + ".tmp", "wb") as f:
        f.write(tar_bytes(entries))
    os.replace(args.archive + ".tmp", args.archive)

    print(digest)


if __name__ == "__main__":
    main()
