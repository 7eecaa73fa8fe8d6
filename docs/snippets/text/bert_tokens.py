"""Token saliency of a BERT classifier (PyTorch, Hugging Face transformers).

A small, randomly initialised BERT and a toy word-level vocabulary stand in for a
pretrained model and its tokenizer, so that this runs without a download. With a
pretrained model, only the first part changes:

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = BertForSequenceClassification.from_pretrained(name).eval()
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
"""

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

from agnostic_saliency import IntegratedGradients, Saliency
from agnostic_saliency.plots import plot_tokens

words = ["[PAD]", "[CLS]", "[SEP]", "the", "film", "was", "not", "good", "great", "plot"]
vocab = {word: index for index, word in enumerate(words)}
texts = [["the", "film", "was", "great"], ["the", "plot", "was", "not", "good"]]
tokens = [["[CLS]", *text, "[SEP]"] for text in texts]
ids = np.zeros((len(tokens), max(map(len, tokens))), np.int64)  # padded with [PAD] = 0
mask = np.zeros_like(ids)
for row, text in enumerate(tokens):
    ids[row, :len(text)] = [vocab[word] for word in text]
    mask[row, :len(text)] = 1

torch.manual_seed(0)
config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=2)
model = BertForSequenceClassification(config).eval()
batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

embeddings = model.get_input_embeddings()

# |d logit / d embedding|, its l2 norm over the hidden axis: one score per token.
saliency = Saliency(model, layer=embeddings, output="logits")
maps = saliency.explain(batch, targets=1)  # (2, 7); exactly 0 at padding

# Integrated Gradients in the embedding space, from the [PAD] token's embedding at every
# position; "sum" over the hidden axis keeps completeness (the scores of a text add up to
# f(text) - f(baseline)).
pad = embeddings.weight[model.config.pad_token_id].detach()
ig = IntegratedGradients(model, layer=embeddings, output="logits", reducer="sum",
                         baseline_value=pad)
attributions = ig.explain(batch, targets=1)  # (2, 7), signed

# Keep [CLS] and [SEP] in the baseline, [PAD] elsewhere: one baseline per text, (N, L, D).
specials = (batch["input_ids"] == vocab["[CLS]"]) | (batch["input_ids"] == vocab["[SEP]"])
reference = torch.where(specials, batch["input_ids"], model.config.pad_token_id)
ig_specials = IntegratedGradients(model, layer=embeddings, output="logits", reducer="sum",
                                  baseline_value=embeddings(reference).detach())
attributions_specials = ig_specials.explain(batch, targets=1)

# One text's tokens, its padding dropped, as HTML (or .png with matplotlib).
length = int(mask[1].sum())
html = plot_tokens(tokens[1], attributions[1, :length], "tokens.html",
                   title="IG, class 1, [PAD] baseline")
