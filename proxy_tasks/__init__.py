"""Proxy tasks: the datasets and task configs a candidate trains on, and its reduced-fidelity training
(`trial.run_trial`), which measures its accuracy and cost."""
