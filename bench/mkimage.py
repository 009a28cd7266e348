#!/usr/bin/env python3
"""Write an OCI image layout for the wharf benchmark, without Docker.

    mkimage.py DIR TAG TOTAL_MIB LAYERS

DIR gets `oci-layout`, `index.json` and `blobs/sha256/*`: LAYERS uncompressed tar layers, each
holding one file of TOTAL_MIB/LAYERS MiB of random bytes (incompressible, so no client or proxy
can cheat with compression), a config JSON and a manifest JSON. The tag is recorded as the
`org.opencontainers.image.ref.name` annotation, so `skopeo copy oci:DIR:TAG ...` finds it.
Prints `<manifest digest> <total bytes of manifest+config+layers>` on stdout.
"""

import hashlib
import json
import os
import sys
import tarfile
import time

CHUNK = 4 << 20


def write_blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def write_layer(blobs, index, size):
    """One tar with one random file of `size` bytes, hashed while written."""
    tmp = os.path.join(blobs, f".layer-{index}.tmp")
    h = hashlib.sha256()
    total = 0
    info = tarfile.TarInfo(f"bench/layer-{index}.bin")
    info.size = size
    info.mode = 0o644
    info.mtime = int(time.time())
    with open(tmp, "wb") as f:

        def put(b):
            nonlocal total
            h.update(b)
            f.write(b)
            total += len(b)

        put(info.tobuf(format=tarfile.PAX_FORMAT))
        left = size
        while left:
            n = min(CHUNK, left)
            put(os.urandom(n))
            left -= n
        if size % 512:
            put(b"\0" * (512 - size % 512))
        put(b"\0" * 1024)  # end-of-archive marker
    digest = h.hexdigest()
    os.rename(tmp, os.path.join(blobs, digest))
    return "sha256:" + digest, total


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    out, tag, total_mib, layers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if total_mib < 1 or layers < 1:
        sys.exit("TOTAL_MIB and LAYERS must be >= 1")
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    per_layer = (total_mib << 20) // layers
    layer_descs = []
    for i in range(layers):
        digest, size = write_layer(blobs, i, per_layer)
        layer_descs.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
        )
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]},
        "history": [
            {"created": created, "created_by": "wharf bench/mkimage.py"} for _ in layer_descs
        ],
    }
    cfg_digest, cfg_size = write_blob(blobs, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cfg_digest,
            "size": cfg_size,
        },
        "layers": layer_descs,
    }
    man_digest, man_size = write_blob(blobs, json.dumps(manifest, separators=(",", ":")).encode())
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_digest,
                "size": man_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    total = man_size + cfg_size + sum(d["size"] for d in layer_descs)
    print(man_digest, total)


if __name__ == "__main__":
    main()
