"""Transfer learning: pretrained weights, fine-tuning modes and the linear probe (see pretrained.py).

Sits above models/ and engine/ and below tasks/: a task's setup loads weights and hands the Trainer what
it needs (a TransferSchedule callback, the head's parameter names, whether DDP sees unused parameters).
"""

from cnnkit.transfer.linear_probe import DEFAULT_PROBE_L2, ProbeFit, fit_linear_probe, head_features
from cnnkit.transfer.pretrained import (FINETUNE_MODES, HEAD_INITS, PretrainedReport, TransferSchedule,
                                        adapt_state_dict, backbone_blocks, backbone_name, classifier_module,
                                        head_parameter_names, load_matching, load_pretrained_state,
                                        pretrained_preprocessing)

__all__ = ["DEFAULT_PROBE_L2", "FINETUNE_MODES", "HEAD_INITS", "PretrainedReport", "ProbeFit", "TransferSchedule",
           "adapt_state_dict", "backbone_blocks", "backbone_name", "classifier_module", "fit_linear_probe",
           "head_features", "head_parameter_names", "load_matching", "load_pretrained_state",
           "pretrained_preprocessing"]
