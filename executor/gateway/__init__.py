"""The OpenAI-compatible gateway (issues 26 and 30): any agent framework on the
scheduler core through ``/v1/chat/completions``, one session = one core task, the
last reply's token ids reused exactly, tool calls constrained by grammar.

Modules: ``errors`` (OpenAI's error shape), ``identity`` (which session), ``sessions``
(bounded, TTL), ``render`` (chat template), ``transcript`` (exact prefix reuse),
``toolcalls`` (grammars and parsing), ``gateway`` (one request), ``routes`` (HTTP).
"""

from executor.gateway.errors import GatewayError
from executor.gateway.gateway import Gateway, GatewayConfig

__all__ = ["Gateway", "GatewayConfig", "GatewayError"]
