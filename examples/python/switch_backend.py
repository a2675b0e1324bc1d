"""The same model on every available backend, switched with one flag.

    python examples/python/switch_backend.py [MODEL_DIR] [--backends cpu,opencl]

Loads the checkpoint once, then moves it between devices with Model.to()
(the weights are not read again) and prints how far each device's logits are
from the reference backend's.
"""
import argparse
import tempfile

import numpy as np

import moert


def available_devices():
    devices = []
    for backend in moert.backends():
        if backend["available"]:
            devices += [f"{backend['name']}:{i}" for i in range(len(backend["devices"]))]
    return devices


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="checkpoint directory (default: a tiny random one)")
    p.add_argument("--backends", help="comma-separated devices (default: every available one)")
    args = p.parse_args(argv)
    devices = args.backends.split(",") if args.backends else available_devices()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            from moert_reference.make_checkpoint import make_checkpoint
            path = tmp + "/tiny-qwen3"
            make_checkpoint("qwen3_moe", path, dtype="f32", seed=0)
        ids = [3, 1, 4, 1, 5, 9, 2, 6]
        model = moert.load(path, backend="reference", progress=False)
        want = model.forward(ids)
        scale = float(np.abs(want).max())
        errors = {}
        for device in devices:
            model.to(device, strict=True)  # strict: an op the device lacks is an error
            got = model.forward(ids)
            errors[device] = float(np.abs(got - want).max()) / scale
            print(f"{device:12s} max |dlogit| / max |logit| = {errors[device]:.2e}")
        return errors


if __name__ == "__main__":
    main()
