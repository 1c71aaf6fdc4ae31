"""OpenVINO against onnxruntime's CPU provider on the same exported ONNX graphs (README: OpenVINO).

    demohub bench classification --size real --arch resnet-50 --arch vit-b16 --variants onnx   # exports them
    pip install openvino
    OMP_NUM_THREADS=1 python docs/perf/openvino_vs_onnxruntime.py [THREADS]

Real-size random-weight ResNet-50 and ViT-B/16 (the `--size real` exports in $DEMOHUB_CACHE/onnx),
the example photos resized to 224 px, the same thread count for both runtimes, outputs compared
first, then the two interleaved, medians of 7 calls at batch 1 and 3 at batch 8.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import openvino as ov
from PIL import Image

from shared.data.examples import PHOTOS
from shared.inference.sessions import CACHE_DIR

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
photos = [np.asarray(Image.open(p).convert("RGB").resize((224, 224)), dtype=np.float32) / 127.5 - 1
          for p in PHOTOS.values()]
core = ov.Core()
core.set_property("CPU", {"INFERENCE_NUM_THREADS": THREADS})
results = {}
for name in ("resnet-50", "vit-b16"):
    path = next((CACHE_DIR / "onnx").glob(f"real-{name}-*/model.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    compiled = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    compile_s = time.perf_counter() - started
    request = compiled.create_infer_request()
    for batch, repeats in ((1, 7), (8, 3)):
        x = np.stack([photos[i % len(photos)] for i in range(batch)]).transpose(0, 3, 1, 2).copy()
        calls = {"onnxruntime": lambda x=x, s=session: s.run(None, {s.get_inputs()[0].name: x})[0],
                 "openvino": lambda x=x, r=request, c=compiled: r.infer({0: x})[c.output(0)]}
        reference, got = calls["onnxruntime"](), calls["openvino"]()
        times = {runtime: [] for runtime in calls}
        for _ in range(repeats):
            for runtime, call in calls.items():
                started = time.perf_counter()
                call()
                times[runtime].append((time.perf_counter() - started) * 1e3)
        median = {runtime: round(float(np.median(t)), 1) for runtime, t in times.items()}
        row = {"batch": batch, "median_ms": median,
               "openvino_speedup": round(median["onnxruntime"] / median["openvino"], 2),
               "max_abs_diff": float(np.abs(reference - got).max()),
               "argmax_same": float((reference.argmax(-1) == got.argmax(-1)).mean()),
               "openvino_compile_s": round(compile_s, 1), "load": open("/proc/loadavg").read().split()[0]}
        results.setdefault(name, []).append(row)
        print(name, row, flush=True)
print(json.dumps({"threads": THREADS, "versions": {"onnxruntime": ort.__version__, "openvino": ov.__version__},
                  "results": results}, indent=2))
