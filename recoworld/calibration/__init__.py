"""Calibration: fit the parametric user to a real log (`recoworld calibrate`).

    world = calibrate(CalibrationConfig(data=DataConfig(path="ml-100k")))
    save_calibration(world, "runs/calibrated")
    world = load_calibration("runs/calibrated")  # .world, .catalog, .profiles

One concept per module: `fit_choice` (the choice logit and conformity), `fit_sessions`
(sessions, return gaps, churn), `moments` (simulated moments, Nelder-Mead), `calibrated`
(the pipeline and its files).
"""

from recoworld.calibration.calibrated import (
    CalibratedWorld,
    CalibrationConfig,
    calibrate,
    load_calibration,
    save_calibration,
)

__all__ = ["CalibratedWorld", "CalibrationConfig", "calibrate", "load_calibration", "save_calibration"]
