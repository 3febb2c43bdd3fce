"""Tiny, deterministic models for tests: built in-process, never touching a real model or the network.

The tokenizer is a byte-level BPE (every string encodes, nothing is unknown) trained on a
built-in corpus, with SmolLM2's special tokens and its ChatML chat template, so code written
against the tiny decoder behaves the same on ``smollm2-135m-instruct``. The models are 2 layers,
32 wide, a few hundred KB on disk, and their weights depend only on ``seed``: linear and embedding
weights come from the seeded normal init, and the norm weights are jittered away from 1 so that
no layer is an identity (a test of "this parameter changed" or "merge equals unmerged" can fail).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

# The chat template of SmolLM2-135M-Instruct, verbatim (read from its GGUF): ChatML, and a
# default system message when the conversation does not start with one.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<pad>", "<|im_start|>", "<|im_end|>", "[CLS]", "[SEP]")  # ids 0..4
VOCAB_SIZE = 768

_SENTENCES = """\
The quick brown fox jumps over the lazy dog.
I loved this film, the acting was wonderful and the story was moving.
This was the worst meal I have ever eaten; the soup was cold and the service was slow.
The package arrived on time and everything worked as described.
Please send the invoice to the accounting department by Friday.
What is the capital of France? The capital of France is Paris.
Translate the following sentence into French: good morning, how are you?
Summarise the article in one sentence.
The weather today is sunny with a light breeze from the west.
My order number is 12345 and I would like a refund.
The meeting has been moved to Tuesday at three o'clock.
She bought apples, oranges, bananas and a loaf of bread at the market.
The battery lasts all day, but the screen scratches easily.
Customer support answered quickly and solved my problem.
The train was delayed by forty minutes because of a signal failure.
Write a short poem about the sea.
You are a helpful assistant. Answer the question briefly.
The label is positive. The label is negative. The label is neutral.
Extract the name, the date and the amount from the text below.
John Smith paid 250 dollars on 3 March 2024 for two concert tickets.
Alice Johnson was born in London in 1990 and works as an engineer.
The hotel room was clean, quiet and close to the station.
I will never buy this product again; it broke after two days.
The recipe needs two eggs, a cup of flour and a pinch of salt.
Our team won the match by three goals to one.
Reset your password by following the link in the email.
The museum opens at nine in the morning and closes at five.
Thank you for your help, it was very useful!
Is this review positive or negative? Answer with one word.
The report shows that sales grew by ten percent last year.
"""
_JSON_LINES = """\
{"name": "Alice", "age": 30, "city": "London"}
{"text": "Great product, works well.", "label": "positive"}
{"text": "Terrible, it broke at once.", "label": "negative"}
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
{"prompt": "Add 2 and 3.", "completion": "5"}
{"person": "John Smith", "amount": 250.0, "currency": "USD", "date": "2024-03-03"}
{"items": ["apples", "oranges", "bread"], "total": 12.5, "paid": true, "note": null}
{"instruction": "Summarise the text.", "input": "The meeting moved to Tuesday.", "output": "Meeting on Tuesday."}
"""
CORPUS: tuple[str, ...] = tuple(line for line in (_SENTENCES + _JSON_LINES).splitlines() if line)


def build_tiny_tokenizer(*, encoder: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of ``VOCAB_SIZE`` tokens, trained on ``CORPUS`` (deterministic).

    Decoder style (default): eos ``<|im_end|>``, bos ``<|im_start|>`` (not added when encoding,
    as in SmolLM2), pad ``<pad>`` (id 0), SmolLM2's chat template. With ``encoder=True`` it also
    wraps every text as ``[CLS] text [SEP]`` (pairs as ``[CLS] a [SEP] b [SEP]``), as BERT does.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    if encoder:
        cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        inputs = ["input_ids", "token_type_ids", "attention_mask"]  # like BERT's tokenizer
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        inputs = ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        chat_template=CHATML_TEMPLATE,
        model_max_length=128,
        model_input_names=inputs,
    )


def make_tiny_decoder(out_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer Llama (32 wide, 4 heads, 2 kv heads, tied embeddings) with the tiny tokenizer."""
    tokenizer = build_tiny_tokenizer()
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        tie_word_embeddings=True,
        **special,
    )
    model = _seeded(lambda: LlamaForCausalLM(config), seed)
    model.generation_config = GenerationConfig(**special)
    return _save(model, tokenizer, Path(out_dir))


def make_tiny_encoder(out_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer BERT (32 wide) as a bare ``BertModel`` folder, like MiniLM's, with the tiny tokenizer."""
    tokenizer = build_tiny_tokenizer(encoder=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _seeded(lambda: BertModel(config), seed)
    return _save(model, tokenizer, Path(out_dir))


def _seeded(build: Callable[[], PreTrainedModel], seed: int) -> PreTrainedModel:
    """Build a model under ``seed`` without touching the caller's random state; jitter the norms."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name.lower():  # RMSNorm / LayerNorm: weight 1 -> 1 + noise, bias 0 -> noise
                    param.add_(0.1 * torch.randn_like(param))
    return model


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors
    tokenizer.save_pretrained(out_dir)
    return out_dir
