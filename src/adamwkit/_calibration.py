"""The calibrated rule's constants (``benchmarks/evidence/analyze.py --write``).

Do not edit by hand: rerun the analysis. ``tests/test_evidence.py`` refits them from the
cached studies and checks they match.
"""

MODEL = "sqrt(T), Wang & Aitchison's window middle"
COEF = {"const": 0.0}
FIXED = {"log_T": 0.5}
# 10% and 90% quantiles of log(tau*) - log(prediction) for families left out of the fit
BAND = (-0.693394817373752, 2.2194625599182185)
STUDIES = 54
FAMILIES = ["cancer-mlp", "charlm", "diabetes-mlp", "digits-cnn", "digits-mlp", "teacher-student"]
EPOCHS = (15.0, 600.0)
EXAMPLES = (88.0, 1638.0)
LOFO_WITHIN_2X = 0.4444
LOFO_RANGE_HOLDS = 0.7037

# The probe rule (adamwkit.tuning.probe): log tau_epoch* = sum of PROBE_COEF[t] * t over
# log_turn (the zero-decay run's turning epoch) and log_T, plus the constant; used when the
# curve turned before PROBE_TURNED of the epochs.
PROBE_MODEL = "c * turn"
PROBE_COEF = {"const": 0.5573717370171037, "log_turn": 1.0}
PROBE_BAND = (-0.44798563171767425, 0.5931314966724113)
PROBE_TURNED = 0.9
PROBE_STUDIES = 51
PROBE_LOFO_WITHIN_2X = 0.8333
PROBE_LOFO_RANGE_HOLDS = 0.8148
