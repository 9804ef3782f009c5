"""The `edgesdk serve` and `edgesdk triton` subcommands: `add_parser(subparsers)` registers both.

Examples:
  edgesdk serve dist/all-minilm-l6-v2-onnxruntime-int8 --port 8080 --max-batch 32 --max-wait-ms 5
  edgesdk serve dist/all-minilm-l6-v2-onnxruntime-int8 --ray --replicas 2
  edgesdk triton dist/all-minilm-l6-v2-onnxruntime-int8 dist/all-minilm-l6-v2-intel-int8 --out model_repository
"""

from __future__ import annotations

import argparse

SERVE_EPILOG = """API (TEI and OpenAI style):
  POST /embed {"inputs": str|[str], "normalize": bool, "truncate": bool, "dimensions": int}  -> [[float]]
  POST /predict {"inputs": str|[str]}        (classifier bundles)  -> [{"label", "score"}], best first
  POST /v1/embeddings {"input": str|[str], "model": str, "encoding_format": "float"|"base64", "dimensions": int}
  GET  /health  /info  /metrics (Prometheus)  /v1/models
examples:
  edgesdk serve dist/all-minilm-l6-v2-onnxruntime-int8
  curl -s 127.0.0.1:8080/embed -H 'content-type: application/json' -d '{"inputs": ["hello world"]}'
  edgesdk serve dist/all-minilm-l6-v2-onnxruntime-int8 --ray --replicas 2            # local Ray cluster
  edgesdk serve dist/all-minilm-l6-v2-onnxruntime-int8 --ray --address ray://head:10001 --replicas 4"""

TRITON_EPILOG = """Writes, per bundle NAME: NAME_model (the artefact: onnxruntime_onnx, openvino, or tensorrt_plan
when the bundle holds a built engine), NAME_tokenize and NAME_pool (Python backend: tokenization, pooling), and NAME, an
ensemble that takes text (TYPE_STRING) and returns embeddings or class probabilities.
example:
  edgesdk triton dist/all-minilm-l6-v2-onnxruntime-int8 --out model_repository
  docker run --rm -p 8000:8000 -v $PWD/model_repository:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
      tritonserver --model-repository=/models"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a bundle over HTTP (TEI / OpenAI style), batching requests",
                              description="Serve one bundle over HTTP with dynamic batching across concurrent "
                                          "requests and Prometheus metrics. Needs pip install 'edgesdk[serve]'.",
                              epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--max-batch", type=int, default=32, help="texts per runner call (default 32; with --ray: "
                                                             "requests per batch)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5)")
    p.add_argument("--runner-batch", type=int, default=8, help="texts per runner call: a batch is sorted by length and "
                                                              "run in calls of this many (default 8)")
    p.add_argument("--threads", type=int, help="runtime threads per runner (default: the runtime's)")
    p.add_argument("--max-inputs", type=int, default=128, help="texts per request (default 128)")
    p.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024, help="request body limit (default 2 MiB)")
    p.add_argument("--auto-truncate", action="store_true", help="truncate texts over the max length instead of "
                                                                "refusing them (TEI's flag)")
    p.add_argument("--batching", choices=["auto", "padded", "by-length"], default="auto",
                   help="auto (default): pad within a batch only if padding does not change vectors on this bundle")
    r = p.add_argument_group("Ray Serve scale-out")
    r.add_argument("--ray", action="store_true", help="serve with Ray Serve: one runner per replica")
    r.add_argument("--replicas", type=int, default=1, help="replicas (default 1)")
    r.add_argument("--address", help="Ray cluster address (ray://host:10001 or auto); default: start a local one")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    p.set_defaults(func=cmd_serve)

    t = subparsers.add_parser("triton", help="write a Triton Inference Server model repository from bundles",
                              description="Write a Triton model repository: per bundle the artefact with dynamic "
                                          "batching and instance groups, Python-backend tokenization and pooling, "
                                          "and an ensemble so clients send text.",
                              epilog=TRITON_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("bundles", nargs="+", metavar="BUNDLE")
    t.add_argument("--out", required=True, help="model repository folder (created; existing models are replaced)")
    t.add_argument("--max-batch", type=int, default=32, help="max_batch_size (default 32)")
    t.add_argument("--max-queue-delay-us", type=int, default=5000, help="dynamic batching delay (default 5000)")
    t.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    t.set_defaults(func=cmd_triton)


def cmd_serve(args) -> int:
    from .app import ServeOptions

    options = ServeOptions(host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                           runner_batch=args.runner_batch, threads=args.threads, max_inputs=args.max_inputs,
                           max_body_bytes=args.max_body_bytes,
                           auto_truncate=args.auto_truncate, batching=args.batching).check()
    if args.ray:
        # absolute: import-linter resolves `from .ray` / `from .triton` to edgesdk itself (ray and triton are
        # also top-level packages) and would report a false export-side import
        from edgesdk.serve.ray import RayOptions, serve_ray

        return serve_ray(args.bundle, options, RayOptions(args.replicas, args.address, args.num_cpus))
    from .app import serve

    return serve(args.bundle, options)


def cmd_triton(args) -> int:
    from edgesdk.serve.triton import TritonOptions, write_repository

    written = write_repository(args.bundles, args.out, TritonOptions(args.max_batch, args.max_queue_delay_us,
                                                                    args.instances))
    for name, folders in written.items():
        print(f"{name}: {', '.join(folders)}")
    return 0
