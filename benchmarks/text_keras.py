"""Token saliency of a keras_hub BERT classifier: ours next to a hand-written compiled gradient.

A ``BertTextClassifier`` around a 4-layer ``BertBackbone`` (hidden 256, 4 heads,
built from its config with seeded random weights: nothing is downloaded) classifies
8 texts of 128 tokens, the last quarter of each text padded. Every contender starts
from NumPy token ids, segment ids and a padding mask and ends with NumPy maps:

- *native*: what an expert writes: the token embeddings looked up once, then a
  compiled gradient of the target logits with respect to them, through the
  backbone's sublayers called as ``BertBackbone`` wires them (``tf.function`` with
  ``GradientTape`` on TensorFlow; ``jax.jit(jax.grad(...))`` with the variables'
  values as arguments in a ``StatelessScope`` on JAX), the l2 norm over the hidden
  axis;
- *ours Saliency*: ``Saliency(classifier, layer=backbone.token_embedding)`` (the
  same maps; it also runs the model up to the layer to read its output);
- *ours Saliency, eager*: the same with the compiled builders removed: the
  structured path as it was before it was compiled.

Timing as in ``run.py`` (``_harness.measure``): interleaved rounds, medians over
rounds. Usage: ``python benchmarks/text_keras.py --framework tensorflow [--rounds 10]``
(``jax`` for Keras on JAX; the framework is fixed per process).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from unittest import mock

import numpy as np
from _harness import Contender, agreement, machine, measure

BATCH, LENGTH, HIDDEN, LAYERS, HEADS, VOCAB, CLASSES = 8, 128, 256, 4, 4, 1000, 2


def build() -> tuple[Any, Any, dict[str, np.ndarray], np.ndarray]:
    """The seeded classifier, its backbone, the inputs and the targets (NumPy)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=4 * HIDDEN, max_sequence_length=LENGTH, dropout=0.0)
    classifier = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=CLASSES, preprocessor=None, dropout=0.0)
    rng = np.random.default_rng(0)
    mask = np.ones((BATCH, LENGTH), np.int32)
    mask[:, 3 * LENGTH // 4:] = 0
    ids = np.where(mask == 1, rng.integers(1, VOCAB, size=(BATCH, LENGTH)), 0).astype(np.int32)
    inputs = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    return classifier, backbone, inputs, rng.integers(0, CLASSES, size=BATCH)


def logits_of(classifier: Any, backbone: Any, tokens: Any, segment_ids: Any,
              padding_mask: Any) -> Any:
    """The classifier's logits from the token embeddings, the backbone's sublayers
    called as ``BertBackbone`` wires them."""
    x = backbone.embeddings_add((tokens, backbone.position_embedding(tokens),
                                 backbone.segment_embedding(segment_ids)))
    x = backbone.embeddings_layer_norm(x)
    for layer in backbone.transformer_layers:
        x = layer(x, padding_mask=padding_mask)
    return classifier.output_dense(backbone.pooled_dense(x[:, 0, :]))


def native_tf(classifier: Any, backbone: Any, inputs: dict[str, np.ndarray],
              targets: np.ndarray) -> Any:
    import tensorflow as tf

    @tf.function(autograph=False)
    def grad(tokens: Any, segments: Any, mask: Any, labels: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(tokens)
            logits = logits_of(classifier, backbone, tokens, segments, mask)
            score = tf.reduce_sum(tf.gather(logits, labels, batch_dims=1))
        return tf.norm(tape.gradient(score, tokens), axis=-1)

    def run() -> np.ndarray:
        tokens = backbone.token_embedding(tf.constant(inputs["token_ids"]))
        return grad(tokens, tf.constant(inputs["segment_ids"]),
                    tf.constant(inputs["padding_mask"]), tf.constant(targets)).numpy()

    return run


def native_jax(classifier: Any, backbone: Any, inputs: dict[str, np.ndarray],
               targets: np.ndarray) -> Any:
    import jax
    import jax.numpy as jnp
    import keras

    variables = [*classifier.trainable_variables, *classifier.non_trainable_variables]

    def score(tokens: Any, values: list[Any], segments: Any, mask: Any, labels: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            logits = logits_of(classifier, backbone, tokens, segments, mask)
        return jnp.sum(jnp.take_along_axis(logits, labels[:, None], axis=1))

    grad = jax.jit(lambda *args: jnp.linalg.norm(jax.grad(score)(*args), axis=-1))

    def run() -> np.ndarray:
        tokens = backbone.token_embedding(jnp.asarray(inputs["token_ids"]))
        return np.asarray(grad(tokens, [variable.value for variable in variables],
                               inputs["segment_ids"], inputs["padding_mask"], targets))

    return run


def contenders(classifier: Any, backbone: Any, inputs: dict[str, np.ndarray],
               targets: np.ndarray, framework: str) -> list[Contender]:
    from agnostic_saliency_keras import _structured_compiled, trace_count

    from agnostic_saliency import Saliency

    native = (native_tf if framework == "tensorflow" else native_jax)(
        classifier, backbone, inputs, targets)
    ours = Saliency(classifier, backend="keras", layer=backbone.token_embedding)
    eager = Saliency(classifier, backend="keras", layer=backbone.token_embedding)

    def eager_run() -> np.ndarray:
        with mock.patch.dict(_structured_compiled._BUILDERS, clear=True):
            return eager.explain(inputs, targets)

    return [Contender("native", native),
            Contender("ours Saliency", lambda: ours.explain(inputs, targets),
                      traces=trace_count),
            Contender("ours Saliency, eager (before)", eager_run)]


def main(argv: list[str] | None = None) -> int:
    """Check that the maps agree, time every contender, print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", default="tensorflow", choices=["tensorflow", "jax"])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.framework
    classifier, backbone, inputs, targets = build()
    runs = contenders(classifier, backbone, inputs, targets, args.framework)
    maps = {contender.name: contender.run() for contender in runs}
    print(f"agreement (max |difference| / max |reference|) with native: ours "
          f"{agreement(maps['native'], maps['ours Saliency']):.1e}, eager "
          f"{agreement(maps['native'], maps['ours Saliency, eager (before)']):.1e}")
    stats = measure(runs, args.rounds, warmup=1)
    info = machine()
    print(f"\nKeras on {args.framework}, keras_hub BERT {LAYERS} layers, hidden {HIDDEN}, "
          f"batch {BATCH} x {LENGTH} tokens, {info.get('cpu', '?')}, "
          f"load {os.getloadavg()[0]:.1f}, {args.rounds} rounds\n")
    print("| contender | first call ms | median ms | IQR ms | / native (medians) "
          "| / native (per round) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    native = np.asarray(stats["native"]["times_ms"])
    for name, entry in stats.items():
        times = np.asarray(entry["times_ms"])
        print(f"| {name} | {entry['first_call_ms']:.0f} | {entry['median_ms']:.1f} "
              f"| {entry['q1_ms']:.1f}-{entry['q3_ms']:.1f} "
              f"| {entry['median_ms'] / stats['native']['median_ms']:.2f} "
              f"| {np.median(times / native):.2f} |")
    traces = stats["ours Saliency"].get("traces_while_timed")
    print(f"\nours Saliency: traces while timed: {traces}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
