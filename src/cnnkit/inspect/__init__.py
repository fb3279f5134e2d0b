"""Look inside models: per-layer summary (output shapes, parameters, MACs, receptive fields), Grad-CAM,
activation maximization and the run report.

    from cnnkit.inspect import summary, write_report
    print(summary(model, input_size=(1, 28, 28)).table())
    write_report("runs/RUN")   # runs/RUN/report.html
"""

from cnnkit.inspect.gradcam import gradcam
from cnnkit.inspect.maximize import maximize
from cnnkit.inspect.receptive_field import ReceptiveField, ReceptiveFieldTracker
from cnnkit.inspect.report import write_report
from cnnkit.inspect.summary import (LayerRow, ModelSummary, SummaryTotals, build_model, count_macs, model_cost,
                                    parse_input_size, summarize_model, summary)

__all__ = ["LayerRow", "ModelSummary", "ReceptiveField", "ReceptiveFieldTracker", "SummaryTotals", "build_model",
           "count_macs", "gradcam", "maximize", "model_cost", "parse_input_size", "summarize_model", "summary",
           "write_report"]
