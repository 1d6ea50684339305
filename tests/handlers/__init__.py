"""Handler services the end-to-end and acceptance tests run under uvicorn."""
