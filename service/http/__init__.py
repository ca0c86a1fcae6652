"""The HTTP side: the FastAPI app, its routers (``api/``), the response models, the report
and the dashboard. It reads and writes through ``service.store``."""
