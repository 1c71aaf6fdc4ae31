"""`demohub`: one command line for every app.

    demohub serve [--port 7860] [--app APP ...] [--add-model classification=DIR] [--mcp]
    demohub predict classification --image PATH [--model M] [--backend torch|onnx] [--top-k K]
    demohub predict classification --image DIR|GLOB|PATH... [--batch-size 8] > answers.jsonl
    demohub predict generative --seed S --n N [--label L] --out PNG [--model M] [--backend B]
    demohub predict adversarial --image PATH --attack pgd --eps E [--target LABEL] [--transfer-model M]
    demohub explain classification --image PATH --out PNG [--method saliency|smoothgrad|integrated-gradients|gradcam|
        occlusion] [--label L] [--window PX --stride PX] [--model M] [--backend torch|onnx]
    demohub explain classification --method class-visualisation --label 7 --out PNG [--model M]
    demohub export APP [--model M] [--quantize]
    demohub finetune APP --data DIR --out DIR [...]        (APP's finetune.py --help lists the rest)
    demohub bench APP [--model M] [--repeats N] [--cold-start] [--throughput DIR] [--variants V ...]
    demohub bench APP --size real|tiny [--arch NAME] [--batch-sizes 1 8] [--markdown]
    demohub bench APP --load [--clients 1 8 32] [--requests 64] [--model M] [--load-backend B] [--markdown]
    demohub bench classification --size real --arch resnet-50 --arch vit-b16 --explain occlusion --repeats 3
    demohub data digits --out DIR
    demohub spaces build --out DIR [--space NAME ...] [--namespace USER_OR_ORG]
    demohub spaces push --namespace USER_OR_ORG [--space NAME ...] [--private] [--dry-run]
    demohub data synth --out DIR --n N --seed S [--text-only] [--max-repeats R] [--digits D]
                       [--where-questions]

Results are printed as JSON (one line per file when `--image` names several, with a progress
bar on stderr; exit status 1 if any failed). A bad input or setting exits with status 1 and one line on
stderr; so does any other failure (set DEMOHUB_DEBUG=1 to see its traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from shared import apps
from shared.errors import ModelUnavailable, UserError


def _load(args):
    """The app's spec and the model `--model` names, loaded."""
    spec = apps.get(args.app)
    return spec, spec.models.load(spec.models.resolve(args.model).name)


def _predict(args) -> dict | None:
    """One input: its JSON. Several images (files, a folder, a glob): one JSON line each, in batches."""
    from shared.serving import many

    spec = apps.get(args.app)
    if getattr(args, "image", None) is None:
        return spec.cli_predict(args)
    files, several = many.image_files(args.image)
    if not several:
        return spec.cli_predict(argparse.Namespace(**{**vars(args), "image": str(files[0])}))
    failed = many.predict_files(spec, args, files)
    if failed:
        raise UserError(f"Failed: {failed} of {len(files)} (their lines say why).")
    return None


def _explain(args) -> dict:
    """Where the model looks: the heat map written to --out, the method, label, score and deletion areas printed."""
    from pathlib import Path

    spec = apps.get(args.app)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file; got {args.out}.")
    result = spec.explain(args.image, model=spec.models.resolve(args.model).name, backend=args.backend,
                          method=args.method, label=args.label, window=args.window, stride=args.stride)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.images["heatmap"].save(out)
    return {"out": str(out), **result.to_json()}


def _export(args) -> dict:
    from shared import bench
    from shared.inference import export

    spec, loaded = _load(args)
    form = spec.onnx(loaded)
    report = export.export_model(loaded, form)
    result = report.as_json()
    if args.quantize:
        if not form.generates:
            result["quantized"] = bench.int8_report(loaded, form, report, spec.held_out)
            result["bf16"] = bench.bf16_report(loaded, form, report, spec.held_out)
        elif spec.held_out is not None:
            result["quantized"] = bench.int8_generation_report(loaded, form, report, spec.held_out)
        else:
            raise UserError(f"--quantize is not offered for {args.app} yet: it has no held-out check of its "
                            "generation graphs in int8.")
    return result


def _bench(args) -> dict:
    from shared import bench

    if args.load:
        return _bench_load(args)
    if args.size:
        return _bench_architectures(args)
    if getattr(args, "explain", None):
        raise UserError("--explain times the Hub architectures' random-weight copies: add --size real (or tiny).")
    spec, loaded = _load(args)
    if args.throughput:
        return _throughput(spec, args)
    result = bench.bench(loaded, spec.onnx(loaded), batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
                         warmup=args.warmup, variants=tuple(args.variants))
    if args.cold_start:
        result |= bench.cold_start(spec.name, spec.cold_start_request())
    return result


def _bench_load(args) -> dict:
    """`bench APP --load`: the app served twice (batching off and on), 1, 8 and 32 clients."""
    from shared import bench

    spec = apps.get(args.app)
    model = args.model
    if args.size:  # a random copy of one Hub architecture, served from its folder
        from shared.models import architectures

        if len(args.arch or []) != 1:
            raise UserError(f"--load --size takes one --arch: {', '.join(architectures.of_app(spec.name))}.")
        model = str(architectures.build(args.arch[0], args.size))
    request = {**spec.example, **({"model": spec.models.resolve(model).name} if model else {}),
               **({"backend": args.load_backend} if args.load_backend else {})}
    local = (f"{spec.name}={model}",) if model and os.path.isdir(model) else ()
    result = bench.load(spec.name, request, clients=tuple(args.clients), requests_per_level=args.requests,
                        extra_models=local)
    if args.markdown:
        print(bench.load_table(result), file=sys.stderr, flush=True)
    return result


def _throughput(spec, args) -> dict:
    """Images per second over a folder through `demohub predict`'s own path, at each batch size."""
    from shared.serving import many

    files, _ = many.image_files([args.throughput])
    predict_args = build_parser().parse_args(["predict", spec.name, "--image", args.throughput,
                                              *(["--model", args.model] if args.model else [])])
    return many.throughput(spec, predict_args, files, tuple(args.batch_sizes))


def _bench_architectures(args) -> dict:
    """`bench APP --size real|tiny`: every Hub architecture the app serves, as a random-weight copy."""
    from shared import bench
    from shared.models import architectures, registry

    spec = apps.get(args.app)
    names = args.arch or architectures.of_app(args.app)
    unknown = [n for n in names if n not in architectures.of_app(args.app)]
    if unknown or not names:
        raise UserError(f"{args.app} has no architecture {', '.join(unknown) or ''} to bench; choose from: "
                        f"{', '.join(architectures.of_app(args.app)) or 'none'}.")
    results = {}
    for name in names:
        folder = architectures.build(name, args.size)
        entry = registry.add_local(args.app, folder, **architectures.FACTS.get(name, {}))
        if getattr(args, "explain", None):
            results[name] = bench.explain_time(spec.explain, entry.name, spec.example["image"], repeats=args.repeats,
                                               method=args.explain)
            continue
        loaded = spec.models.load(entry.name)
        result = bench.bench(loaded, spec.onnx(loaded), batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
                             warmup=args.warmup, variants=tuple(args.variants))
        results[name] = {"copies": architectures.ARCHITECTURES[name][1], **result}
        if args.markdown and "variants" in result:  # a single-graph model's table (generation has its own rows)
            print(bench.table(result), file=sys.stderr, flush=True)
    return {"size": args.size, "weights": "random (timing only)", "architectures": results}


def _finetune(args) -> dict:
    return apps.get(args.app).finetune(args.finetune_args)


def _serve(args) -> None:
    from shared.serving import server

    unknown = [name for name in args.app or () if name not in apps.specs()]
    if unknown:
        raise UserError(f"--app: unknown app {unknown[0]!r}; the apps are {', '.join(apps.specs())}.")
    server.serve(tuple(args.app or apps.specs()), host=args.host, port=args.port, extra_models=args.add_model,
                 mcp_server=args.mcp)


def _data(args) -> dict:
    from shared.data import digits, scenes
    from shared.inputs.checks import whole_number

    if args.dataset == "digits":
        return {"written": str(digits.write_imagefolder(args.out))}
    n, seed = whole_number("--n", args.n, 1, 1_000_000), whole_number("--seed", args.seed, 0, 2**32 - 1)
    max_repeats = whole_number("--max-repeats", args.max_repeats, 1, 1_000_000)
    digits = None if args.digits is None else whole_number("--digits", args.digits, 1, scenes.MAX_OBJECTS)
    return scenes.write_datasets(args.out, n, seed, text_only=args.text_only, max_repeats=max_repeats, digits=digits,
                                 where_questions=args.where_questions)


def _spaces(args) -> dict:
    from shared.serving import spaces

    if args.action == "build":
        if not args.out:
            raise UserError("spaces build needs --out DIR, the folder the Spaces are written under.")
        return spaces.build(args.space, args.out, args.namespace)
    if not args.namespace:
        raise UserError("spaces push needs --namespace, the Hub user or organisation that owns the Spaces.")
    return spaces.push(args.namespace, args.space, private=args.private, dry_run=args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    from shared import bench

    parser = argparse.ArgumentParser(prog="demohub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="Serve every app in one Gradio hub.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--app", action="append", help="Serve only this app (repeatable; default: all).")
    serve.add_argument("--add-model", action="append", default=[], metavar="APP=DIR",
                       help="Offer a local model folder (e.g. a fine-tuning output) in APP's dropdown.")
    serve.add_argument("--mcp", action="store_true",
                       help="Also serve each app's main function as an MCP tool at /APP/gradio_api/mcp/.")
    serve.set_defaults(handler=_serve)

    spaces = commands.add_parser("spaces", help="Build or push every app as a Hugging Face Space.")
    spaces.add_argument("action", choices=["build", "push"])
    spaces.add_argument("--space", action="append", help="Only this Space of spaces.yaml (repeatable; default: all).")
    spaces.add_argument("--out", help="build: the folder the Spaces are written under, one folder each.")
    spaces.add_argument("--namespace", help="push: the Hub user or organisation (build: named in the Space's card).")
    spaces.add_argument("--private", action="store_true", help="push: create the Spaces private.")
    spaces.add_argument("--dry-run", action="store_true", help="push: list the files and the commit, upload nothing.")
    spaces.set_defaults(handler=_spaces)

    from shared.inference.backends import BACKENDS

    for verb, handler, helptext in [("predict", _predict, "Run an app on one input."),
                                    ("export", _export, "Export an app's model to ONNX, checked."),
                                    ("bench", _bench, "torch vs ONNX latency, same inputs, one run."),
                                    ("finetune", _finetune, "Fine-tune a model on your data.")]:
        per_app = commands.add_parser(verb, help=helptext).add_subparsers(dest="app", required=True)
        for app, spec in apps.specs().items():
            # finetune passes --help on to finetune.py's own parser
            sub = per_app.add_parser(app, add_help=verb != "finetune", help=spec.summary)
            sub.set_defaults(handler=handler)
            if verb == "predict":
                spec.cli_arguments(sub)
            elif verb == "finetune":
                sub.description = f"Takes the arguments of apps/{app}/finetune.py (see its --help)."
            else:
                sub.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
            if verb == "export":
                sub.add_argument("--quantize", action="store_true",
                                 help="Also measure int8 copies and bf16 (OpenVINO) on held-out data.")
            if verb == "bench":
                sub.add_argument("--repeats", type=int, default=30)
                sub.add_argument("--warmup", type=int, default=5)
                sub.add_argument("--size", choices=["real", "tiny"],
                                 help="Bench random-weight copies of the app's Hub architectures at this size "
                                      "(no download) instead of --model.")
                sub.add_argument("--arch", action="append", help="With --size: only this architecture (repeatable).")
                sub.add_argument("--variants", nargs="+", default=list(bench.VARIANTS),
                                 choices=bench.VARIANTS + bench.OPENVINO_VARIANTS,
                                 help="Columns beside torch eager (single-graph models); openvino and openvino_bf16 "
                                      "need the openvino extra.")
                sub.add_argument("--markdown", action="store_true",
                                 help="Also print each table as markdown rows on stderr.")
                sub.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
                sub.add_argument("--cold-start", action="store_true",
                                 help="Also time `demohub serve` to the first answer on the default model.")
                sub.add_argument("--load", action="store_true",
                                 help="Instead: requests/s and p50/p95 latency of the served app at --clients "
                                      "concurrent clients, batching off and on (two `demohub serve` side by side); "
                                      "with --size and one --arch, on that architecture's random copy.")
                sub.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
                sub.add_argument("--requests", type=int, default=64, help="--load: requests per level and server.")
                sub.add_argument("--load-backend", choices=BACKENDS, default=None,
                                 help="--load: the backend the requests ask for (default: the app's example's).")
                if spec.explain is not None:
                    sub.add_argument("--explain", choices=["occlusion"],
                                     help="With --size: instead, seconds for one whole explain request with its "
                                          "default settings on onnx (the map and its deletion curves).")
                sub.add_argument("--throughput", metavar="DIR",
                                 help="Instead: images per second over DIR's images through `demohub predict` "
                                      "(decode to answer), at each --batch-sizes, torch and onnx.")

    from shared.inference.attribution import CHOICES

    explain = commands.add_parser("explain", help="Where a classifier looks: a heat map and its sanity check.")
    per_app = explain.add_subparsers(dest="app", required=True)
    for app, spec in apps.specs().items():
        if spec.explain is None:
            continue
        sub = per_app.add_parser(app, help=spec.summary)
        sub.set_defaults(handler=_explain)
        sub.add_argument("--image", help="Image file (JPEG, PNG, WebP, GIF, BMP, TIFF); not for class-visualisation.")
        sub.add_argument("--out", required=True, help="PNG file for the heat map (over the image, with its scale), "
                                                      "or the class visualisation.")
        sub.add_argument("--method", choices=list(CHOICES), default="saliency")
        sub.add_argument("--label", help="The label to explain (default: the predicted one); class-visualisation: "
                                         "the label to draw.")
        sub.add_argument("--window", type=int, help="occlusion: the grey patch's side in px of the model's input "
                                                     "(default: a quarter of it).")
        sub.add_argument("--stride", type=int, help="occlusion: its step in px (default: an eighth of the input, "
                                                     "a quarter on inputs over 64 px).")
        sub.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
        sub.add_argument("--backend", choices=BACKENDS, default="torch")

    data = commands.add_parser("data", help="Write the datasets the embedded models learn from.")
    data.add_argument("dataset", choices=["digits", "synth"],
                      help="digits: scikit-learn's digits as an image folder; synth: synthetic scenes")
    data.add_argument("--out", required=True)
    data.add_argument("--n", type=int, default=1000, help="synth: how many scenes")
    data.add_argument("--seed", type=int, default=0, help="synth: scenes of another seed are held out")
    data.add_argument("--text-only", action="store_true", help="synth: write only the sentence pairs")
    data.add_argument("--max-repeats", type=int, default=1,
                      help="synth: write a sentence pair as often as it occurs, up to this many times")
    data.add_argument("--digits", type=int, help="synth: place this many digits in every scene (default: 1 to 4 "
                                                 "at random); two-digit scenes teach the captioner's relations")
    data.add_argument("--where-questions", action="store_true",
                      help='synth: also ask "where is the 3, seen from the 7?" (left/right/above/below)')
    data.set_defaults(handler=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("DEMOHUB_LOG", "WARNING"))
    parser = build_parser()
    args, passed_on = parser.parse_known_args(argv)
    if args.command == "finetune":
        args.finetune_args = passed_on  # finetune.py parses its own typed arguments
    elif passed_on:
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    try:
        result = args.handler(args)
    except (UserError, ModelUnavailable) as err:
        print(f"demohub: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("DEMOHUB_DEBUG"):
            raise
        print(f"demohub: unexpected {type(err).__name__}: {err} (DEMOHUB_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
