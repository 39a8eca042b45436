"""The Docker sandbox image, built locally without any registry.

The image is a skeleton root filesystem made here in memory (``docker import``
of a tarball): the top-level symlinks and mount points, a few ``/etc`` files
(no secrets; a ``sandbox`` user 65534), an empty ``/usr``. Containers get the
host's ``/usr`` bound read-only over it, so the sandbox has exactly the host's
``python3``, ``sh`` and coreutils, and the build takes well under a second
(debootstrap would take ~50 s and a package mirror). The tag is a hash of the
tarball, so a changed host (new ld.so.cache) gets a new image.

    python -m tools.sandbox.docker   # build (if missing) and print the tag (runs main())
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

REPOSITORY = "agent-executor-sandbox"
SANDBOX_UID = 65534
WORKDIR = "/workspace"
#: copied from the host as they are (files or symlinks), when present
HOST_ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/ssl/certs",
    "/etc/mime.types",
)
CHANGES = [
    f"USER {SANDBOX_UID}:{SANDBOX_UID}",
    f"WORKDIR {WORKDIR}",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8",
    'CMD ["sleep", "infinity"]',
]


def rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755, uid: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, uid
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        def add_symlink(name: str, target: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)

        for name in ("usr", "etc", "dev", "proc", "sys", "run", "var", "var/tmp", "home"):
            add_dir(name)
        add_dir("tmp", 0o1777)
        add_dir("root", 0o700)
        add_dir(WORKDIR.strip("/"), 0o755, SANDBOX_UID)
        # /sbin stays a real directory: Docker's --init binds /sbin/docker-init there.
        add_dir("sbin")
        for top in ("bin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / top
            if host.is_symlink():
                add_symlink(top, os.readlink(host))
            elif host.is_dir():
                add_dir(top)
        add_file(
            "etc/passwd",
            (
                "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORKDIR}:/bin/sh\n"
            ).encode(),
        )
        add_file("etc/group", f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\n".encode())
        add_file("etc/hosts", b"127.0.0.1 localhost sandbox\n::1 localhost\n")
        add_file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files\n")
        for path in HOST_ETC:
            _add_host_tree(tar, Path(path))
    return buf.getvalue()


def _add_host_tree(tar: tarfile.TarFile, path: Path) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    paths = [path]
    if path.is_dir() and not path.is_symlink():
        paths += sorted(path.rglob("*"))
    for item in paths:
        if not (item.is_symlink() or item.is_file() or item.is_dir()):
            continue
        info = tar.gettarinfo(str(item), arcname=str(item).lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        if info.isfile():
            with open(item, "rb") as fh:
                tar.addfile(info, fh)
        else:
            tar.addfile(info)


def image_tag(data: bytes) -> str:
    digest = hashlib.sha256(data + "\n".join(CHANGES).encode()).hexdigest()[:16]
    return f"{REPOSITORY}:{digest}"


def ensure_image(client: Any) -> str:
    """The tag of the sandbox image in ``client``'s engine, importing it if missing."""
    import docker.errors

    data = rootfs_tar()
    tag = image_tag(data)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(data, repository=repo, tag=version, changes=CHANGES)
    client.images.get(tag)  # raises if the import did not produce it
    return tag


def main() -> int:
    import docker

    try:
        client = docker.from_env(version="auto")
        tag = ensure_image(client)
    except docker.errors.DockerException as exc:
        print(f"cannot build the sandbox image: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0
