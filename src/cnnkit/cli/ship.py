"""`cnnkit export` and `cnnkit serve`: a trained run as a deployable file, or behind HTTP."""

from __future__ import annotations

import argparse

from cnnkit.errors import CnnkitError


def add_export(commands) -> None:
    examples = """\
what is written:
  the model (fp32; input: float32 (B, C, H, W) normalized with the run's mean/std; output: logits), with the
  checkpoint's record (task, class names, preprocessing, config) embedded as metadata: ONNX metadata_props
  "cnnkit", or the extra file cnnkit.json inside TorchScript and .pt2 archives; and FILE.json beside it, a
  readable copy plus the parity numbers and the checkpoint's SHA-256.

checks (the export fails, and nothing is written, if one does not pass):
  onnx.checker with shape inference (ONNX); parity: the exported model and PyTorch on the same inputs at
  batch 1 and 4 agree within --tolerance (max abs difference of the logits, default 1e-4).

formats:
  onnx          torch.onnx.export(dynamo=True); runs in ONNX Runtime, OpenVINO, TensorRT ...
  torch-export  torch.export (.pt2); load with torch.export.load(FILE).module()
  torchscript   torch.jit.trace (.torchscript.pt); deprecated by PyTorch, kept for C++ libtorch users

examples:
  cnnkit export RUN_DIR                                  # RUN_DIR/export/best.onnx, batch fixed to 1
  cnnkit export RUN_DIR --format onnx --dynamic-batch --out model.onnx
  cnnkit export RUN_DIR --format torch-export            # RUN_DIR/export/best.pt2
  cnnkit predict model.onnx shoe.png --backend openvino  # run the exported file
"""
    parser = commands.add_parser(
        "export", help="write a trained run as ONNX, TorchScript or torch.export, checked against PyTorch",
        description="Export the best (or last) checkpoint of a run for deployment, with its class names and\n"
                    "preprocessing inside the file, and check that it computes what PyTorch computes.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--format", choices=("onnx", "torchscript", "torch-export"), default="onnx",
                        help="default onnx")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="accept any batch size (default: the batch dimension is fixed to 1)")
    parser.add_argument("--out", metavar="FILE", help="where to write (default RUN_DIR/export/best.onnx, "
                        "best.torchscript.pt or best.pt2)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="parity: largest max abs difference of the "
                        "logits allowed (default 1e-4)")
    parser.add_argument("--choose-backend", action="store_true",
                        help="classifiers: also measure which CPU path `--backend auto` should take for this run "
                        "(OpenVINO fp32/bf16, ONNX Runtime: top-1 agreement with PyTorch on the run's validation "
                        "images and ms/image; bf16 only at >= 99.5%% agreement) and record it (a minute or two)")


def run_export(args) -> int:
    from cnnkit.export import export_run

    result = export_run(args.run_dir, args.format, out=args.out, dynamic_batch=args.dynamic_batch,
                        checkpoint=args.checkpoint, tolerance=args.tolerance)
    print(result.summary())
    if args.choose_backend:
        from cnnkit.export.decide import choose_backend_in_child, describe

        decision = choose_backend_in_child(args.run_dir, args.checkpoint)
        if decision is not None:
            print(describe(decision))
    return 0


def add_serve(commands) -> None:
    examples = """\
endpoints:
  GET  /          a web page: upload an image, see the top classes and the Grad-CAM overlay
  POST /predict   multipart form, image in the field "file"; ?top_k=5&explain=true -> JSON
  GET  /healthz   the model, the queue and the limits, as JSON
embedding runs (--task embed): POST /embed (field "file") -> the embedding; POST /verify (fields "first" and
  "second") -> score, threshold, same; /predict answers as /embed; GET / lists the routes
refusals (JSON {"error", "status", "detail"}, never a traceback):
  413 body over --max-body-mib (read from Content-Length, before the body) or image over --max-pixels
  (read from the image header, before decoding); 411 no Content-Length; 415 not an image or an
  unsupported format; 422 a corrupt image (or a file of a supported format that cannot be read) or a malformed request; 503 all workers busy and --queue full;
  504 no answer within --timeout seconds; 400 both Content-Length and Transfer-Encoding, or (bound to
  loopback) a Host header that is not this machine's (DNS rebinding); 408 a body slower than --read-timeout
  (a client whose headers are slower is disconnected)

exported files: .onnx needs nothing; .pt2 and .torchscript.pt files are code (loading one runs what its
author wrote) and are refused unless --trust-code is given, which prints the file's SHA-256

examples:
  cnnkit serve RUN_DIR                          # http://127.0.0.1:8000/
  curl -F file=@shoe.png 'http://127.0.0.1:8000/predict?top_k=3'
  cnnkit serve RUN_DIR --port 9000 --backend onnxruntime --workers 2
"""
    parser = commands.add_parser(
        "serve", help="serve a trained run over HTTP, with a web page",
        description="Serve a classification or embedding run over HTTP (FastAPI + uvicorn) until Ctrl-C. Decoding and\n"
                    "inference run on worker threads, off the event loop. Binds to loopback by default: the\n"
                    "server has no authentication.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (or checkpoint, or exported .onnx file; "
                        ".pt2 / .torchscript.pt with --trust-code)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                        help="inference engine, as for `cnnkit predict` (default auto); Grad-CAM always uses PyTorch")
    parser.add_argument("--max-body-mib", type=float, default=10.0, metavar="MIB", help="largest upload (default 10)")
    parser.add_argument("--max-pixels", type=int, default=50_000_000, metavar="N",
                        help="largest width x height (default 50,000,000)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per request (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--queue", type=int, default=8, metavar="N",
                        help="requests that may wait for a worker (default 8); more get 503")
    parser.add_argument("--max-decoded-pixels", type=int, default=4096 * 4096, metavar="N",
                        help="largest width x height of a non-JPEG upload, decoded at full size (default 16,777,216)")
    parser.add_argument("--read-timeout", type=float, default=10.0, metavar="S",
                        help="seconds a client may take to send its headers, and its body (default 10)")
    parser.add_argument("--trust-code", action="store_true", help="allow an exported .pt2 or .torchscript.pt file: "
                        "loading one runs code its author wrote (its SHA-256 is printed)")
    parser.add_argument("--docs", action="store_true", help="serve FastAPI's /docs page (it loads scripts from a CDN; "
                        "off by default)")


def run_serve(args) -> int:
    from cnnkit.serve import ServeLimits, serve

    if not 0 < args.port < 65536:
        raise CnnkitError(f"--port must be 1-65535, got {args.port}")
    limits = ServeLimits(max_body_bytes=int(args.max_body_mib * 2**20), max_pixels=args.max_pixels,
                         timeout_s=args.timeout, workers=args.workers, queue_size=args.queue,
                         max_decoded_pixels=args.max_decoded_pixels, read_timeout_s=args.read_timeout)
    serve(args.run_dir, host=args.host, port=args.port, backend=args.backend, limits=limits,
          trust_code=args.trust_code, docs=args.docs)
    return 0
