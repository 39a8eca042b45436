"""Whether one model call fits a replica: the one rule, used where the KV pool is known.

A call needs its prompt plus its reply (``max_new_tokens``) in one replica's KV
pool, and its prompt within the engine's input limit. The replica reports both
when it starts (``max_total_num_tokens``, ``max_req_input_len``); its handle's
``context_tokens`` is the smaller. The task driver checks every call against its
live replicas before it asks the scheduler for a place (a task whose goal cannot
fit is refused at submit, before the journal); the replica actor checks again
with the same rule, defensively (a caller that skipped the check must not reach
the engine).
"""

from __future__ import annotations

from executor.errors import InvalidRequestError


def call_limit(max_total_num_tokens: int, max_req_input_len: int | None = None) -> int:
    """The most tokens (prompt and reply) one call may have on a replica."""
    if max_req_input_len is None:
        return max_total_num_tokens
    return min(max_total_num_tokens, max_req_input_len)


def shortfall(prompt_tokens: int, max_new_tokens: int, limit: int | None) -> int:
    """Tokens over ``limit`` (0: it fits, or the limit is not known yet)."""
    if limit is None:
        return 0
    return max(0, prompt_tokens + max_new_tokens - limit)


def check_fits(prompt_tokens: int, max_new_tokens: int, limit: int | None, where: str) -> None:
    """Raise ``InvalidRequestError`` (one clear line) if the call does not fit ``limit``."""
    if shortfall(prompt_tokens, max_new_tokens, limit):
        raise InvalidRequestError(
            f"a call of {prompt_tokens} prompt tokens + max_new_tokens {max_new_tokens} does not "
            f"fit {where} ({limit} tokens); shorten the prompt or start replicas with a larger "
            "max_total_tokens"
        )
