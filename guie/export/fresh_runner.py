"""The one script guie runs in a fresh interpreter: a model file loaded and fed as the host did, or the
smoke test's notebook kernel, either way with guie made unimportable first.

Executed by guie.export.fresh (never imported for its work) with this Python or another torch's
environment's, down to Python 3.7 and torch 1.11: so it imports only the standard library at
import time, torch inside ``run`` and PIL only when image files are fed, and its syntax is
Python 3.7's. Two modes:

``python -I fresh_runner.py run PLAN OUT``
    PLAN is JSON: ``{"model": path, "device": "cpu"|"cuda", "inline_values": n, "inputs": [...]}``,
    each input ``{"name", "runs": k, "tensor": {"shape": [N, 3, H, W], "file": raw uint8 bytes}}``
    or ``{"name", "runs": k, "images": [paths]}`` (each file opened as the GUIE host did: PIL
    open, convert("RGB"), uint8 ``(1, 3, H, W)``; several of one size stacked into one batch).
    A TorchScript file is loaded with plain ``torch.jit.load`` and no ``map_location``, as the
    host did, and moved to the GPU for ``cuda`` (CPU tensors are fed all the same); a ``.pt2``
    with ``torch.export.load``. Each input is fed ``runs`` times. OUT receives JSON: python,
    torch, load and run seconds, per input its shape and per run the output's type, shape,
    dtype, seconds and values (float32; inline up to ``inline_values`` numbers, else a raw
    float32 file beside OUT), or the error (type, first and last line, stage); and what
    ``import guie`` said at the end. Exits 0 whenever it wrote OUT.
``python [-I] fresh_runner.py kernel -f CONNECTION_FILE``
    ipykernel's kernel, for the smoke test's notebook.
"""
import array
import json
import os
import sys
import time
import traceback

GUARD_MESSAGE = ("guie is not installed at Kaggle or at the GUIE host; the notebook and the model file "
                 "must not need it")


class NoGuie:
    """A meta-path finder that refuses guie and its submodules, as an interpreter without guie would."""

    def find_spec(self, name, path=None, target=None):
        if name == "guie" or name.startswith("guie."):
            raise ModuleNotFoundError(GUARD_MESSAGE)
        return None


def install_guard():
    """guie made unimportable (an editable install's finder sits in site-packages, even under -I), and this
    script's folder (guie/export, on sys.path when not isolated) taken off sys.path."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if not p or os.path.abspath(p) != here]
    sys.meta_path.insert(0, NoGuie())


class ImageFileError(Exception):
    """An image file PIL could not open or decode, with the original error."""

    def __init__(self, path, error):
        Exception.__init__(self, str(error))
        self.path, self.error = path, error


def error_record(exc, stage):
    if isinstance(exc, ImageFileError):
        record = error_record(exc.error, stage)
        record["file"] = exc.path
        return record
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return {"type": type(exc).__name__, "first_line": lines[0][:500] if lines else "",
            "last_line": lines[-1][:500] if lines else "", "stage": stage,
            "detail": traceback.format_exc()[-4000:]}


def host_image(torch, path):
    """uint8 (1, 3, H, W): PIL open, convert("RGB"), PILToTensor, a batch axis; what the host fed."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    width, height = rgb.size
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(height, width, 3)
    return pixels.permute(2, 0, 1).contiguous().unsqueeze(0)


def make_input(torch, entry):
    """The tensor one plan input stands for; raises ImageFileError for an image file that cannot be opened."""
    if "tensor" in entry:
        with open(entry["tensor"]["file"], "rb") as fh:
            data = bytearray(fh.read())
        if not data:  # a tensor with no elements (an empty batch): frombuffer refuses an empty buffer
            return torch.zeros(entry["tensor"]["shape"], dtype=torch.uint8)
        return torch.frombuffer(data, dtype=torch.uint8).reshape(entry["tensor"]["shape"])
    singles = []
    for path in entry["images"]:
        try:
            singles.append(host_image(torch, path))
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt, decompression bomb: the file's problem
            raise ImageFileError(path, exc) from exc
    sizes = sorted(set(tuple(x.shape[-2:]) for x in singles))
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sizes} cannot be stacked into one batch")
    return torch.cat(singles) if len(singles) > 1 else singles[0]


def describe_output(torch, y, seconds, raw_path, inline_values):
    out = {"type": type(y).__name__, "seconds": seconds}
    if not isinstance(y, torch.Tensor):
        return out
    out.update({"shape": list(y.shape), "dtype": str(y.dtype), "device": str(y.device)})
    values = y.detach().cpu().float().flatten().tolist()
    if len(values) <= inline_values:
        out["values"] = values
    else:  # no numpy in an old torch's environment: the standard library's array writes raw float32
        with open(raw_path, "wb") as fh:
            array.array("f", values).tofile(fh)
        out["file"] = raw_path
    return out


def run_input(torch, model, entry, index, out_dir, inline_values):
    record = {"name": entry.get("name", str(index)), "runs": [], "error": None}
    try:
        x = make_input(torch, entry)
    except Exception as exc:  # noqa: BLE001 - reported for the parent to judge
        record["error"] = error_record(exc, "input")
        return record
    record["input_shape"] = list(x.shape)
    for run in range(int(entry.get("runs", 1))):
        start = time.perf_counter()
        try:
            y = model(x)
        except Exception as exc:  # noqa: BLE001 - any failure of the model is the finding
            record["error"] = error_record(exc, "forward")
            break
        raw = os.path.join(out_dir, f"output-{index}-{run}.f32")
        record["runs"].append(describe_output(torch, y, time.perf_counter() - start, raw, inline_values))
    return record


def load_model(torch, path, device):
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available to this torch")
    if path.endswith(".pt2"):
        model = torch.export.load(path).module()
    else:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 text: torch's C++ takes only text paths
            with open(path, "rb") as fh:
                model = torch.jit.load(fh)
        else:
            model = torch.jit.load(path)  # no map_location, as the GUIE host loaded it
    return model.cuda() if device == "cuda" else model


def guie_import_error():
    """What ``import guie`` raises here at the end (the guard's message when it held), or None if it imported."""
    try:
        import guie  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def run(plan, out_dir):
    """The result of one plan (see the module docstring); never raises."""
    result = {"python": ".".join(str(v) for v in sys.version_info[:3]), "torch": None, "error": None,
              "inputs": [], "load_seconds": None, "run_seconds": None}
    try:
        import torch

        result["torch"] = torch.__version__
        if hasattr(torch._C, "_jit_set_profiling_executor"):
            if plan.get("profiling_executor", True) is False:
                torch._C._jit_set_profiling_executor(False)  # the simple executor: no per-shape optimisation
            current = torch._C._jit_set_profiling_executor(True)  # returns the setting it replaces: read it back
            torch._C._jit_set_profiling_executor(current)
            result["profiling_executor"] = bool(current)
        start = time.perf_counter()
        try:
            model = load_model(torch, plan["model"], plan.get("device", "cpu"))
        except Exception as exc:  # noqa: BLE001 - torch reports unreadable files many ways
            result["error"] = error_record(exc, "load")
        else:
            result["load_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            with torch.no_grad():
                for index, entry in enumerate(plan["inputs"]):
                    result["inputs"].append(run_input(torch, model, entry, index, out_dir,
                                                      int(plan.get("inline_values", 4096))))
            result["run_seconds"] = time.perf_counter() - start
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none crashes the report
        result["error"] = error_record(exc, "load" if result["load_seconds"] is None else "run")
    result["guie_import_error"] = guie_import_error()
    result["guie_modules"] = sorted(m for m in sys.modules if m == "guie" or m.startswith("guie."))
    return result


def main(argv):
    install_guard()  # before anything else: nothing below may reach guie
    if len(argv) >= 2 and argv[1] == "kernel":
        sys.argv = [argv[0]] + argv[2:]
        from ipykernel.kernelapp import launch_new_instance

        launch_new_instance()
        return 0
    if len(argv) != 4 or argv[1] != "run":
        sys.stderr.write("usage: fresh_runner.py run PLAN OUT | fresh_runner.py kernel -f CONNECTION_FILE\n")
        return 2
    with open(argv[2]) as fh:
        plan = json.load(fh)
    result = run(plan, os.path.dirname(os.path.abspath(argv[3])))
    partial = argv[3] + ".partial"
    with open(partial, "w") as fh:
        json.dump(result, fh)
    os.replace(partial, argv[3])  # a result is whole or absent
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
