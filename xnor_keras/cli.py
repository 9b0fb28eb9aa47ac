"""Command-line entry points (thin argparse layers over the library).

``xnor-to-tflite`` (also ``python convert/to_tflite.py``): Keras model or zoo name -> verified
``.tflite`` with LCE binary ops, and a conversion report.

Exit codes: 0 success; 1 verification failed (nothing written); 2 usage or input error (nothing
written).

``xnor-train`` (also ``python zoo/train.py``): train a zoo model (or ``module:builder``) on a
TFDS dataset with ``model.fit``; exit 2 on usage or input errors.

``xnor-weights``: ``summary FILE_OR_MODEL`` prints what a packed binary weights file (or a model)
holds; ``export MODEL -o FILE.xbw`` writes a model's packed weights (see
:mod:`xnor_keras.binary_weights`). Exit 2 on usage or input errors, with nothing written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["to_tflite_main", "train_main", "weights_main"]

_EPILOG = """\
examples:
  # XNOR AlexNet from the zoo with trained weights, for a Raspberry Pi 4 (64-bit OS, aarch64):
  python convert/to_tflite.py XNORAlexNet --weights runs/xnor_alexnet/weights.h5 -o xnor_alexnet.tflite

  # a saved Keras model, with the report as JSON and a host latency measurement:
  python convert/to_tflite.py my_model.keras -o my_model.tflite --report-json report.json --benchmark

  # the fastest file for a Raspberry Pi 4 (int8 first/last layers, runtime settings inside):
  python convert/to_tflite.py XNORResNet18 --weights fashion_mnist --device pi4 \
      --calibration-data calib.npy -o r18_pi4.tflite

  # a CIFAR-sized ResNet for Android (arm64-v8a; run it with LCE's AAR / op resolver):
  python convert/to_tflite.py XNORResNet18 --input-shape 32,32,3 --classes 10 -o resnet.tflite

The .tflite contains LCE custom ops (LceBconv2d, LceQuantize, ...): run it with LCE's
lce_benchmark_model or a TFLite interpreter that registers LCE's ops (see README, "Deploying").
"""


class _InputError(Exception):
    """Bad input: reported in one line, exit code 2."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH,CHANNELS as three positive integers (e.g. 224,224,3), got {text!r}"
        )
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="to_tflite.py",
        description="Convert an XNOR-Net / BWN Keras model to a TFLite flatbuffer with Larq Compute "
        "Engine binary ops, verify it on LCE's interpreter against Keras, and report what each "
        "layer became.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a zoo model name (e.g. XNORAlexNet; see --list-models) or the path of a saved "
        "model (.keras, .h5 or a SavedModel directory)",
    )
    parser.add_argument("-o", "--output", type=Path, help="where to write the .tflite")
    zoo = parser.add_argument_group("zoo models")
    zoo.add_argument("--weights", type=Path, help="weights file to load into the zoo model, or a registered name (e.g. fashion_mnist)")
    zoo.add_argument("--input-shape", type=_parse_shape, help="HEIGHT,WIDTH,CHANNELS (default 224,224,3)")
    zoo.add_argument("--classes", type=_positive_int, help="number of classes (default 1000)")
    zoo.add_argument(
        "--no-float-twin",
        action="store_true",
        help="do not convert the full-precision twin to report the size ratio",
    )
    conv = parser.add_argument_group("conversion")
    conv.add_argument("--target", choices=("arm", "xcore"), default="arm", help="LCE target (default arm)")
    conv.add_argument(
        "--device", choices=("pi4", "pi5", "arm64"),
        help="pick the options measured fastest on this core (int8 first/last layers, the BWN "
             "form) and record the runtime settings (XNNPACK, threads, kernel) in the file for "
             "xnor_lite.Interpreter; prints what it chose and why. Needs --calibration-data",
    )
    conv.add_argument(
        "--exact", action="store_true",
        help="with --device: no int8 activations, so the file computes what the Keras model computes "
             "(an XNOR net's int8 first layer moves ~5%% of its decisions), with the runtime settings "
             "measured best for that form; no --calibration-data needed",
    )
    conv.add_argument(
        "--int8-float-layers", action="store_true",
        help="make the full-precision Conv2D/Dense layers (first, last, shortcuts) int8; "
             "needs --calibration-data; verification then compares with the int8 reference",
    )
    conv.add_argument(
        "--bwn-weights", choices=("int8", "int8_dynamic", "int8_full", "float"), default="int8",
        help="how Binary-Weight-Network layers are stored and computed (default int8: exact int8 "
             "weights, float32 arithmetic, 4x smaller, outputs unchanged; int8_dynamic: int8 "
             "arithmetic on inputs rounded on the fly; int8_full: int8 activations too, the "
             "fastest, needs --calibration-data; float: float32 weights)",
    )
    conv.add_argument(
        "--calibration-data", type=Path,
        help=".npy file of typical preprocessed inputs for the int8 ranges "
             "(--int8-float-layers, --bwn-weights int8_full)",
    )
    check = parser.add_argument_group("verification (on by default)")
    check.add_argument("--no-verify", action="store_true", help="skip the comparison with Keras")
    check.add_argument("--verify-data", type=Path, help=".npy file of inputs to verify on (default: random)")
    check.add_argument("--verify-samples", type=_positive_int, default=8, help="random inputs (default 8)")
    check.add_argument(
        "--verify-on", nargs="+", choices=("host", "arm64"), default=["host"], metavar="TARGET",
        help="where the flatbuffer runs for verification: host (LCE's x86-64 interpreter, "
             "default) and/or arm64 (LCE's aarch64 kernels on the emulated arm64 target; "
             "needs qemu-user, debootstrap, g++-aarch64-linux-gnu, libgemmlowp-dev)",
    )
    check.add_argument("--rtol", type=float, help="max |diff| / max |output| (default 1e-3). int8 files "
                       "(--int8-float-layers, --bwn-weights int8_full or int8_dynamic) are judged by "
                       "top-1 agreement alone, on the calibration inputs unless --verify-data")
    check.add_argument("--min-agreement", type=float, help="top-1 agreement (default 0.99; 0.9 for int8 files)")
    out = parser.add_argument_group("reporting")
    out.add_argument("--report-json", type=Path, help="write the conversion report as JSON here")
    out.add_argument("--benchmark", action="store_true", help="measure host latency on LCE's interpreter")
    out.add_argument("--benchmark-runs", type=_positive_int, default=20, help="timed runs (default 20)")
    out.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--list-models", action="store_true", help="list the zoo models and exit")
    return parser


def _load_model(args):
    import tensorflow as tf

    from xnor_keras import zoo

    zoo_only = [f for f in ("weights", "input_shape", "classes") if getattr(args, f) is not None]
    if args.model in zoo.list_models():
        kwargs = {}
        if args.weights is not None:
            named = [entry.name for entry in zoo.list_weights(args.model)]
            if str(args.weights) not in named and not args.weights.exists():
                raise _InputError(
                    f"--weights: no such file: {args.weights}"
                    + (f" (registered names for {args.model}: {', '.join(named)})" if named else "")
                )
            kwargs["weights"] = str(args.weights)
        if args.input_shape is not None:
            kwargs["input_shape"] = args.input_shape
        if args.classes is not None:
            kwargs["classes"] = args.classes
        try:
            return zoo.get_model(args.model, **kwargs), args.model
        except ValueError as error:
            raise _InputError(str(error)) from None
        except (OSError, tf.errors.OpError) as error:
            raise _InputError(f"--weights: could not load {args.weights}: {_first_line(error)}") from None
    path = Path(args.model)
    if not path.exists():
        raise _InputError(
            f"MODEL {args.model!r} is neither a zoo model ({', '.join(zoo.list_models())}) nor an "
            "existing path"
        )
    if zoo_only:
        raise _InputError(
            f"--{zoo_only[0].replace('_', '-')} applies only to zoo models; {args.model!r} is a path"
        )
    if path.is_dir() and not (path / "saved_model.pb").exists():
        raise _InputError(f"{path} is a directory but not a SavedModel (no saved_model.pb inside)")
    try:
        model = tf.keras.models.load_model(path, compile=False)
    except Exception as error:  # h5py, zipfile, protobuf and Keras all raise their own types
        raise _InputError(f"could not load a Keras model from {path}: {_first_line(error)}") from None
    if not isinstance(model, tf.keras.Model):
        raise _InputError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model, None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _float_twin_name(name: str) -> str | None:
    from xnor_keras import zoo

    for prefix in ("XNOR", "BWN"):
        if name.startswith(prefix) and name[len(prefix):] in zoo.list_models():
            return name[len(prefix):]
    return None


def to_tflite_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xnor-to-tflite`` / ``convert/to_tflite.py``; returns the exit code."""
    parser = _parser()
    if argv is None:
        argv = sys.argv[1:]
    if "--list-models" in argv:
        from xnor_keras import zoo

        print("\n".join(zoo.list_models()))
        return 0
    args = parser.parse_args(argv)
    if args.output is None:
        parser.error("the following arguments are required: -o/--output")
    if args.output.suffix != ".tflite":
        parser.error(f"-o/--output: expected a path ending in .tflite, got {str(args.output)!r}")
    if args.output.exists() and args.output.is_dir():
        parser.error(f"-o/--output: {args.output} is a directory")
    if args.exact and not args.device:
        parser.error("--exact: only with --device (a conversion without --device is exact already)")
    int8_activations = args.int8_float_layers or args.bwn_weights == "int8_full"
    if args.exact and (int8_activations or args.bwn_weights == "int8_dynamic"):
        given = "--int8-float-layers" if args.int8_float_layers else f"--bwn-weights {args.bwn_weights}"
        parser.error(f"--exact: int8 activations ({given}) are not exact; leave them out")
    if args.calibration_data is not None and not int8_activations and not args.device:
        parser.error("--calibration-data: only used with --int8-float-layers or --bwn-weights int8_full")
    if args.int8_float_layers and args.calibration_data is None:
        parser.error("--int8-float-layers: expected --calibration-data FILE.npy (typical inputs for the int8 ranges)")
    if args.bwn_weights == "int8_full" and args.calibration_data is None:
        parser.error("--bwn-weights int8_full: expected --calibration-data FILE.npy (typical inputs for the int8 ranges)")
    # int8 rounding moves outputs by a few int8 steps, and rarely flips a binary sign after it.
    # int8_dynamic rounds each BWN layer's input on the fly: measured 4e-4 relative on the BWN
    # zoo models at 224x224, 1e-2 on small random BWN stacks, up to 0.2 where binary
    # activations follow a BWN layer (a rounded input flips a sign near its threshold).
    if args.rtol is not None and not 0 < args.rtol:
        parser.error(f"--rtol: expected a positive number, got {args.rtol}")
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        parser.error(f"--min-agreement: expected a number in [0, 1], got {args.min_agreement}")

    import numpy as np

    from xnor_keras import convert as xc
    from xnor_keras import zoo
    from xnor_keras._compat import native_log_filter, quiet_tensorflow_logs

    quiet_tensorflow_logs(datasets=False)

    try:
        verify_x = None
        if args.verify_data is not None:
            try:
                verify_x = np.load(args.verify_data)
            except Exception as error:
                raise _InputError(f"--verify-data: could not read {args.verify_data}: {_first_line(error)}") from None
        calibration = None
        if args.calibration_data is not None:
            try:
                calibration = np.load(args.calibration_data)
            except Exception as error:
                raise _InputError(
                    f"--calibration-data: could not read {args.calibration_data}: {_first_line(error)}"
                ) from None
        _log(f"[1/4] loading {args.model} ...")
        start = time.perf_counter()
        model, zoo_name = _load_model(args)
        shape = tuple(model.inputs[0].shape[1:])
        _log(f"      {model.name}: input {shape}, {model.count_params():,d} parameters "
             f"({time.perf_counter() - start:.1f} s)")
        if verify_x is not None and tuple(verify_x.shape[1:]) != shape:
            raise _InputError(
                f"--verify-data: expected arrays of shape (N, {', '.join(map(str, shape))}), "
                f"got {verify_x.shape}"
            )
        if verify_x is None and calibration is not None:
            # Real inputs judge an int8 file better than random ones (a model of raw images
            # never sees standard-normal noise); the calibration set is the real data we have.
            verify_x = calibration
            _log(f"      verifying on the {len(calibration)} calibration inputs (real data; "
                 "--verify-data to choose others)")
        device_plan = None
        if args.device:
            from xnor_keras.convert import devices

            device_plan = devices.plan(model, args.device, exact=args.exact)
            _log(device_plan.describe())
            if device_plan.needs_calibration and calibration is None:
                made_int8 = device_plan.convert_options.get("int8_float_layers")
                which = (", ".join(made_int8) if isinstance(made_int8, list)
                         else "the first and last layers" if made_int8 else "the BWN layers")
                raise _InputError(
                    f"--device {args.device}: its choice makes {which} int8 (the fastest form "
                    "measured on every ARM core); expected --calibration-data FILE.npy "
                    "(a few dozen typical, preprocessed inputs for the int8 ranges)")
            args.int8_float_layers = args.int8_float_layers or device_plan.convert_options.get("int8_float_layers", False)
            args.bwn_weights = device_plan.convert_options.get("bwn_weights", args.bwn_weights)
            int8_activations = args.int8_float_layers or args.bwn_weights == "int8_full"
        lossy = int8_activations or args.bwn_weights == "int8_dynamic"
        if args.rtol is None:
            args.rtol = 0.1 if lossy else 1e-3
        if args.min_agreement is None:
            args.min_agreement = 0.9 if lossy else 0.99
        _log(f"[2/4] converting with Larq Compute Engine (target {args.target}"
             f"{', int8 full-precision layers' if args.int8_float_layers else ''}, "
             f"BWN weights {args.bwn_weights}) ...")
        options = {"bwn_weights": args.bwn_weights}
        if int8_activations:
            options.update(int8_float_layers=args.int8_float_layers, calibration_data=calibration)
        try:
            flatbuffer, seconds = xc.timed_convert(model, target=args.target, **options)
            reference = model
            if int8_activations:
                reference = xc.int8_reference(
                    model, calibration, int8_float_layers=args.int8_float_layers,
                    bwn_weights=args.bwn_weights,
                )
        except xc.ConversionError as error:
            message = str(error).replace("`calibration_data`", "--calibration-data").replace(
                "`bwn_weights='int8_full'`", "--bwn-weights int8_full"
            )
            raise _InputError(message) from None
        if device_plan is not None:
            from xnor_keras.convert.flatbuffer import with_metadata
            from xnor_lite.interpreter import RUNTIME_METADATA

            flatbuffer = with_metadata(flatbuffer, RUNTIME_METADATA, device_plan.metadata())
            _log(f"      runtime settings recorded in the file ({RUNTIME_METADATA}): "
                 f"{device_plan.metadata().decode()}")
        _log(f"      {len(flatbuffer) / 2**20:.2f} MiB in {seconds:.1f} s")

        twin_bytes = None
        twin = _float_twin_name(zoo_name) if zoo_name and not args.no_float_twin else None
        if twin:
            _log(f"      converting the float twin {twin} for the size comparison ...")
            kwargs = {k: v for k, v in (("input_shape", args.input_shape), ("classes", args.classes)) if v}
            twin_bytes = len(xc.convert(zoo.get_model(twin, **kwargs)))

        verification = None
        if args.no_verify:
            _log("[3/4] verification skipped (--no-verify)")
        else:
            n = len(verify_x) if verify_x is not None else args.verify_samples
            for where in dict.fromkeys(args.verify_on):
                runtime = ("LCE's interpreter" if where == "host"
                           else "LCE's aarch64 kernels on the emulated arm64 target")
                _log(f"[3/4] verifying on {runtime} against Keras ({n} inputs) ...")
                try:
                    with native_log_filter():  # LCE's interpreter announces its delegate at any log level
                        result = xc.verify(
                            reference, flatbuffer, verify_x, samples=args.verify_samples,
                            rtol=args.rtol, min_agreement=args.min_agreement, target=where,
                            lossy=lossy,
                        )
                except _target_errors() as error:
                    raise _InputError(f"--verify-on {where}: {_first_line(error)}") from None
                _log(f"      {where}: top-1 agreement {result.top1_agreement:.1%}, max relative "
                     f"difference {result.max_rel_diff:.2e}: {'passed' if result.passed else 'FAILED'}")
                if verification is None or verification.passed:
                    verification = result
        report = xc.conversion_report(
            model, flatbuffer, target=args.target, conversion_seconds=seconds,
            verification=verification, float_twin_flatbuffer_bytes=twin_bytes,
        )
        payload = report.to_dict()
        if device_plan is not None:
            payload["device"] = {"name": device_plan.device.name, "kind": device_plan.kind,
                                 "convert_options": device_plan.convert_options,
                                 "runtime": device_plan.runtime, "reasons": device_plan.reasons}
        if args.benchmark:
            _log(f"      timing {args.benchmark_runs} runs at batch 1 ...")
            sample = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            with native_log_filter():
                payload["host_latency"] = xc.measure_latency(
                    flatbuffer, sample, runs=args.benchmark_runs, num_threads=args.threads
                )

        print(report.format_table())
        if "host_latency" in payload:
            lat = payload["host_latency"]
            print(f"host latency (LCE interpreter, {lat['threads']} thread(s), batch 1): median "
                  f"{lat['median_ms']:.2f} ms (min {lat['min_ms']:.2f}, max {lat['max_ms']:.2f}) over {lat['runs']} runs")
        if verification is not None and not verification.passed:
            _log(f"error: verification failed, {args.output} not written. {verification.explanation} "
                 "Use --verify-data with real inputs, or --no-verify to write it anyway.")
            return 1
        _log(f"[4/4] writing {args.output}")
        xc.save_tflite(flatbuffer, args.output)
        if args.report_json is not None:
            _write_json(payload, args.report_json)
        return 0
    except _InputError as error:
        _log(f"error: {error}")
        return 2


def _target_errors() -> tuple[type[Exception], ...]:
    """Errors that mean a verification target can't be set up here (not a failed comparison)."""
    from xnor_lite import BuildError, LibraryError
    from xnor_lite.emulate import EmulationError

    return (BuildError, EmulationError, LibraryError)


def _write_json(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


_TRAIN_EPILOG = """\
examples:
  # the paper's XNOR AlexNet recipe on ImageNet (TFDS manual download of the ILSVRC2012 tars):
  python zoo/train.py --model XNORAlexNet --dataset imagenet2012 --data-dir ~/tensorflow_datasets \\
      --manual-dir ~/ilsvrc2012 --output runs/xnor_alexnet --recipe alexnet-paper

  # CIFAR-10 with a CIFAR-sized XNOR ResNet-18 on all local GPUs, mixed precision:
  python zoo/train.py --model XNORResNet18 --dataset cifar10 --output runs/r18_cifar \\
      --epochs 100 --batch-size 256 --strategy mirrored --mixed-precision

  # continue a run that was interrupted (same epoch, optimizer state):
  python zoo/train.py --model XNORResNet18 --dataset cifar10 --output runs/r18_cifar --resume

  # Fashion-MNIST offline (Debian's dataset-fashion-mnist, or --source-dir with the four IDX
  # files), then 3 more epochs on the finished run:
  python zoo/train.py --model XNORResNet18 --dataset fashion_mnist --image-size 32 \\
      --output runs/r18_fashion --epochs 2
  python zoo/train.py --model XNORResNet18 --dataset fashion_mnist --output runs/r18_fashion \\
      --resume --epochs 5

multi-worker: start the same command on every machine with --strategy multiworker and a TF_CONFIG
describing the cluster, e.g. TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
"task": {"type": "worker", "index": 0}}'. --batch-size is the global batch (split over replicas).
"""


def _train_parser() -> argparse.ArgumentParser:
    from xnor_keras.training import RECIPES, STRATEGIES

    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train an XNOR-Net / BWN / float model on a tensorflow-datasets dataset with "
        "model.fit: checkpoints every epoch, exact --resume, TensorBoard and CSV logs, a final "
        "evaluation and a plot of the training curves in the output directory.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="zoo model (see --list-models) or package.module:builder "
                        "(required, unless --resume finds it in the run's config.json)")
    parser.add_argument("--dataset", help="TFDS name: imagenet2012, cifar10, mnist, fashion_mnist, ... "
                        "(required, unless --resume finds it in the run's config.json)")
    parser.add_argument("--output", required=True, type=Path, help="run directory")
    parser.add_argument("--data-dir", type=Path, help="TFDS data directory (default: TFDS's)")
    parser.add_argument("--manual-dir", type=Path, help="folder with manually downloaded archives (ImageNet)")
    parser.add_argument(
        "--source-dir", type=Path,
        help="folder with the four IDX files of an MNIST-format dataset (mnist, fashion_mnist, kmnist): "
        "prepared into the TFDS data directory once, with no network (fashion_mnist default: Debian's "
        "dataset-fashion-mnist in /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--no-download", action="store_true", help="never download; use prepared data only")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="preset schedule (default: small-images on small-image datasets such as Fashion-MNIST and "
                        "CIFAR, else the paper's for the family)")
    parser.add_argument("--epochs", type=_positive_int)
    parser.add_argument("--batch-size", type=_positive_int, help="global batch size")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), help="default: the recipe's (small-images: adam), else adam for XNOR, sgd otherwise")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--image-size", type=_positive_int, help="input side in pixels (default: 224 ImageNet-style, else native)")
    parser.add_argument("--stem", choices=("imagenet", "cifar"), help="ResNet-18 stem (default imagenet; cifar: 3x3/1 conv, no max-pool, for 32x32 inputs)")
    parser.add_argument(
        "--pad-values", type=float, choices=(0.0, 1.0),
        help="XNOR models: padding of binarized inputs, 0 (paper, default) or 1 (every binary convolution "
        "stays binary on LCE, also where a map is smaller than the kernel)")
    parser.add_argument(
        "--teacher", type=Path,
        help="distil from this trained model (a run directory, e.g. the float twin's, or a .keras "
        "file): loss (1-w)*CE + w*T^2*KL(teacher || student); see xnor_keras.distillation")
    parser.add_argument("--teacher-weight", type=float, help="w in [0, 1] (default 1: the teacher's distribution only)")
    parser.add_argument("--teacher-temperature", type=float, help="T > 0 (default 1)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", help="default: validation, else the held-out end of train "
                        "(--holdout), else test")
    parser.add_argument("--holdout", type=int, help="images held out from the end of train for "
                        "validation when the dataset has no validation split (default 5000 when train "
                        "has at least 50,000 images, else 0); the test split is then evaluated once, "
                        "with the best validation epoch's weights")
    parser.add_argument("--steps-per-epoch", type=_positive_int)
    parser.add_argument("--validation-steps", type=_positive_int)
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in --output: an interrupted one where it stopped, a finished one up to a "
        "larger --epochs; options not given again are the run's own",
    )
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 compute")
    parser.add_argument("--strategy", choices=STRATEGIES, default="default")
    parser.add_argument("--cpu-replicas", type=_positive_int, help="split the CPU into N logical devices (testing)")
    parser.add_argument("--tpu", help="TPU name or address for --strategy tpu")
    parser.add_argument("--seed", type=int, help="seeds the weights, the data order and the augmentation (default 0)")
    parser.add_argument("--augment", choices=("crop", "none"),
                        help="training augmentation: random crops (and flips where the dataset allows) or none "
                        "(shuffle only); default: the recipe's (none for small-images)")
    parser.add_argument("--schedule", choices=("steps", "cosine"),
                        help="learning-rate schedule: the recipe's staircase per epoch (steps), or a half "
                        "cosine from the rate to 0 over the run, per step (default: the recipe's)")
    parser.add_argument("--stop-after-minutes", type=float, metavar="MINUTES",
                        help="stop at the end of the last epoch that fits in this time, keeping the state to "
                        "--resume from; resumed chunks end with the weights one uninterrupted run would have")
    return parser


def _default_recipe(model: str, dataset: str | None = None) -> str:
    """The paper's recipe for the zoo's families on ImageNet-style data; on small images
    (Fashion-MNIST, CIFAR, ...) the best recipe measured there (``small-images``); ``quick`` for
    other models."""
    family = "alexnet" if model.endswith("AlexNet") else "resnet18" if model.endswith("ResNet18") else None
    if family is None:
        return "quick"
    if dataset is not None:
        from xnor_keras import data

        try:
            if not data.dataset_info(dataset).imagenet_style:
                return "small-images"
        except ValueError:
            pass  # an unknown dataset is reported where the data is loaded
    return f"{family}-paper"


def _check_model_name(name: str) -> None:
    from xnor_keras import zoo

    if ":" in name:
        import importlib

        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise _InputError(f"--model: cannot import {module_name!r}: {error}") from None
        if not callable(getattr(module, attr, None)):
            raise _InputError(f"--model: {module_name!r} has no builder named {attr!r}")
    elif name not in zoo.list_models():
        raise _InputError(
            f"--model: unknown model {name!r}. Known models: {', '.join(zoo.list_models())} "
            "(or give package.module:builder)"
        )


# Options a resumed run takes from its config.json unless given again (argparse default None).
_RESUMABLE = ("recipe", "epochs", "batch_size", "optimizer", "learning_rate", "weight_decay", "image_size",
              "data_dir", "manual_dir", "source_dir", "eval_split", "holdout", "steps_per_epoch", "validation_steps",
              "teacher", "teacher_weight", "teacher_temperature", "seed", "augment", "schedule")


def _model_options(args: argparse.Namespace) -> dict:
    """The zoo builder's keyword arguments that the command line sets."""
    options = {}
    if args.stem:
        options["stem"] = args.stem
    if args.pad_values is not None:
        options["pad_values"] = args.pad_values
    return options


def _fill_from_saved_run(args) -> None:
    path = args.output / "config.json"
    if not path.exists():
        return  # training.train says there is nothing to resume
    from xnor_keras.training import RECIPES

    saved = json.loads(path.read_text())
    for name in _RESUMABLE:
        if name == "recipe" and saved.get(name) not in RECIPES:
            continue
        if name in ("teacher_weight", "teacher_temperature") and not saved.get("teacher"):
            continue  # a run without a teacher saves the defaults
        if getattr(args, name) is None and saved.get(name) is not None:
            value = saved[name]
            setattr(args, name, Path(value) if name.endswith("_dir") else value)
    for name, value in (saved.get("model_options") or {}).items():
        if name in ("stem", "pad_values") and getattr(args, name) is None:
            setattr(args, name, value)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xnor-train`` / ``zoo/train.py``; returns the exit code."""
    if argv is None:
        argv = sys.argv[1:]
    if "--list-models" in argv:
        from xnor_keras import zoo

        print("\n".join(zoo.list_models()))
        return 0
    parser = _train_parser()
    args = parser.parse_args(argv)
    saved_config = args.output / "config.json"
    if args.resume and saved_config.exists():  # a resumed run names its model and dataset
        try:
            saved = json.loads(saved_config.read_text())
        except (OSError, ValueError) as error:
            parser.error(f"--resume: could not read {saved_config}: {error}")
        for name in ("model", "dataset"):
            if getattr(args, name) is None and isinstance(saved.get(name), str):
                setattr(args, name, saved[name])
    missing = [f"--{name}" for name in ("model", "dataset") if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}"
                     + (f" (no {saved_config} to resume from)" if args.resume else ""))
    from xnor_keras import training
    from xnor_keras._compat import quiet_tensorflow_logs

    quiet_tensorflow_logs()

    try:
        _check_model_name(args.model)
        if args.resume:
            _fill_from_saved_run(args)
        for flag in ("data_dir", "manual_dir", "source_dir"):
            path = getattr(args, flag)
            if path is not None and not path.is_dir():
                raise _InputError(f"--{flag.replace('_', '-')}: no such directory: {path}")
        if args.stem and ":" not in args.model and not args.model.endswith("ResNet18"):
            raise _InputError(f"--stem: only the zoo's ResNet models have a stem option, not {args.model}")
        if args.stop_after_minutes is not None and not args.stop_after_minutes > 0:
            raise _InputError(f"--stop-after-minutes: expected a positive number of minutes, got {args.stop_after_minutes:g}")
        if args.teacher is None and (args.teacher_weight is not None or args.teacher_temperature is not None):
            raise _InputError("--teacher-weight / --teacher-temperature: they need --teacher")
        if args.teacher_weight is not None and not 0.0 <= args.teacher_weight <= 1.0:
            raise _InputError(f"--teacher-weight: expected a value in [0, 1], got {args.teacher_weight}")
        if args.teacher_temperature is not None and not args.teacher_temperature > 0.0:
            raise _InputError(f"--teacher-temperature: expected a value above 0, got {args.teacher_temperature}")
        if args.pad_values is not None and ":" not in args.model and not args.model.startswith("XNOR"):
            raise _InputError(f"--pad-values: only the zoo's XNOR models binarize their inputs, not {args.model}")
        recipe = training.RECIPES[args.recipe or _default_recipe(args.model, args.dataset)]
        optimizer = args.optimizer or recipe.optimizer or ("adam" if args.model.startswith("XNOR") else "sgd")
        learning_rate = args.learning_rate
        if learning_rate is None:
            learning_rate = recipe.learning_rate_for(optimizer)
        config = training.TrainConfig(
            model=args.model,
            dataset=args.dataset,
            output=str(args.output),
            epochs=args.epochs or recipe.epochs,
            batch_size=args.batch_size or recipe.batch_size,
            optimizer=optimizer,
            learning_rate=learning_rate,
            milestones=[list(m) for m in recipe.milestones_for(args.epochs or recipe.epochs)],
            weight_decay=recipe.weight_decay if args.weight_decay is None else args.weight_decay,
            momentum=args.momentum,
            data_dir=None if args.data_dir is None else str(args.data_dir),
            manual_dir=None if args.manual_dir is None else str(args.manual_dir),
            source_dir=None if args.source_dir is None else str(args.source_dir),
            train_split=args.train_split,
            eval_split=args.eval_split,
            holdout=args.holdout,
            image_size=args.image_size,
            steps_per_epoch=args.steps_per_epoch,
            validation_steps=args.validation_steps,
            mixed_precision=args.mixed_precision,
            seed=0 if args.seed is None else args.seed,
            augment=recipe.augment if args.augment is None else {"crop": True, "none": False, True: True,
                                                                 False: False}[args.augment],
            schedule=args.schedule or recipe.schedule,
            recipe=recipe.name,
            download=not args.no_download,
            model_options=_model_options(args),
            teacher=None if args.teacher is None else str(args.teacher),
            teacher_weight=1.0 if args.teacher_weight is None else args.teacher_weight,
            teacher_temperature=1.0 if args.teacher_temperature is None else args.teacher_temperature,
        )
        try:
            strategy = training.make_strategy(args.strategy, cpu_replicas=args.cpu_replicas, tpu=args.tpu)
            training.replica_batch_size(config.batch_size, strategy)
        except ValueError as error:
            raise _InputError(str(error)) from None
        changed = [
            f"{label} {mine}" for label, mine, recipes in (
                ("epochs", config.epochs, recipe.epochs), ("batch", config.batch_size, recipe.batch_size),
                ("schedule", config.schedule, recipe.schedule),
                ("random crops", "on" if config.augment else "off", "on" if recipe.augment else "off"),
            ) if mine != recipes
        ]
        _log(f"recipe {recipe.name}: {recipe.description}"
             + (f" (here: {', '.join(changed)})" if changed else ""))
        try:
            training.train(config, strategy, resume=args.resume, stop_after_minutes=args.stop_after_minutes,
                           log=_log)
        except ValueError as error:
            raise _InputError(str(error)) from None
        return 0
    except _InputError as error:
        _log(f"error: {error}")
        return 2


_WEIGHTS_EPILOG = """\
examples:
  # pack a trained model's weights (sign bits + alpha; other weights float32):
  xnor-weights export runs/r18/model.keras -o r18.xbw

  # a zoo model with weights saved by model.save_weights, other weights as float16:
  xnor-weights export XNORResNet18 --weights runs/r18/weights.h5 --input-shape 28,28,1 \\
      --classes 10 --float16 -o r18.xbw

  # what a packed file holds: per layer shape, bytes, alpha statistics, fraction of +1:
  xnor-weights summary r18.xbw

Load a packed file with xnor_keras.load_binary_weights(model, "r18.xbw"), or pass it as a zoo
builder's weights= argument.
"""


def _weights_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnor-weights",
        description="Packed binary weights: 1 bit per binarized weight plus alpha per output "
        "channel, every other weight as float32 (or float16).",
        epilog=_WEIGHTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    summary = commands.add_parser("summary", help="describe a packed weights file or a model")
    summary.add_argument(
        "source", metavar="FILE_OR_MODEL",
        help="a packed weights file, a saved model (.keras, .h5, SavedModel) or a zoo model name",
    )
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    export = commands.add_parser("export", help="write a model's packed weights")
    export.add_argument(
        "model", metavar="MODEL",
        help="a saved model (.keras, .h5, SavedModel) or a zoo model name (with --weights)",
    )
    export.add_argument("-o", "--output", type=Path, required=True, help="the packed file to write (.xbw)")
    export.add_argument("--float16", action="store_true", help="store the non-binarized weights as float16")
    export.add_argument(
        "--int8-kernels", metavar="all|LAYER[,LAYER...]",
        help="store these full-precision kernels (e.g. a ResNet's 1x1 shortcut convolutions, or all) "
             "as int8 with a scale per output channel: 4x smaller, lossy; check the accuracy",
    )
    for sub in (summary, export):
        group = sub.add_argument_group("zoo models")
        group.add_argument("--weights", type=Path, help="weights file to load into the zoo model")
        group.add_argument("--input-shape", type=_parse_shape, help="HEIGHT,WIDTH,CHANNELS (default 224,224,3)")
        group.add_argument("--classes", type=_positive_int, help="number of classes (default 1000)")
    return parser


def weights_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xnor-weights``; returns the exit code."""
    args = _weights_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "export" and args.output.is_dir():
        _log(f"error: -o/--output: {args.output} is a directory")
        return 2
    from xnor_keras import binary_weights as xbw

    try:
        if args.command == "summary":
            source = Path(args.source)
            zoo_flags = any(getattr(args, f) is not None for f in ("weights", "input_shape", "classes"))
            if source.is_file() and xbw.is_binary_weights_file(source) and not zoo_flags:
                file = xbw.read_binary_weights(source)
                summary, sha256 = xbw.binary_weights_summary(file), hashlib.sha256(source.read_bytes()).hexdigest()
            else:
                args.model = args.source
                summary, sha256 = xbw.binary_weights_summary(_load_model(args)[0]), None
            if args.json:
                print(json.dumps({**summary.to_dict(), "sha256": sha256}, indent=2))
            else:
                print(summary.format_table())
                if sha256:
                    print(f"sha256: {sha256}")
            return 0
        model, _ = _load_model(args)
        float_dtype = "float16" if args.float16 else "float32"
        int8_kernels = args.int8_kernels
        if int8_kernels is not None and int8_kernels != "all":
            int8_kernels = [name.strip() for name in int8_kernels.split(",") if name.strip()]
        try:
            path = xbw.save_binary_weights(model, args.output, float_dtype=float_dtype,
                                           int8_kernels=int8_kernels)
        except ValueError as error:
            raise _InputError(str(error)) from None
        summary = xbw.binary_weights_summary(path)
        _log(
            f"wrote {path}: {summary.file_bytes:,d} bytes ({summary.file_bytes / 1e6:.2f} MB; "
            f"{summary.binary_weight_count:,d} of {summary.weight_count:,d} weights binarized"
            + (f", {sum(w.size for w in summary.weights if w.encoding == 'int8_per_channel'):,d} int8)"
               if int8_kernels else ")")
        )
        return 0
    except xbw.BinaryWeightsError as error:
        _log(f"error: {error}")
        return 2
    except _InputError as error:
        _log(f"error: {error}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(to_tflite_main())
