"""Every message a user can see, in one place.

Each function returns the text of one error or warning. A message names what was
given, what was expected and the next step. Backends import these too, so that a
failure reads the same whatever the framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["SaliencyWarning"]


class SaliencyWarning(UserWarning):
    """A map was computed but looks wrong (all zero, saturated outputs, ...)."""


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _listing(items: Iterable[object], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return f"[{shown}{more}]"


# --- registry ---------------------------------------------------------------------------


def no_backend_installed() -> str:
    return (
        "no saliency backend is installed; install the one for your framework, "
        "e.g. pip install 'agnostic-saliency[torch]' (or [tensorflow], [keras], [jax], [all])"
    )


def unknown_backend(name: str, registered: Sequence[str]) -> str:
    return (
        f"unknown backend {name!r}; registered backends are {_listing(registered)}. "
        "Check the spelling, or install the plugin that provides it."
    )


def not_a_backend(obj: object, missing: Sequence[str]) -> str:
    return (
        f"backend={type(obj).__name__!r} object is not a backend: it lacks {_listing(missing)}. "
        "Pass a registered name (see agnostic_saliency.list_backends()) or an object "
        "implementing agnostic_saliency.backend.Backend."
    )


def backend_name_taken(name: str) -> str:
    return (
        f"a different backend is already registered as {name!r}; "
        "pass replace=True to replace it, or register yours under another name."
    )


def plugin_failed(name: str, target: str, error: BaseException) -> str:
    return (
        f"backend plugin {name!r} ({target}) failed to load and is skipped: "
        f"{type(error).__name__}: {error}. Reinstall or uninstall that plugin."
    )


def plugin_duplicate(name: str, targets: Sequence[str]) -> str:
    return (
        f"several installed plugins claim the backend name {name!r}: {_listing(targets)}; "
        f"using {targets[0]}. Uninstall one, or pass backend= explicitly."
    )


def can_handle_failed(name: str, model_type: str, error: BaseException) -> str:
    return (
        f"backend {name!r} raised while checking a model of type {model_type}: "
        f"{type(error).__name__}: {error}; it is skipped for this model. "
        "Report this to the plugin's authors, or pass backend= explicitly."
    )


def undetectable_function(model: object, installed: Sequence[str]) -> str:
    name = getattr(model, "__qualname__", type(model).__name__)
    return (
        f"cannot tell which framework the plain function {name!r} uses; pass "
        f"backend='jax' (or 'tensorflow', 'torch': one of {_listing(installed)}) to Saliency."
    )


def unsupported_model(model_type: str, modules: Sequence[str], installed: Sequence[str]) -> str:
    return (
        f"unsupported model type {model_type} (its classes come from modules "
        f"{_listing(modules)}); installed backends {_listing(installed)} support "
        "torch.nn.Module, keras.Model, tf.Module or TensorFlow callables, and JAX functions, "
        "Flax NNX and Equinox modules. Pass backend= to force one."
    )


def backend_missing_for(model_type: str, framework: str) -> str:
    return (
        f"a model of type {model_type} comes from {framework!r}, but no installed backend "
        f"handles it; install it with pip install 'agnostic-saliency[{framework}]'."
    )


# --- arguments --------------------------------------------------------------------------


def bad_reducer(reducer: object, choices: Sequence[object]) -> str:
    return f"reducer={reducer!r} is not one of {_listing(choices)}; pick one of them."


def unknown_preset(preset: object, presets: Sequence[str]) -> str:
    return (
        f"preset={preset!r} is not one of {_listing(presets)}; "
        "pick one, or None for the defaults."
    )


def preset_unavailable(method: str, preset: str, available: Sequence[str]) -> str:
    return (
        f"{preset} has no {method}, so preset={preset!r} cannot reproduce it; pick one of "
        f"{_listing(available)}, or pass the definitions explicitly."
    )


def bad_choice(name: str, value: object, choices: Sequence[object]) -> str:
    return f"{name}={value!r} is not one of {_listing(choices)}; pick one of them."


def bad_number(name: str, value: object, minimum: float, integer: bool) -> str:
    kind = "an int" if integer else "a number"
    return f"{name}={value!r}; pass {kind} of at least {minimum}."


def bad_baseline(shape: tuple[int, ...], sample_shape: tuple[int, ...]) -> str:
    return (
        f"baseline_value of shape {shape} does not broadcast to a sample of shape "
        f"{sample_shape}; pass a number, an array of the sample's shape, or one baseline "
        f"per input of shape (N, *{sample_shape})."
    )


def baselines_wrong_count(shape: tuple[int, ...], n: int) -> str:
    return (
        f"baseline_value of shape {shape} gives {shape[0]} baselines for {n} inputs; pass "
        f"one per input (leading axis {n}), a leading axis of 1, or one sample's shape."
    )


def bad_baseline_value(value: object) -> str:
    return (
        f"baseline_value={value!r} ({type(value).__name__}) is not a number or an array of "
        "numbers; pass a number (0.0 is black for inputs scaled to [0, 1]), an array of a "
        "sample's shape, or one baseline per input (e.g. a blurred copy of each)."
    )


def not_gradient_family(name: str) -> str:
    return (
        f"NoiseTunnel wraps Saliency, GradientInput, IntegratedGradients or another "
        f"GradientExplainer that adds no noise itself; got {name}. Pass one of those, "
        "or use SmoothGrad, SquareGrad or VarGrad directly."
    )


def bad_batch_size(batch_size: object) -> str:
    return (f"batch_size={batch_size!r}; pass a positive int such as 32, \"auto\" (the "
            "default: chunks sized to memory_budget) or None (every input at once).")


def bad_memory_budget(budget: object) -> str:
    return (f"memory_budget={budget!r}; pass a number of bytes such as 2e9, or None for 10 % "
            "of the available memory (at least 1 GiB).")


def out_of_memory_backoff(size: int, smaller: int, error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"out of memory with {size} samples per model call ({type(error).__name__}: "
            f"{first[:200]}); retrying with {smaller}. Maps are unchanged; pass a smaller "
            "batch_size or memory_budget to avoid the retries.")


def out_of_memory_one_sample(sample: int, shape: tuple[int, ...]) -> str:
    return (f"out of memory with one sample per model call (sample {sample}, shape "
            f"{shape}): the model needs more memory for a single sample than its device has "
            "free. Free memory held elsewhere (other models or processes), move the model to a "
            "device with more memory, or explain smaller inputs.")


def bad_compile_option(value: object) -> str:
    return (
        f"TorchBackend(compile={value!r}); pass False, True, or a dict of torch.compile "
        "keyword arguments such as {'mode': 'reduce-overhead'}."
    )


def bad_channel_axis(axis: int, shape: tuple[int, ...]) -> str:
    return (
        f"channel_axis={axis} is out of range for inputs of shape {shape}; "
        f"pass an axis between 1 and {len(shape) - 1} (or a negative one)."
    )


def ambiguous_channel_axis(axis: int, shape: tuple[int, ...]) -> str:
    other = len(shape) - 1 if axis == 1 else 1
    name = "the last axis" if other == len(shape) - 1 else "axis 1"
    return (
        f"cannot tell the channel axis of shape {shape}: the default channel_axis={axis} "
        f"has size {shape[axis]}, while {name} has size {shape[other]}, which looks like "
        "channels; pass channel_axis= (-1 for channels-last, 1 for channels-first)."
    )


# --- inputs -----------------------------------------------------------------------------


def inputs_not_array(inputs: object) -> str:
    return (
        f"inputs of type {type(inputs).__name__} cannot be read as an array; "
        "pass a NumPy array or a tensor of the model's framework with a batch axis first."
    )


def compare_channels_first(shape: tuple[int, ...]) -> str:
    return (f"compare() takes images channels-last, but inputs of shape {shape} look "
            "channels-first (axis 1 is small, the last axis is not); pass channel_axis=1 "
            "to compare them as they are (each explainer gets the layout it expects).")


def output_key_missing(name: str, description: str) -> str:
    return (f"output={name!r}, but the model returned {description} without that key or "
            "attribute; pass the name of the tensor to explain (\"logits\"), or "
            "output_selector= to pick it.")


def entry_not_array(key: object, kind: str) -> str:
    return (f"inputs entry {key!r} is a {kind}, not an array; convert it to an array or a "
            "tensor with the batch axis first, as every entry of a tuple, list or dict must be.")


def entries_batch_mismatch(shapes: dict[str, tuple[int, ...]]) -> str:
    return (f"inputs entries of shapes {shapes} do not share a batch axis; give every entry "
            "one row per sample (axis 0 of the same length), and put constants in model_kwargs.")


def nothing_to_attribute(dtypes: dict[str, str]) -> str:
    return (f"no floating entry of the inputs to attribute (dtypes {dtypes}); token ids and masks "
            "cannot carry gradients. Pass layer= (the embedding layer) to explain per token, "
            "or attribute= the floating entries.")


def unknown_attribute(key: object, keys: list[object]) -> str:
    return (f"attribute={key!r} names no inputs entry; pass positions (tuple, list) or keys "
            f"(dict) of the entries, which are {keys}.")


def per_sample_model_kwarg(name: str, shape: tuple[int, ...]) -> str:
    return (f"model_kwargs[{name!r}] has shape {shape}, one row per sample: it would not follow "
            "the chunks, noisy copies and path points. Put it in the inputs (a tuple or dict "
            "entry) instead; model_kwargs are for constants such as return_dict=True.")


def structured_not_supported(backend: str, what: str) -> str:
    return (f"backend {backend!r} does not support {what}; pass one floating array (for a "
            "layer, its output as the inputs), or use a backend that declares it (torch, keras "
            "and jax take several inputs and layers; tensorflow's tf.Module several inputs).")


def output_and_selector(name: str) -> str:
    return (f"output={name!r} and output_selector= were both given; pass one of them.")


def inputs_are_a_dataset(kind: str) -> str:
    return (
        f"inputs of type {kind} are a data set, not a batch; explain takes one array. Pass "
        "the data set to explainer.explain_dataset(data) (or explain_batches(data) to get "
        "the maps batch by batch), which reads it one batch at a time."
    )


def inputs_not_floating(dtype: object) -> str:
    return (
        f"inputs have dtype {dtype}; saliency needs floating inputs. Convert (and normalise) "
        "to float32 as the model expects, or explain with respect to an embedding instead of "
        "token ids."
    )


def inputs_without_batch_axis(shape: tuple[int, ...]) -> str:
    return (
        f"inputs of shape {shape} have no batch axis; add one, e.g. inputs[None] for a single "
        "sample."
    )


def inputs_not_finite(count: int, first_sample: int) -> str:
    return (
        f"inputs contain {count} non-finite values (first at sample {first_sample}); "
        "replace NaN/Inf before explaining, e.g. with np.nan_to_num."
    )


def dtype_cast(given: str, used: str) -> str:
    return (
        f"inputs are {given} but the model computes in {used}; they are cast to {used}, a "
        f"lower precision. Pass {used} inputs to silence this, or convert the model to {given}."
    )


def model_failed(shape: tuple[int, ...], error: BaseException) -> str:
    return (
        f"model failed on inputs of shape {shape}: {type(error).__name__}: {error}. "
        "Check the input layout and that the first axis is the batch axis."
    )


# --- targets ----------------------------------------------------------------------------


def targets_not_integer(dtype: object) -> str:
    return (
        f"targets of dtype {dtype} are not class indices; pass integers such as "
        "np.array([3, 1, 0]), or a 2-D array of weights of shape (N, n_outputs)."
    )


def targets_wrong_length(count: int, n: int) -> str:
    return (
        f"got {count} targets for {n} inputs; pass one target per sample, one int for all, "
        "or None to explain the predicted class."
    )


def targets_out_of_range(value: int, n_outputs: int) -> str:
    return (
        f"target {value} out of range for a model with {n_outputs} outputs "
        f"(valid: 0..{n_outputs - 1}); negative indices are not accepted. Check that the "
        "labels match the model's outputs."
    )


def targets_wrong_rank(shape: tuple[int, ...]) -> str:
    return (
        f"targets of shape {shape}; pass an int, class indices of shape (N,), "
        "or weights of shape (N, n_outputs)."
    )


def weights_wrong_shape(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    return (
        f"2-D targets of shape {shape} do not match the model's outputs {expected}; "
        f"pass weights of shape {expected}, or class indices of shape ({expected[0]},)."
    )


def weights_not_finite() -> str:
    return "2-D targets (output weights) contain NaN or Inf; pass finite weights."


def single_output_target(value: object) -> str:
    return (
        f"targets={value!r} given for a model with one output per sample; "
        "pass targets=None (or 0) for a single-output (regression) model."
    )


# --- model outputs ----------------------------------------------------------------------


def describe_output(outputs: object) -> str:
    """Describe a model output that is not one array: its kind and keys or length."""
    if isinstance(outputs, Mapping):
        return f"a {type(outputs).__name__} with keys {sorted(map(str, outputs))}"
    if isinstance(outputs, (tuple, list)):
        return f"a {type(outputs).__name__} of {len(outputs)} items"
    return f"an object of type {type(outputs).__name__}"


def output_not_tensor(description: str) -> str:
    return (
        f"model returned {description}, not a single tensor; pass "
        "output_selector=lambda out: out['logits'] (or out[0]) to Saliency, "
        "or an operator that returns one score per sample."
    )


def output_wrong_shape(shape: tuple[int, ...], n: int) -> str:
    return (
        f"model output of shape {shape} for a batch of {n}; expected (N,) or (N, n_outputs) "
        f"with N={n}. {_select_hint(shape)}"
    )


def _select_hint(shape: tuple[int, ...]) -> str:
    """What to pass for an output that is not one row per sample."""
    if len(shape) == 3:  # (N, L, V): a sequence model's per-position outputs
        return ("For a sequence model's outputs (N, positions, classes), select the position "
                "that is explained, e.g. output_selector=lambda out: out.logits[:, -1] for a "
                "language model's next token; or pass an operator that returns one score per "
                "sample.")
    return "For other outputs pass an operator that returns one score per sample."


def operator_wrong_shape(shape: tuple[int, ...], n: int) -> str:
    return (
        f"operator returned scores of shape {shape} for a batch of {n}; make it return one "
        f"score per sample, shape ({n},), e.g. by indexing or summing per sample."
    )


def probabilities_output() -> str:
    return (
        "model outputs look like probabilities (in [0, 1], rows sum to 1): gradients through "
        "a softmax saturate; explain the logits instead (drop the final softmax)."
    )


# --- backend answers --------------------------------------------------------------------


def gradient_is_none() -> str:
    return (
        "gradient of the target score with respect to the input is None: the output does "
        "not depend on the input. Check that the forward pass uses its input and stays in "
        "the framework (no .numpy(), .detach() or predict() inside it)."
    )


def gradient_wrong_shape(backend: str, shape: object, expected: tuple[int, ...]) -> str:
    return (
        f"backend {backend!r} returned a gradient of shape {shape} for inputs of shape "
        f"{expected}; this is a bug in that backend, please report it to its authors."
    )


def gradient_not_float(backend: str, dtype: object) -> str:
    return (
        f"backend {backend!r} returned a gradient of dtype {dtype}; expected a floating "
        "NumPy array. This is a bug in that backend, please report it."
    )


def gradient_not_finite(samples: Sequence[int]) -> str:
    return (
        f"saliency is NaN or Inf for samples {_listing(samples)}; the model's gradient is not "
        "finite there (check for log/sqrt/division at 0, or float16 overflow)."
    )


def zero_saliency(samples: Sequence[int]) -> str:
    return (
        f"saliency is identically zero for samples {_listing(samples)}; the model output may be "
        "disconnected from its input (e.g. .numpy()/predict()/detach inside forward) or "
        "saturated (softmax/sigmoid output; explain logits instead)."
    )


# --- framework-specific model state -----------------------------------------------------


def training_mode(modules: Sequence[str]) -> str:
    return (
        f"model is in training mode (e.g. Dropout/BatchNorm active in {_listing(modules)}); "
        "call model.eval() first or pass allow_training_mode=True."
    )


def runs_eagerly(error: BaseException) -> str:
    return (
        f"the model could not be traced into a TensorFlow graph ({type(error).__name__}: "
        f"{_last_line(error)}); it runs eagerly, which is slower. "
        "Avoid .numpy() and Python control flow on tensors in the forward pass."
    )


def keras_backend_unsupported(framework: str) -> str:
    return (
        f"Keras runs on its {framework!r} backend, which has no gradients; set "
        "KERAS_BACKEND to 'tensorflow', 'jax' or 'torch' before importing keras."
    )


def cudnn_rnn_backward() -> str:
    return (
        "cuDNN's RNN kernels cannot be differentiated in eval mode; explain inside "
        "`with torch.backends.cudnn.flags(enabled=False):` instead (do not switch the model "
        "to training mode: dropout would then randomise the map)."
    )


def several_devices(devices: Sequence[str]) -> str:
    return (
        f"model parameters are spread over several devices {_listing(devices)}; "
        "move the model to one device, or pass an operator that handles the placement."
    )


# --- comparisons -------------------------------------------------------------


def maps_shape_mismatch(shapes: Mapping[str, tuple[int, ...]]) -> str:
    listing = ", ".join(f"{name}: {shape}" for name, shape in shapes.items())
    return (
        f"cannot compare maps of different shapes ({listing}); explain the same inputs with "
        "the same reducer (or reducer=None everywhere), with images given channels-last."
    )


def maps_without_batch_axis(shape: tuple[int, ...]) -> str:
    return (
        f"maps of shape {shape} have no batch axis or no samples; pass maps of shape "
        "(N, ...) with N >= 1, e.g. maps[None] for a single map."
    )


def maps_not_finite() -> str:
    return "maps contain NaN or Inf; compare finite maps (check the explained model first)."


def bad_top_k(k: object) -> str:
    return (
        f"top_k={k!r} is not a fraction of the positions; pass a number with "
        "0 < top_k <= 1 (e.g. 0.1 for the largest 10%)."
    )


def too_few_entries(names: list[str]) -> str:
    return (
        f"compare needs at least two explainers or maps, got {names}; pass a dict such as "
        "{'torch': explainer_a, 'jax': explainer_b}."
    )


def inputs_required(names: list[str]) -> str:
    return (
        f"explainers {names} need inputs to explain; pass inputs= (channels-last for images), "
        "or pass precomputed maps instead of explainers."
    )


def unsupported_channel_axis(name: str, axis: int) -> str:
    return (
        f"explainer {name!r} has channel_axis={axis}; compare passes images channels-last "
        "or channels-first only; pass it channel_axis=1 (channels-first) or -1 (channels-last)."
    )


def unknown_pair(name_a: str, name_b: str, names: list[str]) -> str:
    return f"no row for the pair ({name_a!r}, {name_b!r}); pick two of the compared names {names}."


# --- plots -------------------------------------------------------------------


def matplotlib_missing() -> str:
    return (
        "plotting needs matplotlib, which is not installed; "
        "install it with pip install 'agnostic-saliency[plot]'."
    )


def maps_wrong_rank(shape: tuple[int, ...], kind: str) -> str:
    return (
        f"maps of shape {shape} cannot be drawn as kind={kind!r}; pass (N, H, W) or "
        "(N, H, W, C) images, (N, F) tabular maps, or (N, T) / (N, T, F) with kind='series'."
    )


def images_wrong_rank(shape: tuple[int, ...]) -> str:
    return (
        f"images of shape {shape}; expected (N, H, W) grayscale or (N, H, W, C) images "
        "(pass channel_axis=1 for channels-first)."
    )


def inputs_wrong_shape(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    return (
        f"inputs of shape {shape} do not match maps of shape {expected}; pass the "
        "explained inputs themselves, or images=None."
    )


def plot_wrong_length(name: str, count: int, n: int, per: str = "maps") -> str:
    one = "sample" if per == "maps" else "feature"
    return f"got {count} {name} for {n} {per}; pass one per {one} (or None)."


def plot_out_of_range(name: str, value: object, expected: str) -> str:
    return f"{name}={value!r} is out of range; pass a value with {expected}."


def plot_no_maps() -> str:
    return "plot_comparison got no maps; pass a dict such as {'torch': maps_a, 'jax': maps_b}."


def plot_shapes_differ(shapes: Mapping[str, tuple[int, ...]]) -> str:
    listing = ", ".join(f"{name}: {shape}" for name, shape in shapes.items())
    return (
        f"cannot plot maps of different shapes side by side ({listing}); "
        "explain the same inputs with the same reducer."
    )


def plot_not_array(name: str, kind: str, error: BaseException) -> str:
    return (
        f"{name} of type {kind} cannot be read as an array ({_last_line(error)}); pass a "
        "NumPy array or a tensor of PyTorch, TensorFlow or JAX."
    )


def images_do_not_match(images: tuple[int, ...], maps: tuple[int, ...],
                        spatial: tuple[int, ...]) -> str:
    return (
        f"images of shape {images} do not match maps of shape {maps}: the maps are "
        f"{spatial[0]}x{spatial[1]} pixels; pass the images that were explained (resized "
        "as the model saw them), or channel_axis=1 / -1 if the channels were misread."
    )


def plot_ambiguous_channels(shape: tuple[int, ...]) -> str:
    return (
        f"cannot tell the channel axis of shape {shape}: axis 1 and the last axis both could "
        "be channels; pass channel_axis=1 (channels-first) or channel_axis=-1 "
        "(channels-last), or explainer= the explainer that made the maps."
    )


def plot_bad_classes(name: str, shape: tuple[int, ...], dtype: object, n: int) -> str:
    return (
        f"{name} of shape {shape} and dtype {dtype} are not class indices for {n} maps; "
        "pass an int, one int per sample, or (N, n_classes) scores."
    )


def plot_class_out_of_range(index: int, count: int) -> str:
    return (
        f"class index {index} has no name among {count} class_names; pass one name per "
        "class, or a dict from class index to name."
    )


def tokens_scores_mismatch(count: int, shape: tuple[int, ...]) -> str:
    return (
        f"got {count} tokens and scores of shape {shape}; pass one score per token, e.g. "
        "the saliency of each token's embedding summed over the embedding axis."
    )


def tokens_format(name: str) -> str:
    return (
        f"cannot tell how to write {name!r}; pass format='html' or format='png', or a path "
        "ending in .html, .htm or .png."
    )


# --- command line ---------------------------------------------------------------------


def path_missing(kind: str, path: str) -> str:
    return f"{kind} {path!r} does not exist; check the path."


def unknown_model_format(name: str, loaders: Sequence[str]) -> str:
    return (
        f"no installed backend loads {name!r} (backends that load saved models: "
        f"{_listing(loaders)}); save the model as .keras, TorchScript .pt, torch.export .pt2, "
        "a TensorFlow SavedModel folder or a jax.export .jax file."
    )


def not_torchscript(path: str, error: BaseException) -> str:
    return (
        f"{path} is not a TorchScript file ({_last_line(error)}); save the model with "
        "torch.jit.save, or with torch.export.save as .pt2."
    )


def unknown_inputs_format(suffix: str) -> str:
    return f"unknown inputs format {suffix!r}; pass a .npy or .npz file, or a folder of images."


def npz_key_missing(name: str, path: str, files: Sequence[str]) -> str:
    return f"no array {name!r} in {path}; it holds {_listing(files)}; pass one of them as --key."


def no_images(folder: str, suffixes: Sequence[str]) -> str:
    return f"no images ({', '.join(suffixes)}) in {folder}; check the folder, or pass a .npy file."


def images_differ(folder: str, shapes: Sequence[object]) -> str:
    return f"images in {folder} have different sizes {_listing(shapes)}; resize them to one size."


def targets_file_length(path: str, count: int, n: int) -> str:
    return f"{path} holds {count} targets for {n} inputs; pass one target per input."


def no_inputs(path: str) -> str:
    return f"{path} holds no inputs (an empty array); check the file."


def bad_sample_ids(shape: tuple[int, ...], dtype: object, n: int) -> str:
    return (f"sample_ids of shape {shape} and dtype {dtype} for {n} inputs; expected one "
            f"non-negative integer id per sample, shape ({n},). Pass each sample's index in "
            "the whole data set.")
