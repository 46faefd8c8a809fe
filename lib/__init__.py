"""The machinery the five numbered scripts stand on, one concern per module:

settings  command-line overrides and the checks every setting passes
store     where outputs go, atomic writes, JSON/JSONL readers, provenance stamps, run locks
prompts   the prompt sets (data/prompt_sets.toml) and the chat format
rawdata   reading and checking the raw CSV, augmentation
models    loading, LoRA, generation, Unsloth and speed switches
metrics   emoji parsing and scores with intervals (word lists: lib/word_lists.toml)
api       asking an OpenAI-compatible server (04)
scores    the tidy table of scores behind the report (05)
report    Markdown rendering and the loss plot (05)
drafts    the draft texts built from the measured numbers (05)
export    merged weights and GGUF files
"""
