"""Token saliency as HTML (content, escaping, colours, files) and as PNG (written, decoded)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from agnostic_saliency.plots import plot_tokens

TOKENS = ["The", "film", "was", "<b>great</b>", "&", "dull"]
SCORES = np.array([0.1, 0.4, 0.0, 1.0, -0.2, -0.8])
SPAN = re.compile(r'<span style="background-color: rgba\((\d+), (\d+), (\d+), ([\d.]+)\); '
                  r'[^"]*" title="([^"]*)">(.*?)</span>')


def _spans(text: str) -> list[tuple[str, ...]]:
    return SPAN.findall(text)


def test_html_has_one_escaped_span_per_token_in_order() -> None:
    text = plot_tokens(TOKENS, SCORES)
    assert isinstance(text, str)
    spans = _spans(text)
    assert [span[5] for span in spans] == ["The", "film", "was", "&lt;b&gt;great&lt;/b&gt;",
                                           "&amp;", "dull"]
    assert [float(span[4]) for span in spans] == pytest.approx(SCORES.tolist())
    assert "<b>" not in text
    assert text.startswith('<div class="agnostic-saliency-tokens"') and text.endswith("</div>")


def test_html_colours_are_red_for_positive_blue_for_negative_and_as_opaque_as_strong() -> None:
    spans = _spans(plot_tokens(TOKENS, SCORES))
    colours = [tuple(int(c) for c in span[:3]) for span in spans]
    alphas = np.array([float(span[3]) for span in spans])
    assert colours[3] == (178, 24, 43) and colours[5] == (33, 102, 172)
    np.testing.assert_allclose(alphas, np.abs(SCORES) / 1.0, atol=5e-4)
    magnitude = _spans(plot_tokens(["a", "b"], np.array([1.0, 3.0])))
    assert {tuple(int(c) for c in span[:3]) for span in magnitude} == {(230, 97, 1)}
    assert [float(span[3]) for span in magnitude] == pytest.approx([1 / 3, 1.0], abs=5e-4)
    clipped = _spans(plot_tokens(["a", "b", "c"], np.array([1.0, 2.0, 10.0]),
                                 clip_percentile=50))
    assert [float(span[3]) for span in clipped] == pytest.approx([0.5, 1.0, 1.0], abs=5e-4)


def test_html_file_is_a_whole_page_holding_the_fragment(tmp_path: Path) -> None:
    path = tmp_path / "tokens.html"
    fragment = plot_tokens(TOKENS, SCORES, path, title="target: <positive>")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and fragment in page
    assert "<title>target: &lt;positive&gt;</title>" in page
    assert "<p>target: &lt;positive&gt;</p>" in fragment


def test_scores_may_be_a_framework_tensor_of_one_row() -> None:
    import torch

    tensor = torch.tensor(SCORES[None], requires_grad=True)
    assert plot_tokens(TOKENS, tensor) == plot_tokens(TOKENS, SCORES)


def test_png_is_written_and_decodes(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "tokens.png"
    fig = plot_tokens(TOKENS * 6, np.tile(SCORES, 6), path, title="sentiment", width=5.0)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (round(5.0 * fig.dpi), round(fig.get_figheight() * fig.dpi))
        pixels = np.asarray(png.convert("RGB")).astype(int)
    assert fig.get_figheight() > 1.0  # 36 tokens wrap onto several lines
    reds = (pixels[..., 0] > 150) & (pixels[..., 1] < 60) & (pixels[..., 2] < 80)
    blues = (pixels[..., 2] > 140) & (pixels[..., 0] < 80)
    assert reds.sum() > 50 and blues.sum() > 50
    texts = [text.get_text() for text in fig.texts]
    assert texts[0] == "sentiment" and texts[1:7] == TOKENS


def test_png_pixels_without_a_file() -> None:
    rgba = plot_tokens(TOKENS, SCORES, format="png", return_rgba=True)
    assert rgba.dtype == np.uint8 and rgba.shape[-1] == 4
    assert len(np.unique(rgba.reshape(-1, 4), axis=0)) > 20


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scores": np.zeros(5)}, r"got 6 tokens and scores of shape \(5,\); pass one score"),
    ({"scores": np.zeros((6, 4))}, r"got 6 tokens and scores of shape \(6, 4\)"),
    ({"path": "tokens.txt"}, r"cannot tell how to write 'tokens.txt'; pass format='html'"),
    ({"format": "svg"}, r"format='svg' is not one of"),
    ({"clip_percentile": 0}, r"clip_percentile=0 is out of range"),
])
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"scores": SCORES, **kwargs}
    with pytest.raises(ValueError, match=match):
        plot_tokens(TOKENS, **arguments)  # type: ignore[arg-type]
