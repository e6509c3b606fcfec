"""The router: owns Task aggregates, walks workflow graphs, emits node dispatches."""

ENGINE_VERSION = "0.1.0"
