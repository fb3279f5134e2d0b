"""Look inside models: per-layer summary (output shapes, parameters, MACs, receptive fields).

    from cnnkit.inspect import summary
    print(summary(model, input_size=(1, 28, 28)).table())
"""

from cnnkit.inspect.receptive_field import ReceptiveField, ReceptiveFieldTracker
from cnnkit.inspect.summary import (LayerRow, ModelSummary, SummaryTotals, build_model, count_macs, model_cost,
                                    parse_input_size, summarize_model, summary)

__all__ = ["LayerRow", "ModelSummary", "ReceptiveField", "ReceptiveFieldTracker", "SummaryTotals", "build_model",
           "count_macs", "model_cost", "parse_input_size", "summarize_model", "summary"]
