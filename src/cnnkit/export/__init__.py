"""Ship a trained run: export it with a parity check, and run it fast on a CPU.

    from cnnkit.export import export_run, load_predictor
    result = export_run("runs/RUN", "onnx", dynamic_batch=True)     # runs/RUN/export/best.onnx, checked
    print(result.summary())
    classifier = load_predictor("runs/RUN", backend="openvino")     # a Classifier on OpenVINO
    classifier.predict(["shoe.png"], top_k=3)

    formats.py    how ONNX, TorchScript and torch.export files are written, loaded and carry metadata
    parity.py     the check every export passes: same inputs, same logits within 1e-4
    exporter.py   export_run / export_model: load, write, check, compare, then move into place
    runtimes.py   ONNX Runtime and OpenVINO behind the nn.Module interface
    backends.py   load_predictor: --backend auto|torch|onnxruntime|openvino, with the ONNX cache; recorded_task
"""

from cnnkit.export.backends import AUTO_RUNTIMES, BACKENDS, cached_onnx, load_predictor, recorded_task
from cnnkit.export.errors import ExportError, ParityError
from cnnkit.export.exporter import ExportResult, export_model, export_run, read_metadata
from cnnkit.export.formats import FORMATS
from cnnkit.export.parity import DEFAULT_TOLERANCE, check_parity

__all__ = ["AUTO_RUNTIMES", "BACKENDS", "DEFAULT_TOLERANCE", "FORMATS", "ExportError", "ExportResult", "ParityError",
           "cached_onnx", "check_parity", "export_model", "export_run", "load_predictor", "read_metadata", "recorded_task"]
