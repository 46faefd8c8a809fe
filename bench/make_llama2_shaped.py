"""Build a Llama-2-7B-SHAPED model with random weights plus a small local tokenizer, with no download.

The lent GPU machine has no network, so the real Llama-2 weights and tokenizer can't reach it. This makes a stand-in
with the same architecture (LlamaForCausalLM, hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab 32000), so
speed and memory match the real model, while the answers are noise. The tokenizer is a byte-level BPE trained here on
the project's sentences and emojis plus some filler text, with Llama-2's special tokens (<unk>=0, <s>=1, </s>=2) and a
Llama-2 style chat template; it is tuned so a training example is about as long as with the real tokenizer (≈ 46).

    python bench/make_llama2_shaped.py --out /tmp/llama2-7b-shaped          # full size, bf16 (~13.5 GB), needs a GPU
    python bench/make_llama2_shaped.py --tiny --out /tmp/llama2-tiny        # 2 small layers, seconds on a CPU
"""
import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "data" / "emoji_pairs.csv"

FULL = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32)
TINY = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4)

# Llama-2-chat's prompt format as a chat template: an optional system prompt folded into the first user turn.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set turns = messages[1:] %}{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "{% if m['role'] == 'user' %}"
    "{% if loop.first and system %}{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Filler so the BPE learns ordinary English beyond the data set (written for this script).
FILLER = """
The weather changed quickly in the afternoon, and everyone went inside to wait for the rain to stop.
She wrote a short letter to her grandmother and walked to the post office before it closed.
Our team finished the project a day early, so we celebrated with pizza and a long walk in the park.
He forgot his keys again, called his neighbour, and waited on the steps with a cup of coffee.
The children played football until the street lights came on, then ran home for dinner.
I am learning to cook a new recipe every week, and this week it is soup with fresh bread.
They took the early train to the coast, watched the waves, and bought ice cream on the pier.
My phone battery died in the middle of the meeting, which was not the best timing.
We planted tomatoes, beans and sunflowers in the garden, and the cat slept in the warm soil.
The library was quiet except for the sound of pages turning and a printer humming in the corner.
After the concert the crowd sang all the way to the station, happy and tired and a little hoarse.
Please remember to bring your passport, a charger, and something warm for the evening.
""".strip().splitlines()


def read_pairs():
    with CSV.open(encoding="utf-8") as f:
        return [(row["text"], row["emoji"]) for row in csv.DictReader(f)]


def build_tokenizer(out, vocab_size):
    """Byte-level BPE with Llama-2's special tokens, trained on the data set's sentences and emojis plus filler."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sys.path.insert(0, str(ROOT))
    from common import SYSTEM_PROMPT, llama2_text

    pairs = read_pairs()
    # Sentences and prompts train the merges; emoji strings are left out on purpose, so, as with Llama-2's
    # SentencePiece byte fallback, most emojis stay several tokens long.
    corpus = [s for s, _ in pairs] + FILLER + [llama2_text(s, "", bos="", eos="") for s, _ in pairs[:50]]
    corpus += [SYSTEM_PROMPT] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    assert (tok.token_to_id("<unk>"), bos, eos) == (0, 1, 2), "special tokens must take ids 0, 1, 2 as in Llama-2"
    # Like Llama-2's tokenizer: prepend <s> when special tokens are asked for.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=4096, padding_side="right", clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    lengths = [len(fast(llama2_text(s, e), add_special_tokens=False)["input_ids"]) for s, e in pairs]
    return fast, sum(lengths) / len(lengths)


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
    parser.add_argument("--vocab-size", type=int, default=2000, help="BPE vocabulary actually trained (< 32000)")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out already holds a model")
    args = parser.parse_args()

    out = Path(args.out)
    if (out / "config.json").exists() and not args.force:
        print(f"{out} already holds a model (use --force to rebuild)")
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, mean_len = build_tokenizer(out, args.vocab_size)
    t_tok = time.time() - start
    n_params = build_model(out, args.tiny, args.dtype, device)
    if device == "cuda":
        torch.cuda.empty_cache()
    summary = dict(out=str(out), tiny=args.tiny, dtype=args.dtype, params=n_params, tokenizer_vocab=len(tokenizer),
                   mean_example_tokens=round(mean_len, 1), tokenizer_s=round(t_tok, 1),
                   total_s=round(time.time() - start, 1))
    (out / "shaped_model.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
