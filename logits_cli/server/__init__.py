"""The reference server: a Starlette app over a Store (``create_app``), served by uvicorn
(``serve.run_server``). Submodules are imported where needed, so importing this package is cheap."""
