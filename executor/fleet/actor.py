"""The replica: a Ray actor hosting one SGLang engine.

The actor owns the engine and its subprocesses (scheduler, detokenizer). It
validates every request before the engine sees it (bad input must never kill the
engine), reports SGLang's own token accounting, and watches its engine: if an
engine process dies, the actor exits at once, so callers see the replica die
instead of hanging. When the actor dies or is killed, SGLang's subprocesses
notice their parent is gone and exit.

The class is plain Python; :mod:`executor.fleet.pool` wraps it with ``ray.remote``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psutil

from executor.errors import InvalidRequestError, ReplicaUnavailableError
from executor.fleet.config import ReplicaConfig
from executor.fleet.fit import call_limit, check_fits
from executor.fleet.generation import Capacity, GenerateRequest, GenerateResult, TokenDelta

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 0.5


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ReplicaActor:
    """One sglang.Engine, served through async methods (a Ray async actor)."""

    def __init__(self, replica_id: str, config: ReplicaConfig, model_path: str) -> None:
        self.replica_id = replica_id
        self.config = config
        device = config.resolved_device()
        if device == "cpu":
            # Must be set before sglang is imported, or its scheduler dies while loading.
            os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
        import sglang
        import torch

        torch.set_num_threads(config.threads())
        started = time.perf_counter()
        self._engine = sglang.Engine(**config.engine_kwargs(model_path, device, free_port()))
        self.start_s = time.perf_counter() - started
        self._sessions: set[str] = set()  # open engine sessions (release_in_engine)
        # get_server_info() runs its own event loop and fails inside an async actor;
        # the scheduler's start-up record holds the same figures.
        info = self._engine._scheduler_init_result.scheduler_infos[0]
        self.max_total_num_tokens = int(info["max_total_num_tokens"])
        self.max_req_input_len = int(info["max_req_input_len"])
        tm = self._engine.tokenizer_manager
        self._tokenizer = tm.tokenizer
        self.vocab_size = int(tm.model_config.vocab_size)
        self.engine_pids = list(self._engine.get_all_child_pids())
        self._stopping = threading.Event()
        threading.Thread(target=self._watch_engine, name="engine-watchdog", daemon=True).start()

    # -- liveness ---------------------------------------------------------------

    def _watch_engine(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            dead = [pid for pid in self.engine_pids if not _alive(pid)]
            if dead and not self._stopping.is_set():
                log.error(
                    "replica %s: engine process(es) %s died; exiting so the pool sees this "
                    "replica die",
                    self.replica_id,
                    dead,
                )
                os._exit(70)

    def ready(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "start_s": self.start_s,
            "max_total_num_tokens": self.max_total_num_tokens,
            "max_req_input_len": self.max_req_input_len,
            "vocab_size": self.vocab_size,
            "pid": os.getpid(),
            "engine_pids": self.engine_pids,
            "release_in_engine": self.config.release_in_engine,
        }

    async def health(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Raise ``ReplicaUnavailableError`` if an engine process is gone, ``TimeoutError``
        if the engine's scheduler does not answer in time (a round trip through it: the
        load snapshot would not do, the tokenizer side serves it from shared memory)."""
        dead = [pid for pid in self.engine_pids if not _alive(pid)]
        if dead:
            raise ReplicaUnavailableError(self.replica_id, f"engine processes {dead} are gone")
        started = time.perf_counter()
        await asyncio.wait_for(self._engine.tokenizer_manager.get_internal_state(), timeout_s)
        return {"replica_id": self.replica_id, "ok": True, "rtt_s": time.perf_counter() - started}

    def pids(self) -> dict[str, Any]:
        return {"actor": os.getpid(), "engine": self.engine_pids}

    # -- generation -------------------------------------------------------------

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.input_ids is not None:
            ids = request.input_ids
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"token ids out of the vocabulary [0, {self.vocab_size}): {bad[:5]}"
                )
            return ids
        assert request.text is not None
        ids = list(self._tokenizer.encode(request.text, add_special_tokens=False))
        if not ids:
            raise InvalidRequestError("the prompt is empty after tokenization")
        return ids

    def _check_fits(self, n_prompt: int, max_new_tokens: int) -> None:
        """The defensive check (the driver checked first, with the same rule)."""
        limit = call_limit(self.max_total_num_tokens, self.max_req_input_len)
        where = (
            f"this replica (KV pool max_total_num_tokens={self.max_total_num_tokens}, "
            f"max input {self.max_req_input_len})"
        )
        check_fits(n_prompt, max_new_tokens, limit, where)

    async def _prepare(
        self, request: GenerateRequest | dict[str, Any]
    ) -> tuple[GenerateRequest, dict[str, Any]]:
        """The request checked, and the engine's keyword arguments for it."""
        req = GenerateRequest.parse(request)
        ids = self._prompt_ids(req)
        self._check_fits(len(ids), req.sampling.max_new_tokens)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "sampling_params": req.sampling.to_sglang(),
            "rid": req.rid,
        }
        if req.session_id is not None and self.config.release_in_engine:
            await self._open_session(req.session_id)
            kwargs["session_id"] = req.session_id
        return req, kwargs

    def _result(self, out: dict[str, Any], latency: float) -> GenerateResult:
        meta = out["meta_info"]
        finish = meta.get("finish_reason") or {}
        kind = finish.get("type", "unknown") if isinstance(finish, dict) else str(finish)
        if kind == "abort":
            message = finish.get("message", "aborted") if isinstance(finish, dict) else finish
            raise InvalidRequestError(f"the engine aborted the request: {message}")
        return GenerateResult(
            replica_id=self.replica_id,
            text=out["text"],
            output_ids=list(out["output_ids"]),
            prompt_tokens=int(meta["prompt_tokens"]),
            cached_tokens=int(meta.get("cached_tokens", 0)),
            completion_tokens=int(meta["completion_tokens"]),
            finish_reason=kind,
            latency_s=latency,
        )

    async def generate(self, request: GenerateRequest | dict[str, Any]) -> GenerateResult:
        _, kwargs = await self._prepare(request)
        started = time.perf_counter()
        try:
            out = await self._engine.async_generate(**kwargs)
        except ValueError as exc:  # SGLang's own validation of the request
            raise InvalidRequestError(f"the engine refused the request: {exc}") from None
        return self._result(out, time.perf_counter() - started)

    async def generate_stream(
        self, request: GenerateRequest | dict[str, Any]
    ) -> AsyncIterator[TokenDelta | GenerateResult]:
        """The call as it decodes: a ``TokenDelta`` per engine step that produced tokens
        (the new ids and the new text), then the ``GenerateResult`` (a Ray streaming
        generator: ``ReplicaHandle.astream``). Abandoned by the caller, the engine's
        request is aborted."""
        _, kwargs = await self._prepare(request)
        started = time.perf_counter()
        n_ids = n_text = 0
        out: dict[str, Any] | None = None
        finished = False
        try:
            try:
                chunks = await self._engine.async_generate(stream=True, **kwargs)
                async for out in chunks:
                    # (a chunk's output_ids may be the engine's own list, which grows
                    # while this generator waits at its yield: take the new ids first)
                    new_ids = list(out["output_ids"][n_ids:])
                    text = out.get("text") or ""
                    if new_ids or len(text) > n_text:
                        delta = TokenDelta(ids=new_ids, text=text[n_text:])
                        n_ids, n_text = n_ids + len(new_ids), len(text)
                        yield delta
            except ValueError as exc:
                raise InvalidRequestError(f"the engine refused the request: {exc}") from None
            finished = True
        finally:
            if not finished and kwargs["rid"] is not None:
                self._engine.tokenizer_manager.abort_request(kwargs["rid"])
        if out is None:
            raise InvalidRequestError("the engine returned nothing for the request")
        yield self._result(out, time.perf_counter() - started)

    # -- sessions: release in the engine ------------------------------------------

    async def _open_session(self, session_id: str) -> None:
        if session_id in self._sessions:
            return
        from sglang.srt.managers.io_struct import OpenSessionReqInput

        await self._engine.tokenizer_manager.open_session(
            OpenSessionReqInput(
                capacity_of_str_len=1 << 30,
                session_id=session_id,
                timeout=self.config.session_idle_s,
            ),
            None,
        )
        self._sessions.add(session_id)

    async def release(self, session_id: str) -> bool:
        """Close the task's session: the engine evicts its KV before retained ones.
        False when there is none (not releasing in the engine, or no call yet)."""
        if session_id not in self._sessions:
            return False
        from sglang.srt.managers.io_struct import CloseSessionReqInput

        self._sessions.discard(session_id)
        await self._engine.tokenizer_manager.close_session(
            CloseSessionReqInput(session_id=session_id), None
        )
        return True

    def sessions(self) -> list[str]:
        """The tasks whose KV is tagged in the engine now."""
        return sorted(self._sessions)

    # -- KV pool ----------------------------------------------------------------

    async def _load(self) -> Any:
        loads = await self._engine.tokenizer_manager.get_loads()
        if not loads:
            raise ReplicaUnavailableError(self.replica_id, "the engine reports no load snapshot")
        return loads[0]

    async def capacity(self) -> Capacity:
        load = await self._load()
        return Capacity(
            replica_id=self.replica_id,
            max_total_num_tokens=self.max_total_num_tokens,
            used_tokens=int(load.num_used_tokens),
            token_usage=float(load.token_usage),
            running_requests=int(load.num_running_reqs),
            waiting_requests=int(load.num_waiting_reqs),
        )

    async def flush_cache(self) -> bool:
        """Drop the radix cache (refused by SGLang while requests are running)."""
        result = await self._engine.tokenizer_manager.flush_cache()
        return bool(result.success)

    def shutdown(self) -> None:
        self._stopping.set()
        self._engine.shutdown()
