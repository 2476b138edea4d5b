"""Local mode: emulator process, resource setup and the `make run` orchestrator. Not shipped to Lambda."""
