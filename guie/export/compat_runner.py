"""Run a submission file the way the host did, in whatever torch this interpreter has.

Executed as a script by guie-compat with another environment's Python (``python -I
compat_runner.py MODEL CASES OUT [DEVICE]``), so it must not import guie, numpy or anything
but the standard library and torch, and must parse on Python 3.7. It loads MODEL with plain
``torch.jit.load`` (no ``map_location``, as the GUIE host did), feeds each case of CASES (a
JSON list of ``{"shape": [N, 3, H, W], "file": raw uint8 bytes}``) as a uint8 tensor and
writes, to OUT, JSON with the torch version, the load and run seconds and each output as a
list of float32 values, or the first line of the error. DEVICE ``cuda`` moves the model to
the GPU after loading and feeds CPU tensors, as teams did who moved the model before saving.
"""
import json
import sys
import time
import traceback


def main(argv):
    model_path, cases_path, out_path = argv[1], argv[2], argv[3]
    device = argv[4] if len(argv) > 4 else "cpu"
    result = {"python": ".".join(str(v) for v in sys.version_info[:3])}
    try:
        import torch

        result["torch"] = torch.__version__
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device is available to this torch")
        with open(cases_path) as fh:
            cases = json.load(fh)
        start = time.perf_counter()
        model = torch.jit.load(model_path)
        if device == "cuda":
            model = model.cuda()
        result["load_seconds"] = time.perf_counter() - start
        outputs = []
        start = time.perf_counter()
        with torch.no_grad():
            for case in cases:
                with open(case["file"], "rb") as fh:
                    data = bytearray(fh.read())
                x = torch.frombuffer(data, dtype=torch.uint8).reshape(case["shape"])
                y = model(x)
                if y.dtype != torch.float32:
                    raise RuntimeError(f"output dtype {y.dtype}, expected float32")
                outputs.append({"shape": list(y.shape), "values": y.detach().cpu().flatten().tolist()})
        result["run_seconds"] = time.perf_counter() - start
        result["outputs"] = outputs
        result["ok"] = True
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none crashes the report
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {lines[0].strip() if lines else ''}"
        result["error_detail"] = traceback.format_exc()[-4000:]
    with open(out_path, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
