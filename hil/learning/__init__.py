"""Learned systems: decoders, coded (teacher/student) systems, distillation, training, bundles, evaluation."""
