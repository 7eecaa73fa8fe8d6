"""The conformance suite every backend runs, ours and anyone's.

Subclass :class:`BackendConformanceTests` in a test module, name the subclass
``Test...`` so pytest collects it, and implement two methods::

    class TestMyBackend(BackendConformanceTests):
        layout = "channels_last"          # or "channels_first" (PyTorch)

        def backend(self):
            return get_backend("mine")

        def build_model(self, spec):
            ...  # build spec.layers in your framework, return the model

Checks compare values, not only shapes: exact gradients of the model zoo in
:mod:`agnostic_saliency.testing.models`, finite differences of the backend's own
predictions, and invariants (targets, batching, layouts, dtypes, side effects). The
plugin checks build further models through hooks with defaults
(``build_static_batch_model``, ``build_product_model``, ``build_masked_model``,
``build_embedding_model``): an ambiguous channel axis, pickling, static batches, and
several inputs, side inputs and layers where the backend declares them
(``structured_inputs``, ``layer_outputs``), the frontend's refusal where it does not.
A check that a backend cannot pass goes into ``expected_failures`` with a reason;
it then runs as a strict ``xfail``, so fixing it is noticed.

Every check runs inside the backend's ``full_precision()`` when it has one, so a
GPU's reduced-precision float32 math (TF32) does not blur the float32 tolerances;
set ``use_full_precision = False`` to check a backend at its framework's defaults.
"""

from __future__ import annotations

from agnostic_saliency.testing.conformance._invariants import InvariantChecks
from agnostic_saliency.testing.conformance._plugin import PluginChecks
from agnostic_saliency.testing.conformance._structured import StructuredChecks
from agnostic_saliency.testing.conformance._values import ValueChecks

__all__ = ["BackendConformanceTests"]


class BackendConformanceTests(ValueChecks, InvariantChecks, PluginChecks, StructuredChecks):
    """Base class of a backend's conformance tests (not collected itself).

    Attributes
    ----------
    layout
        Layout of image inputs the built models consume.
    supports_float64
        Whether the backend computes in float64 for float64 inputs and models.
    detectable
        Whether models built by :meth:`build_model` are detected without ``backend=``.
    rtol, atol
        Tolerances of float32 comparisons.
    expected_failures
        ``{"test_name": "reason"}`` for checks known to fail, run as strict xfail.
    use_full_precision
        Whether each check runs inside the backend's ``full_precision()`` context
        (where it has one): TF32 and similar reduced-precision math off.
    """
