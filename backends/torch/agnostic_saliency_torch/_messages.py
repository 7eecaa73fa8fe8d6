"""Messages about PyTorch itself: what was given, what was expected, the next step."""

from __future__ import annotations

from collections.abc import Sequence


def _listing(items: Sequence[str], limit: int = 8) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return f"[{', '.join(items[:limit])}{more}]"


def bad_compile_option(value: object) -> str:
    return (f"TorchBackend(compile={value!r}); pass False, True, or a dict of torch.compile "
            "keyword arguments such as {'mode': 'reduce-overhead'}.")


def training_mode(modules: Sequence[str]) -> str:
    return (f"model is in training mode, and these modules compute differently in it "
            f"(dropout, batch-norm statistics): {_listing(modules)}; the map would depend on "
            "the batch and on randomness. Call model.eval() first or pass "
            "allow_training_mode=True.")


def custom_modules_training(modules: Sequence[str]) -> str:
    return (f"model is in training mode, and these modules of your own classes may compute "
            f"differently in it (their forward may read self.training): {_listing(modules)}. "
            "Call model.eval() first, or pass allow_training_mode=True if training mode "
            "changes nothing.")


def several_devices(devices: Sequence[str]) -> str:
    return (f"model parameters are spread over several devices {_listing(devices)}; "
            "move the model to one device, or pass an operator that handles the placement.")


def meta_weights(names: Sequence[str]) -> str:
    return (f"the model's weights {_listing(names)} are on the 'meta' device: they hold no "
            "values (the model was built under torch.device('meta') or init_empty_weights, "
            "and its weights were never loaded). Load them first: "
            "model.to_empty(device='cpu') then model.load_state_dict(state_dict), or "
            "model.load_state_dict(state_dict, assign=True).")


def cudnn_rnn_backward() -> str:
    return ("cuDNN's RNN kernels cannot be differentiated in eval mode; explain inside "
            "`with torch.backends.cudnn.flags(enabled=False):` instead (do not switch the "
            "model to training mode: dropout would then randomise the map).")


def not_torchscript(path: str, error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (f"{path} is not a TorchScript file ({lines[-1] if lines else type(error).__name__}); "
            "save the model with torch.jit.save, or with torch.export.save as .pt2.")


def operator_with_structure() -> str:
    return ("operator= with several inputs, side inputs or layer= is not supported by the "
            "torch backend; select the output with output= or output_selector= instead, or "
            "wrap the model in a torch.nn.Module whose forward returns the scores.")


def magnitude_with_entries() -> str:
    return ("the torch backend returns signed gradients for several inputs, not magnitude "
            "maps; call gradient() without magnitude= for a ModelInputs without a layer.")


def structured_model_failed(call: str, error: BaseException) -> str:
    return (f"model failed when called as {call}: {type(error).__name__}: {error}. Check the "
            "entries' names (a dict is passed as keyword arguments, a tuple or list "
            "positionally), their shapes, and that the first axis of each is the batch axis.")


def layer_not_module(kind: str) -> str:
    return (f"layer= must be a torch.nn.Module inside the model, got a {kind}; pass the module "
            "itself, e.g. layer=model.get_input_embeddings() or layer=model.features[3].")


def layer_not_in_model(layer: str, model: str) -> str:
    return (f"layer= is a {layer} that is not one of the {model}'s modules "
            "(model.modules()); pass a module of this very model (not of a copy, an "
            "exported program or another instance), e.g. model.get_input_embeddings().")


def layer_not_called(layer: str) -> str:
    return (f"layer= (a {layer}) did not run when the model ran on the inputs, so it has no "
            "output to explain; pass a module that the model's forward calls.")


def layer_called_again(layer: str, calls: int) -> str:
    return (f"layer= (a {layer}) ran {calls} times in one forward pass (a module shared by "
            "several places), so 'its output' is ambiguous; pass a module that runs once, "
            "or wrap the one call you mean in a module of its own.")


def layer_output_not_tensor(layer: str, kind: str) -> str:
    return (f"layer= (a {layer}) returned a {kind}, not a tensor nor a tuple or list whose "
            "first item is a tensor; pass a module whose output is the tensor to explain.")


def layer_values_wrong_shape(layer: str, given: tuple[int, ...],
                             found: tuple[int, ...]) -> str:
    return (f"layer= (a {layer}) output has shape {found} on this call, but values of shape "
            f"{given} were given to replace it; the layer's output must not depend on "
            "anything but the inputs (pass the same inputs and model_kwargs).")
