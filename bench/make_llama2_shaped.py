"""Build a Llama-2-7B-SHAPED model with random weights and the real Llama-2 tokenizer, for the GPU benchmark.

The lent GPU machine reaches no model hub, so the real Llama-2 weights can't get there. This makes a stand-in with the
same architecture (LlamaForCausalLM, hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab 32000), so speed and
memory match the real model while the answers are noise. The tokenizer is the real one: Llama-2's SentencePiece
vocabulary as llama.cpp ships it for its tokenizer tests (models/ggml-vocab-llama-spm.gguf in the llama-cpp-python
source package, vocabulary only, no weights), read by transformers (`gguf_file=`), with `</s>` as eos. So a training
example has the real token count, emojis included (byte fallback: up to 4 tokens each).

    python bench/make_llama2_shaped.py --out /tmp/llama2-7b-shaped          # full size, bf16 (~13.5 GB), needs a GPU
    python bench/make_llama2_shaped.py --tiny --out /tmp/llama2-tiny        # 2 small layers, seconds on a CPU
    python bench/make_llama2_shaped.py --vocab-only                         # only fetch and convert the vocabulary

The vocabulary is fetched once with pip (`pip download --no-binary :all: llama-cpp-python==0.3.36`, 77 MB) into
VOCAB_DIR and converted there (about 30 s); later builds reuse it. A machine without a package index (the lent GPU
machine) needs VOCAB_DIR carried to it: `outputs/cache/llama2-vocab`, 4 MB.
"""
import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lib import prompts, store  # noqa: E402

VOCAB_SDIST = "llama-cpp-python==0.3.36"
VOCAB_GGUF = "ggml-vocab-llama-spm.gguf"
VOCAB_SHA256 = "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"  # of 0.3.36's copy
VOCAB_DIR = store.CACHE_DIR / "llama2-vocab"  # the GGUF, and tokenizer/ converted from it

FULL = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32)
TINY = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_vocab(folder):
    """The vocabulary GGUF from the llama-cpp-python source package (pip's cache makes a second fetch free)."""
    gguf = folder / VOCAB_GGUF
    if gguf.exists():
        return gguf
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        VOCAB_SDIST, "-d", tmp], check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(f"vendor/llama.cpp/models/{VOCAB_GGUF}"))
            data = tar.extractfile(member).read()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        sys.exit(f"error: {VOCAB_GGUF} from {VOCAB_SDIST} is not the file this benchmark was written for")
    gguf.write_bytes(data)
    return gguf


def llama2_tokenizer(folder):
    """The real Llama-2 tokenizer, converted from the GGUF once (transformers rebuilds its merges, ~30 s)."""
    from transformers import AutoTokenizer

    converted = folder / "tokenizer"
    if not (converted / "tokenizer.json").exists():
        gguf = fetch_vocab(folder)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)
        tokenizer.eos_token = "</s>"  # the GGUF's metadata names <s>; Llama-2 ends a turn with </s> (id 2)
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(str(converted))
    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, len(tokenizer)) == (0, 1, 2, 32000)
    return tokenizer


def example_lengths(tokenizer):
    """Tokens of each training example (system + sentence + emojis, Llama-2 chat format) in data/emoji_pairs.csv."""
    import copy
    import csv

    tokenizer = copy.deepcopy(tokenizer)
    prompts.ensure_chat_template(tokenizer)  # what the scripts give a tokenizer without a template of its own
    with store.RAW_CSV.open(encoding="utf-8") as f:
        pairs = [(row["text"], row["emoji"]) for row in csv.DictReader(f)]
    texts = [tokenizer.apply_chat_template(prompts.emoji_messages(s, e), tokenize=False) for s, e in pairs]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def build_model(out, tiny, dtype_name, device):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    dtype = getattr(torch, dtype_name)
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                         hidden_act="silu", initializer_range=0.02, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, **(TINY if tiny else FULL))
    config.dtype = dtype
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype: 13.5 GB, not 27 GB of fp32
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, do_sample=False)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, max_shard_size="5GB")
    return n_params


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/llama2-7b-shaped", help="directory to write (model + tokenizer)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 128-wide model (vocab 32000) for CPU tests")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default=None, help="where to initialise the weights (default: cuda if present)")
    parser.add_argument("--vocab-dir", default=str(VOCAB_DIR), help="where the vocabulary is kept (fetched if absent)")
    parser.add_argument("--vocab-only", action="store_true", help="only fetch and convert the vocabulary (to carry it)")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out already holds a model")
    args = parser.parse_args()
    if args.vocab_only:
        tokenizer = llama2_tokenizer(Path(args.vocab_dir))
        lengths = example_lengths(tokenizer)
        print(f"{store.display(Path(args.vocab_dir))}: {len(tokenizer)} tokens; data/emoji_pairs.csv examples "
              f"{sum(lengths) / len(lengths):.1f} tokens on average, {max(lengths)} at most")
        return

    out = Path(args.out)
    if (out / "config.json").exists() and not args.force:
        print(f"{out} already holds a model (use --force to rebuild)")
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = llama2_tokenizer(Path(args.vocab_dir))
    tokenizer.save_pretrained(out)
    lengths = example_lengths(tokenizer)
    t_tok = time.time() - start
    n_params = build_model(out, args.tiny, args.dtype, device)
    if device == "cuda":
        torch.cuda.empty_cache()
    summary = dict(out=str(out), tiny=args.tiny, dtype=args.dtype, params=n_params, tokenizer_vocab=len(tokenizer),
                   vocabulary=f"{VOCAB_GGUF} from {VOCAB_SDIST} (sha256 {VOCAB_SHA256[:16]}...)",
                   mean_example_tokens=round(sum(lengths) / len(lengths), 1), max_example_tokens=max(lengths),
                   tokenizer_s=round(t_tok, 1), total_s=round(time.time() - start, 1))
    (out / "shaped_model.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
