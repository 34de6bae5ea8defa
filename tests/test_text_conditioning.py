"""Text encoders (MiniLM from the package, CLIP from a local folder) and the prompt-dropout conditioner."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from common.conditioning.base import Condition
from common.conditioning.text import ClipTextEncoder, check_prompt, get_text_encoder
from common.conditioning.text_conditioner import TextConditioner
from common.sampling.settings import check_guidance_scale


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder("minilm", max_length=16)


def test_minilm_token_states_shape_and_determinism(minilm):
    x = minilm.encode(["Small left pleural effusion.", "", "Cardiomegaly."])
    assert x.shape == (3, 16, 384) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    minilm._cache.clear()
    y = minilm.encode(["Small left pleural effusion.", "", "Cardiomegaly."])
    assert torch.equal(x, y)
    # different prompts give different context; the same prompt in a batch gives the same rows
    assert (x[0] - x[2]).abs().max() > 0.1
    z = minilm.encode(["Cardiomegaly.", "Cardiomegaly."])
    assert torch.equal(z[0], z[1]) and torch.allclose(z[0], x[2], atol=1e-5)


def test_minilm_is_cached_per_process(minilm):
    assert get_text_encoder("minilm", max_length=16) is minilm
    assert get_text_encoder("MiniLM", max_length=16) is minilm


def test_empty_prompt_is_the_unconditional_embedding(minilm):
    """The empty prompt tokenises to [CLS][SEP] + padding: the same row the dropout trains on."""
    assert minilm.tokenizer("")["input_ids"] == [101, 102]
    cond = TextConditioner(encoder=minilm, prompt_dropout=1.0)
    dropped = cond.from_batch({"report": ["Large right pleural effusion.", "Cardiomegaly."]}, train=True)
    null = cond.null(2)
    assert torch.equal(dropped.context, null.context)
    assert torch.equal(null.context[0], minilm.encode("")[0])


def test_long_prompt_truncated_with_warning(minilm):
    long = "left pleural effusion " * 20
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = minilm.encode([long])
    assert x.shape == (1, 16, 384)
    assert any("truncated to 16 tokens" in str(w.message) for w in caught)
    # truncation keeps the first tokens: equal to the encoding of the same prompt cut at the limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = minilm.encode([long + " and a different tail"])
    assert torch.allclose(x, y, atol=1e-5)


def test_prompt_dropout_rate_and_training_vs_eval(minilm):
    cond = TextConditioner(encoder=minilm, prompt_dropout=0.1)
    prompts = ["Cardiomegaly."] * 4000
    g = torch.Generator().manual_seed(0)
    dropped = cond.drop(prompts, generator=g)
    rate = sum(p == "" for p in dropped) / len(prompts)
    assert 0.085 < rate < 0.115
    assert all(p in ("", "Cardiomegaly.") for p in dropped)
    batch = {"report": ["Cardiomegaly.", "Small left pleural effusion."]}
    ev = cond.from_batch(batch, train=False)
    assert isinstance(ev, Condition) and set(ev.items()) == {"context"}
    assert torch.equal(ev.context, minilm.encode(batch["report"]))
    assert TextConditioner(encoder=minilm, prompt_dropout=0.0).drop(prompts) == prompts


def test_condition_stacks_for_one_guided_call(minilm):
    cond = TextConditioner(encoder=minilm)
    both = cond.from_values(3, prompt=["Cardiomegaly."] * 3).cat(cond.null(3))
    assert both.context.shape == (6, 16, 384)


@pytest.mark.parametrize("bad", [None, 3, ["a"], b"bytes"])
def test_non_string_prompt_is_a_clear_error(bad, minilm):
    with pytest.raises(TypeError, match="prompt must be a string"):
        check_prompt(bad)
    with pytest.raises(TypeError, match="prompt must be a string"):
        minilm.encode([bad])


@pytest.mark.parametrize("bad", [-1, -0.5, "abc", None, float("nan"), float("inf"), True, 1e12])
def test_bad_guidance_scale(bad):
    with pytest.raises(ValueError, match="guidance_scale must be"):
        check_guidance_scale(bad)


def test_good_guidance_scale():
    assert check_guidance_scale("3") == 3.0 and check_guidance_scale(0) == 0.0 and check_guidance_scale(7.5) == 7.5
    assert check_guidance_scale(50) == 50.0


def test_bad_conditioner_settings(minilm):
    with pytest.raises(ValueError, match="prompt_dropout"):
        TextConditioner(encoder=minilm, prompt_dropout=1.5)
    with pytest.raises(KeyError, match="no 'report' text"):
        TextConditioner(encoder=minilm).from_batch({"image": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown text encoder"):
        get_text_encoder("bert-large")


def test_clip_missing_path_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download stabilityai/stable-diffusion-2-1-base"):
        ClipTextEncoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="SD-2.1 CLIP text encoder not found"):
        ClipTextEncoder(None)


def _tiny_clip(folder: Path) -> None:
    """A 1-layer CLIP text model with a character vocabulary, in the SD-2.1 folder layout."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz.":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(
        str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
        model_max_length=77, pad_token="<|endoftext|>",
    )
    tok.save_pretrained(str(folder / "tokenizer"))
    cfg = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(str(folder / "text_encoder"))


def test_clip_from_local_folder(tmp_path):
    _tiny_clip(tmp_path / "sd21")
    enc = ClipTextEncoder(tmp_path / "sd21")
    assert enc.max_length == 77 and enc.dim == 32
    x = enc.encode(["", "small left effusion."])
    assert x.shape == (2, 77, 32) and torch.isfinite(x).all()
    assert (x[0] - x[1]).abs().max() > 1e-3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc.encode(["ab " * 100])
    assert any("truncated to 77 tokens" in str(w.message) for w in caught)
