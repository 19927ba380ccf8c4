"""Objectives for the training frameworks people already use, built on :class:`adamwkit.Trial`.

- :mod:`adamwkit.integrations.transformers`: :func:`trainer_objective`, a Hugging Face
  ``Trainer`` per trial (``pip install 'adamwkit[transformers]'``).
- :mod:`adamwkit.integrations.lightning`: :func:`lightning_objective`, a Lightning
  ``Trainer`` per trial (``pip install 'adamwkit[lightning]'``).

Each returns an objective for :func:`adamwkit.tune`; the framework is imported when a trial
runs, so importing this package needs neither.
"""
