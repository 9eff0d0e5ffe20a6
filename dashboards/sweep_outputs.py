"""The figures and report a sweep draws, handed to ``tuning.sweep.run_sweep`` by the entry point.

Tuning sits below dashboards and never imports it; ``ray_jobs/tune_ssl.py`` passes
``SWEEP_OUTPUTS`` so that every trial logs its figures (``dashboards.trial_figures``) and the
sweep its report (``dashboards.report``).
"""

from dashboards.report import publish_report
from dashboards.trial_figures import checkpoint_figures
from tuning.sweep import SweepOutputs

SWEEP_OUTPUTS = SweepOutputs(trial_figures=checkpoint_figures, report=publish_report)

__all__ = ["SWEEP_OUTPUTS"]
