"""Publish a training run's weights inside the package, as a named set for ``weights=``.

For each run directory (written by ``zoo/train.py``): pack the trained model's weights
(:func:`xnor_keras.save_binary_weights`; the best validation epoch's weights,
``checkpoints/best.weights.h5``, where the run held out a validation split; float32 unless
``--float16`` / ``--int8-kernels``), build the zoo model the way a user will
(``xnor_keras.zoo.XNORResNet18(weights=NAME)``: raw images in, resizing and normalisation as
layers), evaluate it on the dataset's whole test split fed raw images, check that it reproduces
the run's own model on the training pipeline's inputs, and record the entry (sha256, accuracy,
training options, preprocessing) in ``xnor_keras/zoo/weights/index.json``. Also measures what the
float16 option costs: size and test accuracy of the same weights with float16 for every weight
that is not binarized.

Usage (a maintainer's step, after bench/accuracy.py has trained the runs):
    python zoo/publish_weights.py runs/accuracy/full/XNORResNet18 runs/accuracy/full/BWNResNet18 \\
        --name fashion_mnist
    python zoo/publish_weights.py runs/accuracy/full/XNORResNet18 --name fashion_mnist \\
        --float16 --int8-kernels all        # the smallest file (lossy: its accuracy is measured)

Exit status 2 on input errors (not a run directory, a run without model.keras); nothing is
written then, and a failed check leaves index.json and the packed files as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TOLERANCE = 0.002
"""Largest accuracy difference allowed between the published model (raw images) and the run's model."""


def log(message: str) -> None:
    print(f"[publish] {message}", file=sys.stderr, flush=True)


def _accuracy(model, images, labels, batch_size: int = 500) -> float:
    import numpy as np

    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    return float(np.mean(probabilities.argmax(-1) == labels))


def _test_split(config: dict):
    """((raw uint8 images, labels), (pipeline-preprocessed images, labels)): the whole test split.

    The two are read separately (TFDS's and the pipeline's orders may differ); each pairs its
    images with its own labels.
    """
    import numpy as np
    import tensorflow_datasets as tfds

    from xnor_keras import data

    common = dict(data_dir=config.get("data_dir"), download=config.get("download", True))
    prepared = data.load_dataset(config["dataset"], "test", training=False, batch_size=1000,
                                 image_size=config.get("image_size"), **common)
    inputs, labels = zip(*prepared.as_numpy_iterator())
    raw = tfds.load(config["dataset"], split="test", as_supervised=True, batch_size=-1,
                    data_dir=config.get("data_dir"), download=False)
    raw_images, raw_labels = (np.asarray(t) for t in raw)
    return (raw_images, raw_labels), (np.concatenate(inputs), np.concatenate(labels))


def _default_description(config: dict, metrics: dict, input_shape, selected: str) -> str:
    """One line from the run's own record: what trained the weights and which epoch they are."""
    crops = {True: "random crops", False: "no random crops"}.get(config.get("augment"), "the recipe's augmentation")
    schedule = f"{config['schedule']} schedule" if config.get("schedule") else "the recipe's schedule"
    return (f"{config['epochs']} epochs at {input_shape[0]}x{input_shape[1]}, recipe {config.get('recipe')} "
            f"({config['optimizer']} lr {config['learning_rate']:g}, {schedule}, {crops}), batch "
            f"{config['batch_size']}; weights: {selected}; {metrics.get('train_seconds', 0) / 60:.0f} min of training")


def publish(run: Path, name: str, folder: Path, description: str | None, *, float16_rest: bool = False,
            int8_kernels=None) -> dict:
    import hashlib


    import xnor_keras
    from xnor_keras import data, training, zoo
    from xnor_keras.zoo import _weights

    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    model_name = config["model"]
    trained, selected = training.load_trained_model(run)
    (raw, raw_labels), (inputs, labels) = _test_split(config)
    run_accuracy = _accuracy(trained, inputs, labels)
    log(f"{model_name}: the run's model ({selected}) gives {run_accuracy:.2%} on {len(labels)} test images")

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{model_name}-{name}.xbw"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        packed = xnor_keras.save_binary_weights(trained, scratch / target.name,
                                                float_dtype="float16" if float16_rest else "float32",
                                                int8_kernels=int8_kernels)
        half = xnor_keras.save_binary_weights(trained, scratch / "float16.xbw", float_dtype="float16")
        bare = zoo.get_model(model_name, input_shape=inputs.shape[1:], classes=int(labels.max()) + 1,
                              **config.get("model_options", {}))
        xnor_keras.load_binary_weights(bare, half)
        float16 = {"bytes": half.stat().st_size, "accuracy": _accuracy(bare, inputs, labels)}
        # What the packed file itself gives on the pipeline's inputs: the run's model, or less
        # where the packing is lossy (int8 kernels, float16).
        xnor_keras.load_binary_weights(bare, packed)
        packed_accuracy = _accuracy(bare, inputs, labels)
        channels = int(inputs.shape[-1])
        mean, std = data.NORMALIZATION.get(
            config["dataset"],
            data.NORMALIZATION["imagenet2012"] if channels == 3 else ((0.5,) * channels, (0.5,) * channels))
        entry = zoo.PretrainedWeights(
            model=model_name, name=name, url=packed.as_uri(),
            sha256=hashlib.sha256(packed.read_bytes()).hexdigest(),
            classes=int(labels.max()) + 1, input_shape=tuple(int(v) for v in inputs.shape[1:]),
            dataset=config["dataset"], accuracy=0.0, options=config.get("model_options", {}),
            raw_input_shape=tuple(int(v) for v in raw.shape[1:]), mean=mean[:channels], std=std[:channels],
        )
        _weights.register_weights(entry, replace=True)
        with tempfile.TemporaryDirectory() as cache:
            os.environ[_weights.CACHE_ENV] = cache
            published = zoo.get_model(model_name, weights=name)
            accuracy = _accuracy(published, raw, raw_labels)
        log(f"{model_name}(weights={name!r}): {accuracy:.2%} on raw test images (the packed weights on the "
            f"pipeline's inputs: {packed_accuracy:.2%}); "
            f"{packed.stat().st_size / 1e6:.2f} MB packed (float16: {float16['bytes'] / 1e6:.2f} MB, "
            f"{float16['accuracy']:.2%})")
        if abs(accuracy - packed_accuracy) > TOLERANCE:
            raise RuntimeError(
                f"{model_name}: the published model gives {accuracy:.4f} on raw images, the same weights "
                f"{packed_accuracy:.4f} on the training pipeline's inputs; more than {TOLERANCE} apart, so "
                "nothing was published"
            )
        os.replace(packed, target)
    record = {
        "model": model_name, "name": name, "file": target.name, "sha256": entry.sha256,
        "classes": entry.classes, "input_shape": list(entry.input_shape), "dataset": entry.dataset,
        "accuracy": round(accuracy, 4),
        "description": description or _default_description(config, metrics, entry.input_shape, selected),
        "options": entry.options, "raw_input_shape": list(entry.raw_input_shape),
        "mean": list(entry.mean), "std": list(entry.std),
    }
    return {"record": record, "bytes": target.stat().st_size, "run_accuracy": run_accuracy,
            "packed_accuracy": packed_accuracy,
            "weights": selected, "packing": {"float_dtype": "float16" if float16_rest else "float32",
                                             "int8_kernels": int8_kernels},
            "float16": float16}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories (zoo/train.py --output)")
    parser.add_argument("--name", required=True, help="the name weights= will take, e.g. fashion_mnist")
    parser.add_argument("--description", help="one line for listings (default: from the run's config)")
    parser.add_argument("--folder", type=Path, default=ROOT / "xnor_keras" / "zoo" / "weights")
    parser.add_argument("--summary", type=Path, help="where the JSON summary goes (default: "
                        "bench/results/published_weights_NAME.json)")
    parser.add_argument("--float16", action="store_true", help="store the weights that are not binarized as float16")
    parser.add_argument("--int8-kernels", metavar="all|LAYER[,LAYER...]",
                        help="store these full-precision kernels as int8 per output channel (lossy; the "
                        "published accuracy is the packed file's)")
    args = parser.parse_args(argv)
    import xnor_keras  # noqa: F401  (imports TensorFlow quietly, with Keras 2 as tf.keras)
    from xnor_keras._compat import quiet_tensorflow_logs

    quiet_tensorflow_logs()
    for run in args.runs:
        for needed in ("config.json", "metrics.json", "model.keras"):
            if not (run / needed).exists():
                parser.error(f"runs: {run} holds no finished training run (no {needed})")

    int8_kernels = args.int8_kernels
    if int8_kernels is not None and int8_kernels != "all":
        int8_kernels = [layer.strip() for layer in int8_kernels.split(",") if layer.strip()]
    results = [publish(run, args.name, args.folder, args.description, float16_rest=args.float16,
                       int8_kernels=int8_kernels) for run in args.runs]
    index_path = args.folder / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else []
    new = {(r["record"]["model"], r["record"]["name"]): r["record"] for r in results}
    index = [e for e in index if (e["model"], e["name"]) not in new] + list(new.values())
    index.sort(key=lambda e: (e["model"], e["name"]))
    tmp = index_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, index_path)
    summary = args.summary or ROOT / "bench" / "results" / f"published_weights_{args.name}.json"
    summary.write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        print(f"{r['record']['model']}(weights={args.name!r}): accuracy {r['record']['accuracy']:.2%} "
              f"(run's model {r['run_accuracy']:.2%}), {r['bytes'] / 1e6:.2f} MB; float16 "
              f"{r['float16']['bytes'] / 1e6:.2f} MB at {r['float16']['accuracy']:.2%}")
    print(f"wrote {os.path.relpath(index_path, ROOT)} and {os.path.relpath(summary, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
