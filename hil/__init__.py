"""Single-snapshot phase retrieval with hardware in the loop.

Layers, bottom to top (a module imports only from its own layer or the ones below; a test checks it):

* ``hil.common``     strict configs, provenance, phase metrics
* ``hil.data``       phase objects and image sources
* ``hil.physics``    the forward model: optics (CDP operator), SLM, camera, registration, the system config
* ``hil.solvers``    classical phase retrieval on a physics operator
* ``hil.learning``   decoders, coded systems, distillation, training, model bundles
* ``drivers``        devices and their simulated twins (top-level package)
* ``hil.bench``      the bench from a config: safe state, capture, frame log, reconstruction
* ``calibration``    bench calibration procedures and fine-tuning (top-level package)
* ``hil.benchmarks`` the benchmarks behind the figures in the README and docs
* ``hil.cli``        the ``hil`` command
"""
