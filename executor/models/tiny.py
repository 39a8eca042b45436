"""Build the ``tiny`` test model: a random-weight Llama and a byte-level BPE tokenizer.

Deterministic for a given Python installation: the tokenizer is trained on a fixed,
sorted selection of the standard library's source files and the weights come from
a fixed seed. ~1-4 MB on disk, built in seconds, loads in transformers and SGLang.
Its text is meaningless; structured output (a JSON schema) still makes every
reply a valid tool call.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from executor.models.registry import sha256_file

BUILDER_VERSION = 1
SEED = 0
VOCAB_SIZE = 4096
CORPUS_FILES = 120
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, with the tools' JSON schemas listed in the system turn (as Qwen2.5 does).
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (loop.first and message.role == 'system') %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))[:CORPUS_FILES]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def build_tiny(dest: Path) -> dict[str, object]:
    """Write the tiny model into ``dest``; return its provenance record."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = _corpus()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(dest)

    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(dest, safe_serialization=True)
    model.generation_config.save_pretrained(dest)
    return {
        "source": "built",
        "recipe": f"tiny_model v{BUILDER_VERSION}",
        "seed": SEED,
        "tokenizer_corpus": f"first {len(corpus)} stdlib *.py files (sorted)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": sha256_file(dest / "model.safetensors"),
    }
