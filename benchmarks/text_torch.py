"""Token saliency of a BERT classifier: ours next to hand-written autograd and Captum.

A 4-layer BERT (hidden 256, 4 heads, seeded random weights: nothing is downloaded)
classifies 8 texts of 128 tokens, the last quarter of each text padded. Every
contender starts from NumPy token ids and an attention mask and ends with NumPy maps:

- *native*: what an expert writes: the embeddings looked up once and passed as
  ``inputs_embeds``, ``torch.autograd.grad`` of the target logits with respect to
  them, the l2 norm over the hidden axis;
- *ours Saliency*: ``Saliency(model, layer=embeddings, output="logits")`` (the same
  maps; it also runs one forward pass to read the layer's output);
- *ours GradientInput*: ``GradientInput(..., layer=embeddings, reducer="sum")``;
- *Captum*: ``LayerGradientXActivation`` on the embeddings, summed over the hidden
  axis (the same maps as ours GradientInput).

Timing as in ``run.py`` (``_harness.measure``): interleaved rounds, medians over
rounds. Usage: ``python benchmarks/text_torch.py [--rounds 10] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from _harness import Contender, agreement, machine, measure

BATCH, LENGTH, HIDDEN, LAYERS, HEADS, VOCAB, CLASSES = 8, 128, 256, 4, 4, 1000, 2


def build(device: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The seeded BERT in eval mode on ``device``, token ids, mask and targets (NumPy)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, intermediate_size=4 * HIDDEN,
                        max_position_embeddings=LENGTH, num_labels=CLASSES)
    model = BertForSequenceClassification(config).eval().to(device)
    rng = np.random.default_rng(0)
    mask = np.ones((BATCH, LENGTH), np.int64)
    mask[:, 3 * LENGTH // 4:] = 0
    ids = np.where(mask == 1, rng.integers(1, VOCAB, size=(BATCH, LENGTH)), 0)
    return model, ids, mask, rng.integers(0, CLASSES, size=BATCH)


def contenders(model: Any, ids: np.ndarray, mask: np.ndarray, targets: np.ndarray,
               device: str) -> list[Contender]:
    import torch
    from captum.attr import LayerGradientXActivation

    from agnostic_saliency import GradientInput, Saliency

    embeddings = model.get_input_embeddings()

    def native() -> np.ndarray:
        with torch.enable_grad():
            embedded = embeddings(torch.from_numpy(ids).to(device)).detach().requires_grad_()
            logits = model(inputs_embeds=embedded,
                           attention_mask=torch.from_numpy(mask).to(device)).logits
            labels = torch.from_numpy(targets).to(device)
            score = logits.gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(score, embedded)
        return grad.norm(dim=-1).cpu().numpy()

    batch = {"input_ids": ids, "attention_mask": mask}
    saliency = Saliency(model, layer=embeddings, output="logits")
    gradient_input = GradientInput(model, layer=embeddings, output="logits", reducer="sum")

    def forward(input_ids: Any, attention_mask: Any) -> Any:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    captum = LayerGradientXActivation(forward, embeddings)

    def captum_run() -> np.ndarray:
        attributions = captum.attribute(
            torch.from_numpy(ids).to(device), target=torch.from_numpy(targets).to(device),
            additional_forward_args=(torch.from_numpy(mask).to(device),))
        return attributions.sum(-1).detach().cpu().numpy()

    return [Contender("native", native),
            Contender("ours Saliency", lambda: saliency.explain(batch, targets)),
            Contender("ours GradientInput", lambda: gradient_input.explain(batch, targets)),
            Contender("Captum LayerGradientXActivation", captum_run)]


def main(argv: list[str] | None = None) -> int:
    """Check that the maps agree, time every contender, print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    model, ids, mask, targets = build(args.device)
    runs = contenders(model, ids, mask, targets, args.device)
    maps = {contender.name: contender.run() for contender in runs}
    print(f"agreement (max |difference| / max |reference|): Saliency vs native "
          f"{agreement(maps['native'], maps['ours Saliency']):.1e}, GradientInput vs Captum "
          f"{agreement(maps['Captum LayerGradientXActivation'], maps['ours GradientInput']):.1e}")
    stats = measure(runs, args.rounds, warmup=1)
    info = machine()
    print(f"\nBERT {LAYERS} layers, hidden {HIDDEN}, batch {BATCH} x {LENGTH} tokens, "
          f"{args.device}, {info.get('cpu', '?')}, {args.rounds} rounds\n")
    print("| contender | median ms | IQR ms | / native (medians) | / native (per round) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    native = np.asarray(stats["native"]["times_ms"])
    for name, entry in stats.items():
        times = np.asarray(entry["times_ms"])
        print(f"| {name} | {entry['median_ms']:.1f} | {entry['q1_ms']:.1f}-{entry['q3_ms']:.1f} "
              f"| {entry['median_ms'] / stats['native']['median_ms']:.2f} "
              f"| {np.median(times / native):.2f} |")
    ratio = np.median(np.asarray(stats["ours GradientInput"]["times_ms"])
                      / np.asarray(stats["Captum LayerGradientXActivation"]["times_ms"]))
    print(f"\nours GradientInput / Captum LayerGradientXActivation (per round): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
