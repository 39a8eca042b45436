"""The ``docker`` sandbox backend: one warm container per task, one ``docker exec`` per call.

    backend.py    :class:`DockerBackend` and its :class:`DockerSandbox` (the exec stream)
    container.py  how one sandbox container is started, watched and removed
    image.py      the sandbox image, built locally (``python -m tools.sandbox.docker``)
    pool.py       :class:`ContainerPool`, a few containers kept started for ``open()``

Usually reached through ``create_backend("docker")`` (:mod:`tools.sandbox`).
"""

from tools.sandbox.docker.backend import DockerBackend, DockerSandbox, connect

__all__ = ["DockerBackend", "DockerSandbox", "connect"]
