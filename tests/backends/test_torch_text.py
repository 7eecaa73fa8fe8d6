"""Token saliency of a Hugging Face BERT through its embedding layer (``layer=``).

The model is built from a small config (nothing is downloaded). Expected maps come
from a hand-written ``torch.autograd.grad`` with respect to the embeddings (passed
as ``inputs_embeds``), and from Captum's ``LayerIntegratedGradients`` and
``LayerGradientXActivation`` on the same layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from transformers import BertConfig, BertForSequenceClassification

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency

N, LENGTH, VOCAB = 4, 10, 100
TARGETS = np.array([0, 2, 1, 2])


def _bert() -> Any:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=LENGTH, num_labels=3, pad_token_id=0)
    return BertForSequenceClassification(config).eval()


def _tokens() -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded with 0 where the attention mask is 0 (two short texts)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(N, LENGTH))
    mask = np.ones((N, LENGTH), np.int64)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    return np.where(mask == 1, ids, 0), mask


MODEL = _bert()
IDS, MASK = _tokens()


def _logits(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return MODEL(input_ids=ids, attention_mask=mask).logits


def _embedding_gradient() -> np.ndarray:
    """d(target logit) / d(word embeddings), by hand: the embeddings as ``inputs_embeds``."""
    embedded = MODEL.get_input_embeddings()(torch.from_numpy(IDS)).detach().requires_grad_(True)
    logits = MODEL(inputs_embeds=embedded, attention_mask=torch.from_numpy(MASK)).logits
    (grad,) = torch.autograd.grad(logits[torch.arange(N), torch.from_numpy(TARGETS)].sum(),
                                  embedded)
    return grad.numpy()


EXPECTED_SALIENCY = np.linalg.norm(_embedding_gradient(), axis=-1)  # l2 over the hidden axis


@pytest.mark.parametrize("batch_size", [1, 2, None])
@pytest.mark.parametrize("structure", ["dict", "tuple"])
def test_saliency_of_the_embeddings_equals_autograd(structure: str, batch_size: Any) -> None:
    inputs: Any = ({"input_ids": IDS, "attention_mask": MASK} if structure == "dict"
                   else (torch.from_numpy(IDS), torch.from_numpy(MASK)))
    maps = Saliency(MODEL, layer=MODEL.get_input_embeddings(), output="logits",
                    batch_size=batch_size).explain(inputs, TARGETS)
    assert maps.shape == (N, LENGTH) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, EXPECTED_SALIENCY, rtol=1e-5, atol=1e-8)
    assert np.all(maps[MASK == 0] == 0)  # padding gets exactly nothing
    assert np.all(maps[MASK == 1] > 0)


@pytest.mark.parametrize("return_dict", [True, False, None])
def test_model_kwargs_reach_the_model(return_dict: bool | None) -> None:
    options: dict[str, Any] = {"output": "logits"}
    if return_dict is not None:
        options["model_kwargs"] = {"return_dict": return_dict}
    if return_dict is False:  # a tuple output: its first item is the logits
        options = {"model_kwargs": {"return_dict": False}, "output_selector": lambda out: out[0]}
    maps = Saliency(MODEL, layer=MODEL.get_input_embeddings(), **options).explain(
        {"input_ids": IDS, "attention_mask": MASK}, TARGETS)
    np.testing.assert_allclose(maps, EXPECTED_SALIENCY, rtol=1e-5, atol=1e-8)


def test_a_tuple_output_without_a_selector_is_named() -> None:
    with pytest.raises(TypeError, match="model returned a tuple"):
        Saliency(MODEL, layer=MODEL.get_input_embeddings(), output="logits",
                 model_kwargs={"return_dict": False}).explain((IDS, MASK), TARGETS)


@pytest.mark.parametrize("batch_size", [7, None])
def test_integrated_gradients_equal_captums_layer_integrated_gradients(batch_size: Any) -> None:
    """A reference token's embedding as the baseline, in the layer's space: Captum runs
    the baseline ids through the layer, we pass that embedding itself."""
    embedding = MODEL.get_input_embeddings()
    reference = 7
    captum = LayerIntegratedGradients(_logits, embedding, multiply_by_inputs=True).attribute(
        torch.from_numpy(IDS), baselines=torch.full_like(torch.from_numpy(IDS), reference),
        target=torch.from_numpy(TARGETS), additional_forward_args=(torch.from_numpy(MASK),),
        n_steps=16, method="gausslegendre")
    ours = IntegratedGradients(
        MODEL, layer=embedding, output="logits", preset="captum", steps=16, reducer=None,
        multiply_by_inputs=True, baseline_value=embedding.weight[reference].detach(),
        batch_size=batch_size).explain({"input_ids": IDS, "attention_mask": MASK}, TARGETS)
    assert ours.shape == (N, LENGTH, 32)
    np.testing.assert_allclose(ours, captum.detach().numpy(), rtol=1e-4, atol=1e-6)
    summed = IntegratedGradients(
        MODEL, layer=embedding, output="logits", preset="captum", steps=16, reducer="sum",
        baseline_value=embedding.weight[reference].detach()).explain((IDS, MASK), TARGETS)
    np.testing.assert_allclose(summed, captum.sum(-1).detach().numpy(), rtol=1e-4, atol=1e-6)


def test_gradient_input_equals_captums_layer_gradient_x_activation() -> None:
    embedding = MODEL.get_input_embeddings()
    captum = LayerGradientXActivation(_logits, embedding).attribute(
        torch.from_numpy(IDS), target=torch.from_numpy(TARGETS),
        additional_forward_args=(torch.from_numpy(MASK),))
    ours = GradientInput(MODEL, layer=embedding, output="logits", reducer="sum").explain(
        {"input_ids": IDS, "attention_mask": MASK}, TARGETS)
    np.testing.assert_allclose(ours, captum.sum(-1).detach().numpy(), rtol=1e-5, atol=1e-7)
    kept = GradientInput(MODEL, layer=embedding, output="logits", reducer=None).explain(
        (IDS, MASK), TARGETS)
    np.testing.assert_allclose(kept, captum.detach().numpy(), rtol=1e-5, atol=1e-8)


def test_embeddings_given_as_an_input_give_the_layers_maps() -> None:
    """``inputs_embeds`` explained as a floating input (hidden axis named) equals layer=."""
    embedded = MODEL.get_input_embeddings()(torch.from_numpy(IDS)).detach()
    maps = Saliency(MODEL, output="logits", channel_axis=-1, reducer="l2").explain(
        {"inputs_embeds": embedded, "attention_mask": MASK}, TARGETS)
    assert maps["attention_mask"] is None
    np.testing.assert_allclose(maps["inputs_embeds"], EXPECTED_SALIENCY, rtol=1e-5, atol=1e-8)


def test_ig_from_the_pad_embedding_is_complete() -> None:
    """Attributions sum to f(x) - f(baseline), the baseline being every token's
    embedding replaced by the pad token's (zero in BERT: its padding_idx row)."""
    embedding = MODEL.get_input_embeddings()
    pad = embedding.weight[MODEL.config.pad_token_id].detach()
    maps = IntegratedGradients(MODEL, layer=embedding, output="logits", steps=64,
                               quadrature="gausslegendre", reducer="sum",
                               baseline_value=pad).explain((IDS, MASK), TARGETS)
    with torch.no_grad():
        at_x = _logits(torch.from_numpy(IDS), torch.from_numpy(MASK))
        at_pad = _logits(torch.zeros_like(torch.from_numpy(IDS)), torch.from_numpy(MASK))
    expected = (at_x - at_pad).numpy()[np.arange(N), TARGETS]
    np.testing.assert_allclose(maps.sum(axis=1), expected, rtol=1e-3, atol=1e-4)


def test_the_worked_example_of_the_docs_runs(tmp_path: Any, monkeypatch: Any) -> None:
    """docs/text-models.md includes docs/snippets/text/bert_tokens.py: it runs, and its
    maps are what the page says they are."""
    import runpy
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    path = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "text" / "bert_tokens.py"
    example = runpy.run_path(str(path))
    mask, batch, model = example["mask"], example["batch"], example["model"]
    assert example["maps"].shape == mask.shape == example["attributions"].shape
    assert np.all(example["maps"][mask == 0] == 0) and np.all(example["maps"][mask == 1] > 0)
    with torch.no_grad():  # completeness, up to the error of 50 trapezoid steps
        at_x = model(**batch).logits[:, 1]
        at_pad = model(input_ids=torch.zeros_like(batch["input_ids"]),
                       attention_mask=batch["attention_mask"]).logits[:, 1]
    np.testing.assert_allclose(example["attributions"].sum(axis=1), (at_x - at_pad).numpy(),
                               rtol=1e-2, atol=1e-6)
    kept = example["specials"].numpy()  # the baseline equals the input there: nothing
    assert np.all(example["attributions_specials"][kept] == 0)
    assert (tmp_path / "tokens.html").read_text().count("[CLS]") == 1


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def test_a_language_models_next_token_is_explained_per_input_token() -> None:
    """Inseq's question on a causal LM: which input tokens made the next token likely.
    The last position's logits are selected; the maps equal autograd on the embeddings,
    and left-padded positions get exactly 0."""
    model = _gpt2()
    mask = np.ones((N, LENGTH), np.int64)
    mask[0, :3] = 0  # left padding, as generation pads
    ids = np.where(mask == 1, IDS, 0)
    following = np.array([5, 17, 42, 99])
    embedded = model.get_input_embeddings()(torch.from_numpy(ids)).detach().requires_grad_(True)
    logits = model(inputs_embeds=embedded, attention_mask=torch.from_numpy(mask)).logits[:, -1]
    (grad,) = torch.autograd.grad(logits[torch.arange(N), torch.from_numpy(following)].sum(),
                                  embedded)
    explainer = Saliency(model, layer=model.get_input_embeddings(), batch_size=3,
                         output_selector=lambda out: out.logits[:, -1])
    maps = explainer.explain({"input_ids": ids, "attention_mask": mask}, following)
    np.testing.assert_allclose(maps, np.linalg.norm(grad.numpy(), axis=-1), rtol=1e-5,
                               atol=1e-7)
    assert np.all(maps[0, :3] == 0)
    assert np.all(maps[mask == 1] > 0)


def test_a_sequence_output_names_the_position_selector() -> None:
    model = _gpt2()
    explainer = Saliency(model, layer=model.get_input_embeddings(), output="logits")
    with pytest.raises(ValueError, match=r"\(4, 10, 100\).*out\.logits\[:, -1\]"):
        explainer.explain({"input_ids": IDS, "attention_mask": MASK}, TARGETS)
