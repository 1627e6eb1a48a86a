"""Pipeline stages: one module per DVC stage, each with a pure function and a `main`."""
