"""Serving: `edgekit serve` (KServe v2 / Triton HTTP protocol) and the Triton model-repository writer.

Nothing heavy is imported here: fastapi, uvicorn and prometheus_client load when a server starts.
"""
