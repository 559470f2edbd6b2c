"""Writes the tokenizer fixtures of metal-lora with the reference libraries (tokenizers, transformers).

Run where `tokenizers` and `transformers` are installed (the GPU machine has them):
    python3 scripts/make_tokenizer_fixtures.py test/fixtures/tokenizers
For each tokenizer kind below it trains a small tokenizer on a generated corpus, saves it as a model
folder would hold it (`save_pretrained`: tokenizer.json, tokenizer_config.json and, with newer
transformers, chat_template.jinja), and writes `expected.json`: for awkward strings, the ids with and
without special tokens and the decodes; for a conversation, the chat template's rendering and ids.
Kinds: a byte-level BPE (GPT-2 / Llama 3 / Qwen), a Metaspace BPE with byte fallback (Llama 2 /
Mistral), a WordPiece (BERT) and a Unigram (SentencePiece).
"""
import json
import os
import random
import sys

import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

out = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/tokenizers"
os.makedirs(out, exist_ok=True)
random.seed(0)

words = "the a of to and in is it that for on with as was at by be this from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three".split()
extras = ["café", "naïve", "über", "ümlaut", "中文", "字符", "日本語", "🤗", "🚀", "é", "def f(x): return x**2", "3.14", "12345", "\t", "  ", "<html>", "Ω≈ç√"]


def corpus():
    lines = []
    for _ in range(3000):
        n = random.randint(3, 14)
        parts = [random.choice(words) for _ in range(n)]
        if random.random() < 0.3:
            parts.insert(random.randint(0, len(parts)), random.choice(extras))
        line = " ".join(parts)
        if random.random() < 0.2:
            line = line.capitalize() + "."
        lines.append(line)
    return lines


CASES = [
    "Hello world",
    " leading space",
    "two  spaces and trailing ",
    "tab\there",
    "new\nline\n\nparagraph",
    "emoji 🤗🚀 end",
    "CJK 中文字符 日本語",
    "accents café naïve über",
    "",
    "   ",
    "numbers 12345 and 3.14",
    "mixed 🤗中文 code: def f(x): return x**2",
    "unseen Ωµ∂ƒ ಠ_ಠ",
    "nbsp\u00a0here and zero\u200bwidth",
    "a" * 40,
    "the the the.",
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi 🤗, what is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And in 中文?"},
]

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% else %}{{ m['content'] }}\n\n{% endif %}{% endfor %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B", special_tokens=[("<|begin_of_text|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    return fast, LLAMA3


def metaspace_byte_fallback():
    # Train on the normalized text, then rebuild the model with the 256 byte tokens in the vocabulary,
    # as Llama 2 / Mistral tokenizers hold them, so unseen characters fall back to bytes.
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.normalizer = norm
    base.pre_tokenizer = pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    base.train_from_iterator(corpus(), trainer)
    state = json.loads(base.to_str())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["model"]["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return fast, MISTRAL


def wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", eos_token="<|im_end|>")
    return fast, CHATML


def unigram():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=specials, unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return fast, CHATML


def ids_of(result):
    if isinstance(result, dict) or hasattr(result, "keys"):
        result = result["input_ids"]
    if result and isinstance(result[0], list):
        result = result[0]
    return list(result)


kinds = {"bpe-bytelevel": byte_level, "bpe-metaspace": metaspace_byte_fallback, "wordpiece": wordpiece, "unigram": unigram}
for name, make in kinds.items():
    fast, template = make()
    fast.chat_template = template
    d = os.path.join(out, name)
    fast.save_pretrained(d)
    cases = []
    for text in CASES:
        with_special = fast(text, add_special_tokens=True)["input_ids"]
        without = fast(text, add_special_tokens=False)["input_ids"]
        cases.append({
            "text": text,
            "ids": with_special,
            "idsNoSpecial": without,
            "tokens": fast.convert_ids_to_tokens(without),
            "decoded": fast.decode(with_special, skip_special_tokens=False),
            "decodedSkipSpecial": fast.decode(with_special, skip_special_tokens=True),
        })
    rendered = fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    chat_ids = ids_of(fast.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True))
    expected = {
        "library": {"tokenizers": __import__("tokenizers").__version__, "transformers": transformers.__version__},
        "vocabSize": len(fast),
        "bos": fast.bos_token,
        "eos": fast.eos_token,
        "cases": cases,
        "chat": {"messages": MESSAGES, "addGenerationPrompt": True, "text": rendered, "ids": chat_ids},
    }
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(name, "vocab", len(fast), "files", sorted(os.listdir(d)))
