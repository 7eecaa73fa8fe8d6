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
